"""Argument checks shared by the data modules: each error names the argument and its value."""

from __future__ import annotations

import operator

import numpy as np


def check_int(name: str, value, low: int = 1) -> int:
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} is {value!r}: expected an int") from None
    if value < low:
        raise ValueError(f"{name} is {value}: expected an int >= {low}")
    return value


def check_rng(rng) -> None:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng is a {type(rng).__name__}: expected a np.random.Generator "
                        "(np.random.default_rng(seed))")
