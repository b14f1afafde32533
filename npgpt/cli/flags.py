"""The flags of the training commands, made from their settings dataclasses (npgpt.runs), and
the body those commands share.

Each field of PretrainConfig, Seq2SeqConfig, FinetuneConfig is declared once, with its help
beside it (npgpt.settings.setting); add_config_flags turns every field into a flag:

    max_iters: int = setting(1500, "optimisation steps")
    ->  --max-iters N        optimisation steps (default: 1500)

    a bool field     --x / --no-x
    a tuple field    --x A [B ...] (nargs and the item type from the field)
    choices          shown as the metavar, {char,bpe}; Checker.choices checks them, so a bad
                     value is the same one-line error from Python and from the command line

Every flag defaults to argparse.SUPPRESS: only the flags given reach the settings (so --resume
can tell a flag given from a default).
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import typing
from types import ModuleType

from .. import dist
from ..settings import flag_name
from ..runs.skeleton import RunSpec
from ..trainer import TrainingDiverged

_METAVARS = {int: "N", float: "X"}


def add_config_flags(parser: argparse.ArgumentParser, config_cls) -> None:
    """One --flag per field of the settings dataclass config_cls (see the module docstring)."""
    types = typing.get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        meta, type_ = f.metadata, _plain(types[f.name])
        if "help" not in meta:
            raise TypeError(f"{config_cls.__name__}.{f.name} has no help: declare it with "
                            f"npgpt.settings.setting(default, help)")
        help_ = meta["help"].replace("%", "%%")           # argparse formats help with %
        if type_ is bool:
            parser.add_argument(flag_name(f.name), action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS,
                                help=_with_default(help_, "on" if f.default else "off"))
            continue
        kw = {"type": type_, "metavar": _metavar(meta, type_)}
        if type_ is tuple:
            kw.update(type=meta["item"], nargs=meta["nargs"] or "+")
        parser.add_argument(flag_name(f.name), default=argparse.SUPPRESS,
                            help=_with_default(help_, _shown_default(config_cls, f)), **kw)


def _with_default(help_: str, default: str) -> str:
    """help (default: X), or help (...; default: X) where the help ends in a parenthesis."""
    if help_.endswith(")"):
        return f"{help_[:-1]}; default: {default})"
    return f"{help_} (default: {default})"


def _plain(annotation):
    """int | None -> int; tuple | None -> tuple."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if args else annotation


def _metavar(meta, type_):
    if meta["choices"] is not None:
        return "{" + ",".join(map(str, meta["choices"])) + "}"
    return meta["metavar"] or _METAVARS.get(type_, "VALUE")


def _shown_default(config_cls, f) -> str:
    if f.metadata["shown"] is not None:
        return f.metadata["shown"]
    if f.default is None:
        raise TypeError(f"{config_cls.__name__}.{f.name} defaults to None: say what that means with "
                        f"setting(..., shown=...)")
    if isinstance(f.default, tuple):
        return " ".join(map(str, f.default)) or "none"
    return str(f.default)


def add_resume_flag(parser: argparse.ArgumentParser, spec: RunSpec) -> None:
    """--resume, for a command whose saved settings allow only spec.resumable to differ."""
    may_change = ", ".join(flag_name(name) for name in spec.resumable)
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its checkpoint, with its saved settings "
                             f"(only {may_change} may change)")


def config_flags(args: argparse.Namespace, config_cls) -> dict:
    """The settings given on the command line: {field: value}, tuple fields as tuples."""
    names = {f.name for f in dataclasses.fields(config_cls)}
    return {k: tuple(v) if isinstance(v, list) else v for k, v in vars(args).items() if k in names}


def run_training(args: argparse.Namespace, config_cls, run: ModuleType) -> int:
    """The body of `npgpt train`, `npgpt seq2seq train` and `npgpt finetune`: the settings from
    the flags given (with --resume, from the run in --out: run.resume_config), then
    run.run(cfg, resume=..., progress=None). The exit status: 0 done, 128 + the signal's number
    when stopped by one (a checkpoint saved): 130 Ctrl-C, 143 SIGTERM, as the shell reports a
    process the signal ended; 1 diverged, 2 bad input (one line on stderr)."""
    prog = run.SPEC.command
    flags = config_flags(args, config_cls)
    try:
        with dist.guard(prog):        # under mpiexec: an error on one process ends them all
            if args.resume:
                cfg = run.resume_config(flags.get("out", config_cls.out), flags)
            else:
                cfg = config_cls(**flags)
            result = run.run(cfg, resume=args.resume, progress=None)
    except TrainingDiverged as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 1
    except (ValueError, TypeError, OSError, RuntimeError, KeyError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e   # no repr quotes
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2
    if result.interrupted:
        return 128 + (result.signal or signal.SIGINT)
    return 0
