"""Param groups, as torch.optim takes them, and the checks of an optimizer's arguments.

    AdamW(model.parameters(), lr=1e-3)                          one group
    AdamW([{"params": a, "lr": 1e-3}, {"params": b}], lr=1e-4)  a group's keys override defaults

Every check names the argument, its value and what was expected.
"""

from __future__ import annotations

import math

import numpy as np

from ..nn.module import Parameter


def check_number(where: str, name: str, value, lo: float, hi: float = math.inf,
                 lo_open: bool = False, hi_open: bool = False) -> float:
    """float(value) if it is a finite real number in the interval, else a ValueError/TypeError."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{where}: {name}={value!r} is a {type(value).__name__}: expected a real number")
    x = float(value)
    low_ok = x > lo if lo_open else x >= lo
    high_ok = x < hi if hi_open else x <= hi
    if not (math.isfinite(x) and low_ok and high_ok):
        interval = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
        raise ValueError(f"{where}: {name}={value!r}: expected a finite number in {interval}")
    return x


def _as_list(where: str, params) -> list:
    if isinstance(params, Parameter):
        return [params]
    if isinstance(params, (np.ndarray, dict, str)) or not hasattr(params, "__iter__"):
        raise TypeError(f"{where}: params is a {type(params).__name__}: expected an iterable of "
                        f"Parameters (e.g. model.parameters()) or of param-group dicts")
    return list(params)


def unique_params(where: str, params, allow_empty: bool = False) -> list[Parameter]:
    """The Parameters of `params`, each object once, in order; anything else is a TypeError."""
    items = _as_list(where, params)
    if not items and not allow_empty:
        raise ValueError(f"{where}: 'params' is empty: expected at least one Parameter")
    for j, p in enumerate(items):
        if not isinstance(p, Parameter):
            raise TypeError(f"{where}: params[{j}] is a {type(p).__name__}: expected an "
                            f"npgpt.nn.Parameter")
    return list({id(p): p for p in items}.values())


def parse_groups(name: str, params, defaults: dict) -> list[dict]:
    """torch-style param groups: [{"params": [...], hyper-parameter: value, ...}, ...].

    A plain list of Parameters is one group. Each group gets the defaults for the keys it does
    not set; a Parameter listed twice in a group is kept once; in two groups it is an error.
    """
    items = _as_list(name, params)
    if not items:
        raise ValueError(f"{name}: params is empty: expected at least one Parameter")
    if not any(isinstance(x, dict) for x in items):
        items = [{"params": items}]
    groups, owner = [], {}
    for i, raw in enumerate(items):
        if not isinstance(raw, dict):
            raise TypeError(f"{name}: params mixes dicts and {type(raw).__name__}: expected all "
                            f"Parameters or all param-group dicts")
        unknown = sorted(set(raw) - {"params", *defaults})
        if unknown or "params" not in raw:
            raise ValueError(f"{name}: param_groups[{i}] has keys {sorted(raw)}: expected 'params' "
                             f"and any of {sorted(defaults)}")
        group = {**defaults, **raw, "params": unique_params(f"{name}: param_groups[{i}]", raw["params"])}
        for p in group["params"]:
            if owner.setdefault(id(p), i) != i:
                raise ValueError(f"{name}: a {p!r} is in param_groups[{owner[id(p)]}] and "
                                 f"param_groups[{i}]: expected each parameter in one group")
        groups.append(group)
    return groups
