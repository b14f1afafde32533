"""Compile every kernel ahead of time (or load it from Numba's disk cache), and time each.

Numba compiles a kernel at its first call for each signature: seconds per kernel the first time,
a fraction of a second when its compiled code is loaded from the cache in __pycache__. A
benchmark calls `warmup()` first so that it can report compile time apart from run time.

Each kernel is called on tiny inputs. The fused kernels have two compiled forms, the calling
thread's and the parallel one (tasks.py), and tiny inputs only reach the first: the parallel
form is called directly, as one task, so that nothing has to be switched to reach it.
"""

from __future__ import annotations

import time

import numpy as np

from .. import reference
from . import attention, decode, elementwise, loss, optimizer
from .blas import matmul_add
from .elementwise import (embedding_backward, erf, gelu_tanh_backward, gelu_tanh_forward,
                          layernorm_backward, layernorm_forward)
from .gemm import gemm
from .loss import cross_entropy_backward, cross_entropy_forward, cross_entropy_forward_backward
from .optimizer import adamw_update, sum_squares


def warmup(dtypes=("float32",)) -> dict[str, float]:
    """Compile every kernel for the common signatures now; returns {"kernel[dtype]": seconds}
    of each first call (about 0.2 s in all from a warm cache; several seconds cold)."""
    seconds: dict[str, float] = {}
    for name in dtypes:
        rng = np.random.default_rng(0)
        a, b = rng.standard_normal((9, 7)).astype(name), rng.standard_normal((7, 5)).astype(name)
        for kernel, call in _calls(a, b):
            start = time.perf_counter()
            call()
            seconds[f"{kernel}[{name}]"] = time.perf_counter() - start
    return seconds


def _calls(a: np.ndarray, b: np.ndarray):
    """(kernel, a call that compiles it) for every kernel, on tiny arrays a (9, 7) and b (7, 5)."""
    flat = a.reshape(-1)
    return [("gemm", lambda: (gemm(a, b), gemm(b.T, a.T))),     # b.T, a.T: packed transposed
            ("attention", lambda: _attention(a)),
            ("erf", lambda: erf(a)),
            ("layernorm", lambda: _layernorm(a)),
            ("gelu_tanh", lambda: _gelu_tanh(a)),
            ("cross_entropy", lambda: _cross_entropy(a)),
            ("adamw", lambda: _adamw(flat)),
            ("sum_squares", lambda: (sum_squares(flat), optimizer._sum_squares_tasks(flat, np.empty(1)))),
            ("embedding", lambda: embedding_backward(a, (np.arange(9) % 3, 3))),
            ("matmul_add", lambda: matmul_add(a.T @ a, a.T, a)),
            ("decode", lambda: _decode(a))]


def _attention(a):
    q = np.ascontiguousarray(a[:5, :6].reshape(1, 2, 5, 3))     # (B, H, T, D) = (1, 2, 5, 3)
    bias = reference.key_bias(None, 1, 5, a.dtype)
    for forward in (attention._attention_forward_fused, attention._attention_forward_blas):  # both paths
        out, cache = forward(q, q, q, True, bias)
        attention.attention_backward(out, cache)


def _decode(a):
    """Attention over a KV cache, on the calling thread and in parallel."""
    q = np.ascontiguousarray(a[:2, :6].reshape(1, 2, 1, 6))       # (B, H, 1, D)
    k = np.ascontiguousarray(a[:, :6].reshape(1, 1, 9, 6).repeat(2, axis=1))
    decode._attend_heads(q, k, k, 5, 0.5, np.empty_like(q))
    decode._attend_heads_parallel(q, k, k, 5, 0.5, np.empty_like(q))


def _layernorm(a):
    w = a[0].copy()
    y, cache = layernorm_forward(a, w, w)
    layernorm_backward(y, cache)
    layernorm_backward(y, layernorm_forward(a, w)[1], need_dw=False)
    N, C = a.shape
    y, mu, rstd = np.empty_like(a), np.empty(N, a.dtype), np.empty(N, a.dtype)
    dw_parts, db_parts = np.zeros((2, 1, C), a.dtype)                # one task's partial sums
    elementwise._layernorm_forward_tasks(a, w, w, True, 1e-5, y, mu, rstd, 1)
    elementwise._layernorm_backward_tasks(a, a, w, mu, rstd, y, dw_parts, db_parts, True, 1)


def _gelu_tanh(a):
    y, cache = gelu_tanh_forward(a)
    gelu_tanh_backward(y, cache)
    flat, t = a.reshape(-1), cache[1].reshape(-1)
    elementwise._gelu_tanh_forward_tasks(flat, np.empty_like(flat), np.empty_like(flat), 1)
    elementwise._gelu_tanh_backward_tasks(flat, flat, t, np.empty_like(flat), 1)


def _cross_entropy(a):
    targets = np.arange(a.shape[0]) % a.shape[1]
    _, cache = cross_entropy_forward(a, targets, -100, 0.1)
    cross_entropy_backward(1.0, cache)
    cross_entropy_forward_backward(a, targets, -100, 0.1)
    x, lse, targets, valid, _, eps, _ = cache
    lse = lse.reshape(-1)
    loss._cross_entropy_forward_tasks(x, targets, valid, eps, np.empty_like(lse), np.empty_like(lse), 1)
    loss._cross_entropy_backward_tasks(x, lse, targets, valid, eps, 1.0, np.empty_like(x), 1)
    loss._cross_entropy_forward_backward_tasks(x, targets, valid, eps, 1.0, np.empty_like(lse),
                                               np.empty_like(lse), np.empty_like(x), 1)


def _adamw(flat):
    p, g, m, v = flat.copy(), flat.copy(), flat.copy(), flat * flat
    adamw_update(p, g, m, v, flat > 0, 1e-3, 0.9, 0.99, 1e-8, 0.1, 1)
    dt = flat.dtype.type
    optimizer._adamw_tasks(p, g, m, v, flat > 0, dt(1), dt(0.1), dt(0.99), dt(0.01), dt(0.1), dt(1e-8),
                           dt(-1e-3), dt(0.5), True, 1)
