"""Fused softmax cross-entropy: the loss and its gradient, one pass over the logits each, or
both in one pass.

The twins of npgpt.nn.loss.cross_entropy_forward, _backward and _forward_backward, with their
signatures, their cache type (reference.CrossEntropyCache) and their argument checks, tested
equal to them (tests/kernels/test_fused_kernels.py). CrossEntropyLoss chooses them with
`kernels.fused(name) or <the NumPy function>`.

Why faster: the NumPy form makes three (N, V) temporaries (x - m, its exponential, the
smoothing term's mean) and walks the logits once per operation. Here a row (200 KiB at GPT-2's
V = 50257) is read from memory once, by a vectorised max (`_maxnum`), and stays in L2 for the
sum of exponentials (`_exp_nonpos`); the backward writes the gradient straight into its own
array. cross_entropy_forward_backward writes that gradient during the forward, while each row
is still in L2 (a training forward: the backward then only hands it on). From PARALLEL_FROM
logits on, tasks of rows run on all cores (tasks.py).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .. import reference
from ..reference import CrossEntropyCache
from .intrinsics import _FE, _exp_nonpos, _maxnum
from .tasks import ROWS_PER_TASK, row_tasks


@njit(**_FE)
def _cross_entropy_forward_rows(x, targets, valid, eps, lse, loss, i0, i1):
    """Rows i0 .. i1-1: lse_i = m + log sum_v exp(x_iv - m), m = max_v x_iv, and the row's loss
        (1 - eps) (lse_i - x_i,y) + eps (lse_i - mean_v x_iv)      (0 for an ignored row)
    A row (200 KiB at V = 50257) is read from memory once: the max sweep brings it into L2, the
    sum of exponentials reads it from there. Each sweep is one reduction: a loop with two (the
    max and the plain sum together) stays scalar, 7x slower at GPT-2's V (results/threads.md)."""
    V = x.shape[1]
    dt = x.dtype.type
    # for each row: max, then the sum of exp(x - max) (and the plain sum, for the smoothing term)
    for i in range(i0, i1):
        xi = x[i]
        m = dt(-np.inf)
        for c in range(V):
            m = _maxnum(m, xi[c])
        total = dt(0)
        if eps:                    # a loop of its own: two reductions in one loop do not vectorise
            for c in range(V):
                total += xi[c]
        s = dt(0)
        for c in range(V):
            s += _exp_nonpos(xi[c] - m)
        lse[i] = m + np.log(s)
        if valid[i]:
            nll = lse[i] - xi[targets[i]]
            loss[i] = dt(1 - eps) * nll + dt(eps) * (lse[i] - total / dt(V)) if eps else dt(1 - eps) * nll
        else:
            loss[i] = 0


@njit(parallel=True, cache=True)
def _cross_entropy_forward_tasks(x, targets, valid, eps, lse, loss, n_tasks):
    N = x.shape[0]
    # for each task of ROWS_PER_TASK rows, in parallel
    for t in prange(n_tasks):
        _cross_entropy_forward_rows(x, targets, valid, eps, lse, loss, t * ROWS_PER_TASK,
                                    min(t * ROWS_PER_TASK + ROWS_PER_TASK, N))


@njit(**_FE)
def _cross_entropy_backward_rows(x, lse, targets, valid, eps, scale, dx, i0, i1):
    """Rows i0 .. i1-1: dx_i = (softmax(x_i) - q_i) * scale, q_i = (1 - eps) onehot(y_i) + eps / V,
    computed in the NumPy form's order: ((exp(x - lse) [- (1 - eps) at y_i]) - eps / V) * scale."""
    V = x.shape[1]
    dt = x.dtype.type
    off = dt(eps / V)
    # for each row: one sweep writes softmax - eps / V, scaled; then the target's entry
    for i in range(i0, i1):
        xi, dxi = x[i], dx[i]
        if not valid[i]:
            dxi[:] = 0
            continue
        li = lse[i]
        for c in range(V):
            dxi[c] = (_exp_nonpos(xi[c] - li) - off) * dt(scale)
        y = targets[i]
        dxi[y] = ((_exp_nonpos(xi[y] - li) - dt(1 - eps)) - off) * dt(scale)


@njit(parallel=True, cache=True)
def _cross_entropy_backward_tasks(x, lse, targets, valid, eps, scale, dx, n_tasks):
    N = x.shape[0]
    # for each task of ROWS_PER_TASK rows, in parallel
    for t in prange(n_tasks):
        _cross_entropy_backward_rows(x, lse, targets, valid, eps, scale, dx, t * ROWS_PER_TASK,
                                     min(t * ROWS_PER_TASK + ROWS_PER_TASK, N))


