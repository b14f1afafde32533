"""Fused LayerNorm, GELU (tanh) and the embedding's scatter-add; erf over all cores.

Each kernel here is the twin of a pure function in npgpt/nn (layernorm_forward/backward,
gelu_tanh_forward/backward, embedding_backward), with its signature, its cache type
(kernels/reference.py) and its argument checks, and is tested equal to it
(tests/kernels/test_fused_kernels.py). The Modules of npgpt/nn choose it with
`kernels.fused(name) or <the NumPy function>`.

Why faster: the NumPy form makes an array-sized temporary per operation (x - mu, its square,
...) and walks memory once per operation; a kernel here reads a row (or a span of a flat array)
once and runs every step of the formula on it while it sits in L1/L2, with no temporaries. Its
loops vectorise (intrinsics.py: the polynomial exp and tanh, the compile options), and from
PARALLEL_FROM elements on, tasks of rows run on all cores (tasks.py).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .. import reference
from ..reference import LayerNormCache
from .intrinsics import _FE, _FM, _tanh
from .tasks import ROWS_PER_TASK, as_rows, flat_tasks, row_tasks

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)     # the GELU's constants, as npgpt/nn/activation.py
GELU_TANH_C = 0.044715


# -- LayerNorm -----------------------------------------------------------------------------------

@njit(**_FE)
def _layernorm_forward_rows(x, w, b, has_bias, eps, y, mu, rstd, i0, i1):
    """Rows i0 .. i1-1: mu = mean(x_i), rstd = 1 / sqrt(mean((x_i - mu)^2) + eps),
    y_i = (x_i - mu) * rstd * w + b: two sweeps to reduce, one to write, the row in L1."""
    C = x.shape[1]
    dt = x.dtype.type
    # for each row i: the mean, the variance about it, then y
    for i in range(i0, i1):
        xi, yi = x[i], y[i]
        s = dt(0)
        for c in range(C):
            s += xi[c]
        m = s / dt(C)
        ss = dt(0)
        for c in range(C):
            d = xi[c] - m
            ss += d * d
        r = dt(1) / np.sqrt(ss / dt(C) + dt(eps))
        if has_bias:
            for c in range(C):
                yi[c] = (xi[c] - m) * r * w[c] + b[c]
        else:
            for c in range(C):
                yi[c] = (xi[c] - m) * r * w[c]
        mu[i] = m
        rstd[i] = r


@njit(parallel=True, cache=True)
def _layernorm_forward_tasks(x, w, b, has_bias, eps, y, mu, rstd, n_tasks):
    N = x.shape[0]
    # for each task of ROWS_PER_TASK rows, in parallel
    for t in prange(n_tasks):
        _layernorm_forward_rows(x, w, b, has_bias, eps, y, mu, rstd, t * ROWS_PER_TASK,
                                min(t * ROWS_PER_TASK + ROWS_PER_TASK, N))


def layernorm_forward(x, w, b=None, eps=1e-5):
    """npgpt.nn.norm.layernorm_forward in one pass per row (see that function for the math).

    Each row is read once into L1 and reduced there (mean, then variance about the mean: the
    same two-pass formula as the NumPy form, so as stable); the NumPy form makes four
    array-sized temporaries. Returns (y, LayerNormCache) with mu, rstd of shape (..., 1).
    """
    reference.check_layernorm_args(x, w, b)
    x2 = as_rows(x)
    N, C = x2.shape
    y = np.empty_like(x2)
    mu = np.empty(N, dtype=x2.dtype)
    rstd = np.empty(N, dtype=x2.dtype)
    args = (x2, w, w if b is None else b, b is not None, float(eps), y, mu, rstd)
    n_tasks = row_tasks(N, C)
    if n_tasks:
        _layernorm_forward_tasks(*args, n_tasks)
    else:
        _layernorm_forward_rows(*args, 0, N)
    stat = x.shape[:-1] + (1,)
    return y.reshape(x.shape), LayerNormCache(x, w, mu.reshape(stat), rstd.reshape(stat), b is not None)


@njit(fastmath={"reassoc"}, error_model="numpy", cache=True)   # no "contract": see the docstring
def _layernorm_backward_rows(dout, x, w, mu, rstd, dx, dw, db, need_dw, i0, i1):
    """Rows i0 .. i1-1 of the LayerNorm backward; adds dout * xhat and dout into dw, db (one
    task's partial sums). With g = dout * w, xhat = (x - mu) * rstd:
        dx = rstd * (g - mean_C(g) - xhat * mean_C(g * xhat))
    Without fused multiply-adds: fma(dout, w, -mean_C(g)) would keep the rounding error of g
    that mean_C(g) has, and with C = 1 (or a constant row) dx would be that error times rstd
    (~300) instead of exactly 0, as the NumPy form's is."""
    C = x.shape[1]
    dt = x.dtype.type
    # for each row i: the two means, then dx (and the row's share of dw, db)
    for i in range(i0, i1):
        xi, di, dxi = x[i], dout[i], dx[i]
        m, r = mu[i], rstd[i]
        sg = dt(0)
        sgx = dt(0)
        for c in range(C):
            g = di[c] * w[c]
            sg += g
            sgx += g * ((xi[c] - m) * r)
        mg = sg / dt(C)
        mgx = sgx / dt(C)
        for c in range(C):
            xhat = (xi[c] - m) * r
            dxi[c] = r * (di[c] * w[c] - mg - xhat * mgx)
        if need_dw:
            for c in range(C):
                dw[c] += di[c] * ((xi[c] - m) * r)
                db[c] += di[c]


@njit(parallel=True, cache=True)
def _layernorm_backward_tasks(dout, x, w, mu, rstd, dx, dw_parts, db_parts, need_dw, n_tasks):
    N = x.shape[0]
    # for each task of ROWS_PER_TASK rows, in parallel: its own row of the partial sums
    for t in prange(n_tasks):
        dw_parts[t] = 0
        db_parts[t] = 0
        _layernorm_backward_rows(dout, x, w, mu, rstd, dx, dw_parts[t], db_parts[t], need_dw,
                                 t * ROWS_PER_TASK, min(t * ROWS_PER_TASK + ROWS_PER_TASK, N))


def layernorm_backward(dout, cache, need_dw=True):
    """npgpt.nn.norm.layernorm_backward in one pass per row: (dx, dw, db), dw and db None with
    need_dw=False, db None without a bias.

    dw = sum_rows(dout * xhat) and db = sum_rows(dout) are reductions across rows, and the rows
    are shared among threads: each task of ROWS_PER_TASK rows adds into its own row of a
    (tasks, C) array of partial sums, which are then added up in order (no races, and the same
    result on any number of threads).
    """
    x, w, mu, rstd, has_bias = cache
    reference.check_like("dout", dout, x.shape, x.dtype, "the shape of the LayerNorm's input")
    x2 = as_rows(x)
    N, C = x2.shape
    d2 = as_rows(dout)
    dx = np.empty_like(x2)
    n_tasks = row_tasks(N, C)
    parts = np.zeros((2, max(n_tasks, 1), C), dtype=x2.dtype)       # dw, db partial sums
    args = (d2, x2, w, np.ascontiguousarray(mu).reshape(N), np.ascontiguousarray(rstd).reshape(N), dx)
    if n_tasks:
        _layernorm_backward_tasks(*args, parts[0], parts[1], bool(need_dw), n_tasks)
    else:
        _layernorm_backward_rows(*args, parts[0, 0], parts[1, 0], bool(need_dw), 0, N)
    if not need_dw:
        return dx.reshape(x.shape), None, None
    dw, db = parts.sum(axis=1) if n_tasks > 1 else parts[:, 0]
    return dx.reshape(x.shape), dw, (db if has_bias else None)


# -- GELU, the tanh approximation ----------------------------------------------------------------

@njit(**_FE)
def _gelu_tanh_forward_span(x, y, t, i0, i1):
    """y = 0.5 x (1 + t), t = tanh(sqrt(2/pi) (x + 0.044715 x^3)), for elements i0 .. i1-1."""
    xs, ys, ts = x[i0:i1], y[i0:i1], t[i0:i1]
    dt = x.dtype.type
    for i in range(xs.shape[0]):
        v = xs[i]
        th = _tanh(dt(SQRT_2_OVER_PI) * (v + dt(GELU_TANH_C) * v * v * v))
        ts[i] = th
        ys[i] = dt(0.5) * v * (dt(1) + th)


@njit(**_FE)
def _gelu_tanh_backward_span(dout, x, t, dx, i0, i1):
    """dx = dout * (0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2))."""
    ds, xs, ts, dxs = dout[i0:i1], x[i0:i1], t[i0:i1], dx[i0:i1]
    dt = x.dtype.type
    for i in range(xs.shape[0]):
        v, th = xs[i], ts[i]
        du = dt(SQRT_2_OVER_PI) * (dt(1) + dt(3 * GELU_TANH_C) * v * v)
        dxs[i] = ds[i] * (dt(0.5) * (dt(1) + th) + dt(0.5) * v * (dt(1) - th * th) * du)


@njit(parallel=True, cache=True)
def _gelu_tanh_forward_tasks(x, y, t, n_tasks):
    n = x.shape[0]
    # for each task: one contiguous span of the flat arrays, in parallel
    for k in prange(n_tasks):
        _gelu_tanh_forward_span(x, y, t, k * n // n_tasks, (k + 1) * n // n_tasks)


@njit(parallel=True, cache=True)
def _gelu_tanh_backward_tasks(dout, x, t, dx, n_tasks):
    n = x.shape[0]
    # for each task: one contiguous span of the flat arrays, in parallel
    for k in prange(n_tasks):
        _gelu_tanh_backward_span(dout, x, t, dx, k * n // n_tasks, (k + 1) * n // n_tasks)


def gelu_tanh_forward(x):
    """npgpt.nn.activation.gelu_tanh_forward in one pass: (y, (x, t)), t = tanh(u) as the
    NumPy form keeps it. float32's tanh is the rational approximation of `_tanh` (error <= 3.9e-7,
    where np.tanh's is 6e-8): vectorised, where Numba's math.tanh is a libm call per element.
    float64 uses libm's tanh, as the NumPy form does."""
    reference.check_float_array("x", x)
    flat = as_rows(x).reshape(-1)
    y = np.empty_like(flat)
    t = np.empty_like(flat)
    n_tasks = flat_tasks(flat.size)
    if n_tasks:
        _gelu_tanh_forward_tasks(flat, y, t, n_tasks)
    else:
        _gelu_tanh_forward_span(flat, y, t, 0, flat.size)
    return y.reshape(x.shape), (x, t.reshape(x.shape))


def gelu_tanh_backward(dout, cache):
    """npgpt.nn.activation.gelu_tanh_backward in one pass, from the cache (x, t)."""
    x, t = cache
    reference.check_like("dout", dout, x.shape, x.dtype, "the shape of the GELU's input")
    flat = as_rows(x).reshape(-1)
    dx = np.empty_like(flat)
    args = (as_rows(dout).reshape(-1), flat, as_rows(t).reshape(-1), dx)
    n_tasks = flat_tasks(flat.size)
    if n_tasks:
        _gelu_tanh_backward_tasks(*args, n_tasks)
    else:
        _gelu_tanh_backward_span(*args, 0, flat.size)
    return dx.reshape(x.shape)


# -- the embedding's scatter-add ------------------------------------------------------------------

@njit(fastmath=_FM, cache=True)
def _scatter_add_rows(out, idx, rows):
    """out[idx[i]] += rows[i] for every i, in order (a repeated id gets every row, summed)."""
    # for each token i: one row of the table gets its gradient row
    for i in range(idx.shape[0]):
        o, r = out[idx[i]], rows[i]
        for c in range(r.shape[0]):
            o[c] += r[c]


def embedding_backward(dout, cache, dw_out=None):
    """npgpt.nn.embedding.embedding_backward: dW[idx[i]] += dout[i], added into dw_out (V, C)
    when given (the Module passes its .grad), else into a new zero table; returns it.

    np.add.at is numpy's unbuffered scatter, general and slow; this loop adds each row where it
    goes, a few microseconds per row. On the calling thread: two tokens may share a row, so rows
    cannot be split among threads without partial tables.
    """
    idx, V = cache
    reference.check_embedding_backward_args(dout, idx, V, dw_out)
    rows = as_rows(dout)
    if dw_out is None:
        dw_out = np.zeros((V, rows.shape[1]), dtype=rows.dtype)
    _scatter_add_rows(dw_out, np.asarray(idx).reshape(-1).astype(np.int64, copy=False), rows)
    return dw_out


# -- erf, for the exact GELU ---------------------------------------------------------------------

@njit(parallel=True, cache=True)
def _erf_flat(x, out):
    # for each element, in parallel: libm's erf in float64 (so float32 rounds as the reference does)
    for i in prange(x.shape[0]):
        out[i] = math.erf(np.float64(x[i]))


def erf(x: np.ndarray) -> np.ndarray:
    """The error function elementwise: libm's erf over all cores, the reference's values exactly.

    Float32 is computed in float64 and rounded, as the reference does. Other dtypes (which the
    GELU never passes) go to the reference.
    """
    if not isinstance(x, np.ndarray) or x.dtype not in (np.float32, np.float64):
        return reference.erf(x)
    flat = np.ascontiguousarray(x).reshape(-1)
    out = np.empty_like(flat)
    if flat.size:
        _erf_flat(flat, out)
    return out.reshape(x.shape)
