"""The command line: `npgpt gradcheck | train | sample | bench | seq2seq | finetune`.

Each subcommand is a pair of functions here: one that declares its arguments, one that runs it
by calling the library. The library never imports this module.
"""

from __future__ import annotations

import argparse
import sys


def add_gradcheck(sub):
    p = sub.add_parser("gradcheck", help="check every layer's backward against the numerical gradient",
                       description="Check every layer's hand-written backward against central-difference "
                                   "numerical gradients in float64, for its input and every parameter.")
    p.add_argument("--seed", type=int, default=0, help="seed of the inputs and upstream gradients")
    p.add_argument("--layer", default=None, help="only the layers whose name contains this text")
    p.set_defaults(run=run_gradcheck)


def run_gradcheck(args) -> int:
    from . import gradcheck

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


COMMANDS = [add_gradcheck]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="npgpt", description="A GPT and a Transformer from scratch in NumPy.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