@njit(**_FE)
def _cross_entropy_forward_backward_rows(x, targets, valid, eps, scale, lse, loss, dx, i0, i1):
    """Rows i0 .. i1-1: the forward's lse and loss, then at once the backward's dx for the row,
    while it is still in L2 (the backward alone would read it from memory again)."""
    # for each row: the forward's two sweeps, then the backward's one
    for i in range(i0, i1):
        _cross_entropy_forward_rows(x, targets, valid, eps, lse, loss, i, i + 1)
        _cross_entropy_backward_rows(x, lse, targets, valid, eps, scale, dx, i, i + 1)


@njit(parallel=True, cache=True)
def _cross_entropy_forward_backward_tasks(x, targets, valid, eps, scale, lse, loss, dx, n_tasks):
    N = x.shape[0]
    # for each task of ROWS_PER_TASK rows, in parallel
    for t in prange(n_tasks):
        _cross_entropy_forward_backward_rows(x, targets, valid, eps, scale, lse, loss, dx, t * ROWS_PER_TASK,
                                             min(t * ROWS_PER_TASK + ROWS_PER_TASK, N))


def _forward_buffers(logits, targets, ignore_index, label_smoothing):
    """The checked arguments of a forward and what it writes into: (x contiguous (N, V),
    targets, valid (N,) bool, n_valid, eps, lse (N,), loss_rows (N,))."""
    x, targets = reference.check_cross_entropy_args(logits, targets, ignore_index, label_smoothing)
    x = np.ascontiguousarray(x)
    valid = targets != ignore_index
    lse, loss_rows = (np.empty(x.shape[0], dtype=x.dtype) for _ in range(2))
    return x, targets, valid, int(valid.sum()), float(label_smoothing), lse, loss_rows


def cross_entropy_forward(logits, targets, ignore_index=-100, label_smoothing=0.0):
    """npgpt.nn.loss.cross_entropy_forward in one pass over the logits, row by row (see that
    function for the math). Returns (loss, CrossEntropyCache).

    The per-row losses are added in float64, in row order.
    """
    x, targets, valid, n_valid, eps, lse, loss_rows = _forward_buffers(logits, targets, ignore_index,
                                                                       label_smoothing)
    N, V = x.shape
    n_tasks = row_tasks(N, V)
    if n_tasks:
        _cross_entropy_forward_tasks(x, targets, valid, eps, lse, loss_rows, n_tasks)
    elif N:
        _cross_entropy_forward_rows(x, targets, valid, eps, lse, loss_rows, 0, N)
    loss = float(loss_rows.sum(dtype=np.float64) / n_valid) if n_valid else 0.0
    return loss, CrossEntropyCache(x, lse.reshape(N, 1), targets, valid, n_valid, eps, logits.shape)


def cross_entropy_backward(dloss, cache):
    """npgpt.nn.loss.cross_entropy_backward in one pass over the logits: the gradient written
    straight into a new array of the logits' shape, where the NumPy form makes three (N, V)
    temporaries."""
    x, lse, targets, valid, n_valid, eps, shape = cache
    N, V = x.shape
    out = np.empty(shape, dtype=x.dtype)
    if n_valid == 0:
        out[...] = 0
        return out
    scale = float(dloss) / n_valid
    args = (np.ascontiguousarray(x), np.ascontiguousarray(lse).reshape(N), targets, valid, float(eps),
            scale, out.reshape(N, V))
    n_tasks = row_tasks(N, V)
    if n_tasks:
        _cross_entropy_backward_tasks(*args, n_tasks)
    else:
        _cross_entropy_backward_rows(*args, 0, N)
    return out


def cross_entropy_forward_backward(logits, targets, ignore_index=-100, label_smoothing=0.0):
    """npgpt.nn.loss.cross_entropy_forward_backward: the loss, its cache, and the gradient of the
    mean loss (dloss = 1), in one pass over the logits, row by row.

    Why faster than the forward and then the backward: each row of logits (200 KiB at GPT-2's
    V = 50257) is read from memory once, and the gradient's sweep reads it from L2 right after
    the log-sum-exp's; apart, the backward reads all the logits from memory a second time. The
    numbers are the two kernels' own, bit for bit (the same row functions).
    """
    x, targets, valid, n_valid, eps, lse, loss_rows = _forward_buffers(logits, targets, ignore_index,
                                                                       label_smoothing)
    N, V = x.shape
    dx = np.empty(logits.shape, dtype=x.dtype)
    scale = 1.0 / n_valid if n_valid else 0.0
    args = (x, targets, valid, eps, scale, lse, loss_rows, dx.reshape(N, V))
    n_tasks = row_tasks(N, V)
    if n_tasks:
        _cross_entropy_forward_backward_tasks(*args, n_tasks)
    elif N:
        _cross_entropy_forward_backward_rows(*args, 0, N)
    loss = float(loss_rows.sum(dtype=np.float64) / n_valid) if n_valid else 0.0
    cache = CrossEntropyCache(x, lse.reshape(N, 1), targets, valid, n_valid, eps, logits.shape)
    return loss, cache, dx
