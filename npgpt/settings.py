"""The settings of a run: a frozen dataclass whose every field carries its own help, and the
checks of its values.

A field is declared once, with what a reader (and `--help`) needs beside it:

    lr: float = setting(2e-3, "peak learning rate (AdamW)")
    dtype: str = setting("float32", "the parameters' dtype", choices=DTYPES)

npgpt.cli makes one command-line flag per field from these (--lr, --dtype {float32,float64});
Checker checks the values in the dataclass's __post_init__ (which only checks, never rewrites),
each failure one ValueError that names the field, its flag, the value and what was expected:

    PretrainConfig: lr=-1.0 (--lr): expected a finite number >= 0
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

BACKENDS = ("numpy", "numba", "cuda")      # npgpt.kernels' backends
DTYPES = ("float32", "float64")
WARMUP_SHOWN = "100, or a tenth of --max-iters if less"


def default_warmup(max_iters: int) -> int:
    """The warmup of a run that sets none: 100 steps, or a tenth of a shorter run (at least 1),
    so that a default never makes a short run invalid."""
    return min(100, max(1, max_iters // 10))
# Several processes (mpiexec -n P; npgpt.dist): the settings every run has, and their help.
ALLREDUCES = ("mpi", "ring")
ALLREDUCE_HELP = ("under mpiexec: how the gradients are summed across processes: mpi "
                  "(MPI_Allreduce) or ring (npgpt.dist.ring, written with messages)")
SHARD_HELP = ("under mpiexec: ZeRO stage 1, each process keeps AdamW's moments for 1/P of the "
              "parameters")
PARALLEL_SETTINGS = ("allreduce", "shard_optimizer")    # a resumed run may change them (and P)


def setting(default, help: str, *, choices: tuple | None = None, metavar=None,
            shown: str | None = None, item: type = str, nargs: int | str | None = None):
    """A dataclass field of a run's settings, with its help beside it.

    help:     what the field means, in a few words (the flag's help; the default is added)
    choices:  the allowed values (None too when the default is None): Checker.choices checks
              them and --help shows them
    metavar:  the placeholder --help shows for the value (default: by type, N, X or VALUE)
    shown:    what --help says the default is, where the value alone would not tell
              (a None default: "the preset's", "fitted to the data", ...)
    item, nargs: a tuple field's element type and count (default: str, one or more)
    """
    return dataclasses.field(default=default, metadata={
        "help": help, "choices": choices, "metavar": metavar, "shown": shown, "item": item,
        "nargs": nargs})


def flag_name(name: str) -> str:
    """The command-line flag of a field: max_iters -> --max-iters."""
    return "--" + name.replace("_", "-")


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
                         f"({flag_name(name)}): expected {expected}")

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

    def choices(self) -> None:
        """Every field declared with choices holds one of them (or None, where None is its default)."""
        for f in dataclasses.fields(self.settings):
            if f.metadata.get("choices") is not None:
                self.choice(f.name, (*f.metadata["choices"], *([None] if f.default is None else [])))

    def flags(self, *names: str) -> None:
        for name in names:
            if not isinstance(getattr(self.settings, name), bool):
                self.fail(name, "True or False")

    def names(self, *names: str, length: int | None = None, item: type = str,
              unset: str | None = None) -> None:
        """Tuples of `length` (None: any) items of type item (an int: a plain integer)."""
        for name in names:
            value = getattr(self.settings, name)
            if value is None and unset is not None:
                continue
            ok = isinstance(value, tuple) and (length is None or len(value) == length) and all(
                is_int(v) if item is int else isinstance(v, item) for v in value)
            if not ok:
                what = f"{length} integers" if item is int else f"names ({item.__name__})"
                self.fail(name, f"a tuple of {what}" + (f" (or unset: {unset})" if unset else ""))
