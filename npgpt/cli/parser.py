"""The command line's own conventions, in one place: the parser class every command's parser is
made of, and what `main` does around a command.

    npgpt                      the help (a request for orientation, not an error: exit 0)
    npgpt seq2seq              the help of seq2seq, likewise
    npgpt --version            npgpt 0.1.0
    npgpt train --max-itres 5  the usage of `npgpt train` and one line:
                               npgpt train: error: unrecognized arguments: --max-itres 5
                               (did you mean --max-iters?)
    NPGPT_BACKEND=Numba npgpt train
                               npgpt train: error: NPGPT_BACKEND='Numba' is unknown ... (exit 2);
                               --help still works: the backend is resolved only to run a command
    mpiexec -n 4 npgpt train --max-iters abc
                               one usage and one error, from rank 0 (every rank exits 2)
    a warning (BPE: an unreachable vocabulary size)
                               npgpt train: warning: ... (one line, no file and line number)
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import os
import sys
import warnings

import npgpt

from .. import dist, kernels


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose subcommands report their own mistakes: an unknown flag is an
    error of the (sub)command it was given to, shown with that command's usage, with the
    nearest known flag suggested. Subparsers are made of the same class (argparse's default)."""

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}{self._suggest(extras)}")
        if getattr(namespace, "command_prog", None) is None:     # the innermost command sets it first
            namespace.command_prog = self.prog
        return namespace, extras

    def _print_message(self, message, file=None):
        """Under mpiexec every rank parses the same arguments and meets the same mistake (or
        --help): rank 0 alone prints it, and every rank exits with the same status."""
        if dist.speaks():
            super()._print_message(message, file)

    def _suggest(self, extras) -> str:
        known = [o for a in self._actions for o in a.option_strings if o.startswith("--")]
        flag = next((e.split("=", 1)[0] for e in extras if e.startswith("--")), None)
        close = difflib.get_close_matches(flag, known, n=1, cutoff=0.8) if flag else []
        return f" (did you mean {close[0]}?)" if close else ""


def add_version(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action="version", version=f"%(prog)s {npgpt.__version__}")


def help_when_bare(parser: argparse.ArgumentParser) -> None:
    """Running the command without a subcommand prints its help (exit 0), whatever NPGPT_BACKEND
    holds."""
    def show_help(args) -> int:
        parser.print_help()
        return 0
    show_help.needs_backend = False
    parser.set_defaults(run=show_help)


def run_command(args) -> int:
    """Run the parsed command: a bad NPGPT_BACKEND is one line (exit 2), warnings are one line
    each, Ctrl-C outside a training loop exits 130, a reader that closed the pipe
    (`npgpt gradcheck | head`) ends the command quietly (141, as a shell reports SIGPIPE)."""
    prog = args.command_prog
    try:
        if getattr(args.run, "needs_backend", True):
            kernels.current_backend()       # resolves NPGPT_BACKEND: an error names it
    except (ValueError, RuntimeError) as e:
        if dist.speaks():                   # under mpiexec, every rank reads the same variable
            print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    with one_line_warnings(prog):
        try:
            status = args.run(args)
            sys.stdout.flush()              # here, so that a closed pipe is caught below
            return status
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        except BrokenPipeError:             # the reader has gone: nothing more to say
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 141


@contextlib.contextmanager
def one_line_warnings(prog: str):
    """Within the block, a warning prints as `prog: warning: message` (not Python's file, line
    number and source line); the previous behaviour is restored afterwards."""
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"{prog}: warning: {message}", file=sys.stderr if file is None else file)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield
