"""`npgpt gradcheck`: every layer's backward against the numerical gradient."""

from __future__ import annotations

import sys

from .. import gradcheck


def add(sub) -> None:
    p = sub.add_parser("gradcheck", help="check every layer's backward against the numerical gradient",
                       description="Check every layer's hand-written backward against central-difference "
                                   "numerical gradients in float64, for its input and every parameter.")
    p.add_argument("--seed", type=int, default=0, metavar="N",
                   help="seed of the inputs and upstream gradients (default: 0)")
    p.add_argument("--layer", default=None, metavar="TEXT",
                   help="only the layers whose name contains this text (default: every layer)")
    p.set_defaults(run=run)


def run(args) -> int:
    rows = gradcheck.check_all(seed=args.seed)
    if args.layer:
        rows = [r for r in rows if args.layer.lower() in r["layer"].lower()]
        if not rows:
            print(f"--layer {args.layer!r} matches no layer", file=sys.stderr)
            return 2
    print(gradcheck.format_table(rows))
    failed = [r for r in rows if not r["passed"]]
    layers = len({r["layer"] for r in rows})
    print(f"\n{len(rows) - len(failed)}/{len(rows)} tensors of {layers} layers within tolerance "
          f"(relative error <= {max(r['tolerance'] for r in rows):.0e}, float64 central differences)")
    return 1 if failed else 0
