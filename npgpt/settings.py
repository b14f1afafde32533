"""The settings of the commands (TrainConfig, Seq2SeqTrainConfig, FinetuneConfig): their flags
and their checks.

add_flags makes one command-line flag per field; Checker checks the values, each failure one
ValueError that names the field, its command-line flag, the value and what was expected:

    TrainConfig: lr=-1.0 (--lr): expected a finite number >= 0
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from typing import Callable

import numpy as np


def add_flags(parser, flags: dict, config_cls, shown: dict | None = None, unset: str = "unset",
              metavar: Callable | None = None) -> None:
    """One --flag per field of the settings dataclass config_cls. flags: {field: (type, help)}.

    Every flag defaults to argparse.SUPPRESS, so only the flags given reach config_cls(**...) (and
    --resume can tell them apart). The help ends with the field's default: shown[field] where
    given, `unset` for None, else the value; a bool field is a --x / --no-x pair.
    metavar(field, type) -> the placeholder in --help, or None for argparse's own.
    """
    defaults = {f.name: f.default for f in dataclasses.fields(config_cls)}
    for name, (type_, help_) in flags.items():
        default, flag = defaults[name], "--" + name.replace("_", "-")
        if type_ is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                                help=f"{help_} (default: {'on' if default else 'off'})")
            continue
        if "(default:" not in help_:
            help_ = f"{help_} (default: {(shown or {}).get(name, unset if default is None else default)})"
        extra = {"metavar": metavar(name, type_)} if metavar is not None else {}
        parser.add_argument(flag, type=type_, default=argparse.SUPPRESS, help=help_, **extra)


def add_resume_flag(parser, may_change: str) -> None:
    """--resume, for a command whose saved settings allow only `may_change` to differ."""
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its checkpoint, with its saved settings "
                             f"(only {may_change} may change)")


def is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def is_number(v) -> bool:
    """A finite real number (not a bool)."""
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)


class Checker:
    """check = Checker(settings); check.integers("max_iters", "batch_size"); ..."""

    def __init__(self, settings):
        self.settings = settings

    def fail(self, name: str, expected: str):
        value = getattr(self.settings, name)
        raise ValueError(f"{type(self.settings).__name__}: {name}={value!r} "
                         f"(--{name.replace('_', '-')}): expected {expected}")

    def _each(self, names, ok, expected, unset):
        for name in names:
            value = getattr(self.settings, name)
            if unset is not None and value is None:
                continue
            if not ok(value):
                self.fail(name, expected + (f" (or unset: {unset})" if unset is not None else ""))

    def integers(self, *names: str, low: int = 1, unset: str | None = None) -> None:
        """Integers >= low (1: "a positive integer"); unset: what None means, if None is allowed."""
        expected = "a positive integer" if low == 1 else f"an integer >= {low}"
        self._each(names, lambda v: is_int(v) and v >= low, expected, unset)

    def numbers(self, *names: str, low: float = 0) -> None:
        """Finite numbers >= low."""
        self._each(names, lambda v: is_number(v) and v >= low, f"a finite number >= {low}", None)

    def fractions(self, *names: str, zero: bool = True, unset: str | None = None) -> None:
        """Numbers in [0, 1) (zero=False: in (0, 1))."""
        expected = "a number in [0, 1)" if zero else "a number in (0, 1)"
        ok = (lambda v: is_number(v) and 0 <= v < 1) if zero else (lambda v: is_number(v) and 0 < v < 1)
        self._each(names, ok, expected, unset)

    def choice(self, name: str, allowed) -> None:
        """One of `allowed` (None among them: may be unset)."""
        if getattr(self.settings, name) not in allowed:
            self.fail(name, f"one of {[a for a in allowed if a is not None]}")

    def flags(self, *names: str) -> None:
        for name in names:
            if not isinstance(getattr(self.settings, name), bool):
                self.fail(name, "True or False")
