"""Runs: the stretches of memory that one call of an update rule walks.

The update rules (adamw_update, sgd_update, the sum of squares of clip_grad_norm) work on flat
1-D arrays. A model whose parameters were flattened (npgpt.nn.flatten_parameters: GPT and
Transformer do it in their constructors) holds them as neighbouring views of one buffer,

    buffer = [ w0.ravel() | b0.ravel() | w1.ravel() | ... ]      p.data: a view of its slice

so the optimizer can hand a rule ONE 1-D view spanning all of them, a *run*, and update the
whole model in one call (with a fused kernel: one parallel pass). A run ends where the next
parameter does not follow in memory (another buffer, a parameter of its own, another param
group or dtype); a parameter that is not a view of a flat buffer is a run of its own, which
works the same, one call per parameter.

    Run(data, grad, decay, group, params)

The rules walk a run in chunks of BLOCK elements, so their scratch arrays stay in cache.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..nn.module import Parameter

BLOCK = 1 << 16   # elements per chunk of a flat update: the chunk's scratch stays in cache


def chunks(n: int):
    """(start, stop) of consecutive blocks of at most BLOCK elements covering range(n)."""
    for start in range(0, n, BLOCK):
        yield start, min(start + BLOCK, n)


class Run(NamedTuple):
    data: np.ndarray        # 1-D view over the values of `params`, in order
    grad: np.ndarray        # 1-D view over their gradients
    decay: np.ndarray       # 1-D bool, per element: weight decay applies (its parameter's p.decay)
    group: int              # the index of the param group the parameters belong to
    params: tuple           # the Parameters, in memory order


def _address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def _adjacent(a: np.ndarray, b: np.ndarray) -> bool:
    """b starts where a ends, inside one contiguous buffer: one 1-D view can cover both."""
    return (a.base is not None and b.base is a.base and a.base.flags.c_contiguous
            and _address(b) == _address(a) + a.nbytes)


def _span(arrays: list[np.ndarray]) -> np.ndarray:
    """One 1-D view over C-contiguous arrays that lie one after another in memory."""
    first = arrays[0]
    if len(arrays) == 1:
        return first.reshape(-1)                       # contiguous: a view, not a copy
    flat = first.base.reshape(-1)
    start = (_address(first) - _address(flat)) // flat.itemsize
    return flat[start:start + sum(a.size for a in arrays)]


def _run(params: list[Parameter], group: int) -> Run:
    decay = np.repeat([bool(p.decay) for p in params], [p.size for p in params])
    return Run(_span([p.data for p in params]), _span([p.grad for p in params]), decay, group,
               tuple(params))


def find_runs(groups: list[list[Parameter]], where: str) -> list[Run]:
    """The runs of the trainable parameters of each group (a list of Parameters per group, in
    the optimizer's order): each maximal stretch whose data AND grad are neighbouring views of
    the same buffers is one run. Nothing is copied or moved: the runs are views."""
    runs = []
    for g, params in enumerate(groups):
        for j, p in enumerate(params):
            if not (p.data.flags.c_contiguous and p.grad.flags.c_contiguous):
                raise ValueError(f"{where}: params[{j}] {p!r} has a non-contiguous data or grad "
                                 f"array: expected C-contiguous arrays (updated in place)")
        start = 0
        for i in range(1, len(params) + 1):
            if i == len(params) or not (_adjacent(params[i - 1].data, params[i].data)
                                        and _adjacent(params[i - 1].grad, params[i].grad)):
                runs.append(_run(params[start:i], g))
                start = i
    return runs
