"""The command line: `npgpt gradcheck | exercise | train | sample | trace | plot | bench | seq2seq | finetune`.

One file per command, each with add(sub), which declares its arguments, and the function that
runs it by calling the library (the training commands' flags are made from their settings
dataclasses: cli/flags.py). The library never imports this package.
"""

from __future__ import annotations

from . import bench, exercise, finetune, gradcheck, plot, sample, seq2seq, trace, train
from .parser import Parser, add_version, help_when_bare, run_command

# in the order --help lists them
COMMANDS = [gradcheck, exercise, train, sample, trace, plot, bench, seq2seq, finetune]


def build_parser() -> Parser:
    """The parser of `npgpt` (cli/parser.py: bare `npgpt` prints this help, --version, an unknown
    flag is reported by the command it was given to)."""
    parser = Parser(prog="npgpt", description="A GPT and a Transformer from scratch in NumPy.")
    add_version(parser)
    help_when_bare(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add(sub)
    return parser


def main(argv=None) -> int:
    return run_command(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
