"""The command line: `npgpt gradcheck | exercise | train | sample | bench | seq2seq | finetune`.

One file per command, each with add(sub), which declares its arguments, and the function that
runs it by calling the library (the training commands' flags are made from their settings
dataclasses: cli/flags.py). The library never imports this package.
"""

from __future__ import annotations

import argparse
import os
import sys

from . import bench, exercise, finetune, gradcheck, sample, seq2seq, train

COMMANDS = [gradcheck, exercise, train, sample, bench, seq2seq, finetune]    # in the order --help lists them


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="npgpt", description="A GPT and a Transformer from scratch in NumPy.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for command in COMMANDS:
        command.add(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        status = args.run(args)
        sys.stdout.flush()                  # here, so that a closed pipe is caught below
        return status
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:                 # `npgpt gradcheck | head`: the reader has gone
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    raise SystemExit(main())
