"""`npgpt plot RUN`: draw a run's loss curve and training health to a PNG (npgpt.trace.plot)."""

from __future__ import annotations

import sys

from ..trace.plot import PLOT_NAME, plot_run


def add(sub) -> None:
    p = sub.add_parser("plot", help="draw a run's loss and training health (matplotlib) to a PNG",
                       description="Draw the loss curve of a training run from its log.jsonl and, if "
                                   "it was trained with --health-every N, each layer's activation std, "
                                   "gradient norm and update-to-weight ratio. Needs matplotlib.")
    p.add_argument("run_dir", metavar="RUN", help="a run folder (--out of `npgpt train`), or its log.jsonl")
    p.add_argument("--out", default=None, metavar="FILE",
                   help=f"the PNG to write (default: RUN/{PLOT_NAME})")
    p.set_defaults(run=run)


def run(args) -> int:
    try:
        path = plot_run(args.run_dir, args.out)
    except ModuleNotFoundError as e:
        if e.name != "matplotlib" and not (e.name or "").startswith("matplotlib."):
            raise
        print("npgpt plot: matplotlib is not installed: pip install matplotlib", file=sys.stderr)
        return 2
    except (ValueError, OSError, KeyError) as e:
        print(f"npgpt plot: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0
