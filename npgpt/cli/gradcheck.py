"""`npgpt gradcheck`: every layer's backward against the numerical gradient."""

from __future__ import annotations

import sys

from .. import gradcheck
from ..exercises.filecheck import run_file


def add(sub) -> None:
    p = sub.add_parser("gradcheck", help="check every layer's backward against the numerical gradient",
                       description="Check every layer's hand-written backward against central-difference "
                                   "numerical gradients in float64, for its input and every parameter.")
    p.add_argument("--seed", type=int, default=0, metavar="N",
                   help="seed of the inputs and upstream gradients (default: 0)")
    p.add_argument("--layer", default=None, metavar="TEXT",
                   help="only the layers whose name contains this text (default: every layer)")
    p.add_argument("--file", default=None, metavar="PATH",
                   help="check the layers of your own file instead: functions <name>_forward, "
                        "<name>_backward, <name>_inputs(rng), or Module subclasses with "
                        "example_inputs(rng); exit 0 all pass, 1 one fails, 2 the file cannot be "
                        "used (default: npgpt's own layers)")
    p.set_defaults(run=run)


def run(args) -> int:
    if args.file is not None:
        return run_file(args.file, seed=args.seed, layer=args.layer)
    rows = gradcheck.check_all(seed=args.seed)
    if args.layer:
        layers = list(dict.fromkeys(r["layer"] for r in rows))
        rows = [r for r in rows if args.layer.lower() in r["layer"].lower()]
        if not rows:
            print(f"npgpt gradcheck: error: --layer {args.layer!r} matches no layer: expected part of "
                  f"one of: {', '.join(layers)}", file=sys.stderr)
            return 2
    print(gradcheck.format_table(rows))
    print("\n" + gradcheck.summary_line(rows))
    return 0 if all(r["passed"] for r in rows) else 1
