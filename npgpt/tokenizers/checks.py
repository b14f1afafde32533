"""Argument checks the tokenizers share: id lists, id ranges, and JSON files."""

from __future__ import annotations

import json
import operator
from pathlib import Path

import numpy as np


def as_id_list(ids, name: str = "ids") -> list[int]:
    """Any iterable of integers (a list, a 1-D numpy integer array, a generator) as a list of int."""
    if isinstance(ids, np.ndarray):
        if ids.ndim != 1 or not (np.issubdtype(ids.dtype, np.integer) or ids.size == 0):
            raise TypeError(f"{name} is an array of shape {ids.shape} and dtype {ids.dtype}: "
                            "expected a 1-D array of integer token ids")
        return ids.tolist()
    if isinstance(ids, (str, bytes)) or not hasattr(ids, "__iter__"):
        raise TypeError(f"{name} is a {type(ids).__name__}: expected an iterable of integer "
                        "token ids")
    out = []
    for i in ids:
        try:
            out.append(operator.index(i))
        except TypeError:
            raise TypeError(f"{name}[{len(out)}] is {i!r} ({type(i).__name__}): expected an "
                            "integer token id") from None
    return out


def check_id_range(ids: list[int], vocab_size: int, name: str = "ids") -> None:
    """Raise ValueError naming the first id outside [0, vocab_size)."""
    if ids and (min(ids) < 0 or max(ids) >= vocab_size):
        pos, bad = next((p, i) for p, i in enumerate(ids) if not 0 <= i < vocab_size)
        raise ValueError(f"{name}[{pos}] is {bad}: expected token ids in [0, {vocab_size})")


def read_json(path: Path, name: str):
    """The JSON value in the UTF-8 file path; errors name it as `name` ("path", "vocab file")."""
    if not path.is_file():
        what = "a directory" if path.is_dir() else "missing"
        raise FileNotFoundError(f"{name} {str(path)!r} is {what}: expected a JSON file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{name} {str(path)!r} is not valid UTF-8 JSON: {e}") from None
