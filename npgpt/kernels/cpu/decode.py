"""Decoding one token at a time: a row times a matrix, and one query's attention over a KV cache.

Generating a token reads every weight of the model once and does two FLOPs per weight: it is
bound by how fast memory delivers the weights, not by arithmetic (npgpt/bench/roofline.py). Two
things stood between npgpt's decoding and that bound, and this file removes them:

    row_times_matrix   y = x @ W for ONE row x (every Linear and the head while decoding).
                       np.matmul hands a
                       (1, K) @ (K, N) product to BLAS, whose kernels are built for many rows
                       (gemm blocks and packs its operands for reuse; with one row there is
                       none): it read GPT-2's weights at about two thirds of the rate of this
                       loop (docs/speed.md). Here W
                       (K, N), row-major as a Linear stores it, is streamed once: the sum over k
                       of x[k] * W[k, :] is split into blocks of ROWS_PER_TASK consecutive rows,
                       each task reads its rows front to back (one contiguous stretch of
                       memory, which the hardware prefetches well) into a partial sum, four rows
                       per pass over it; the partial sums are added in order, so the result does
                       not depend on the number of threads. The tied head, x @ E^T with E (V, C)
                       row-major, is one dot product per row of E, four rows per pass over x.
                       Both run on Numba's threads: with BLAS's gemv for the head (as fast, alone),
                       its worker threads would still be spinning when the next token's Numba
                       kernels start, two thread pools taking turns at the same cores.
    attention_decode   one new query per head against the first `length` keys and values of a
                       preallocated cache, read where they lie: the general kernel would first
                       copy them into contiguous arrays (kernels/cpu/attention.py), which is
                       O(T) per token and layer, O(T^2) over a generation.

Both are tested equal to their NumPy definitions (np.matmul; reference.attention_decode).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .. import reference
from .attention import attention_forward
from .gemm import _dot
from .intrinsics import _FM, _exp_nonpos

# rows of W per task of row_times_matrix (and per partial sum): on 2 threads, GPT-2's weights
# streamed at 27.9 GB/s with 64 rows a task, 29.2 with 128 (fewer, longer runs of memory)
ROWS_PER_TASK = 128
# cached numbers (B H length D) from which attention_decode shares the heads among the threads:
# GPT-2 at ~100 positions (74 K) took 0.82 ms a token so, 0.93 on the calling thread
ATTEND_PARALLEL_FROM = 1 << 14


@njit(fastmath=_FM, cache=True)
def _axpy_rows(x, w, y, k0, k1):
    """y = sum_{k0 <= k < k1} x[k] * w[k, :], four rows of w per pass over y."""
    N = w.shape[1]
    y[:] = 0
    k = k0
    # for each group of 4 rows k .. k+3: y += x_k w_k + ... + x_k+3 w_k+3
    while k + 4 <= k1:
        w0, w1, w2, w3 = w[k], w[k + 1], w[k + 2], w[k + 3]
        x0, x1, x2, x3 = x[k], x[k + 1], x[k + 2], x[k + 3]
        for j in range(N):
            y[j] += x0 * w0[j] + x1 * w1[j] + x2 * w2[j] + x3 * w3[j]
        k += 4
    while k < k1:
        wk, xk = w[k], x[k]
        for j in range(N):
            y[j] += xk * wk[j]
        k += 1


@njit(parallel=True, cache=True)
def _row_times_rows(x, w, parts, y):
    """y = x @ w, w (K, N) C-contiguous: task t sums rows t*R .. t*R+R-1 into parts[t]; then
    y = parts[0] + parts[1] + ..., in order."""
    K, N = w.shape
    n_tasks = parts.shape[0]
    # for each block of ROWS_PER_TASK rows, in parallel: its partial sum
    for t in prange(n_tasks):
        _axpy_rows(x, w, parts[t], t * ROWS_PER_TASK, min(K, t * ROWS_PER_TASK + ROWS_PER_TASK))
    # y = the partial sums, added in task order
    for j in range(N):
        s = parts[0, j]
        for t in range(1, n_tasks):
            s += parts[t, j]
        y[j] = s


@njit(fastmath=_FM, cache=True)
def _dot4(a0, a1, a2, a3, x):
    """Four dot products with one x: each x[p] is loaded once for four rows."""
    z = a0.dtype.type(0)
    s0 = s1 = s2 = s3 = z
    for p in range(x.shape[0]):
        xp = x[p]
        s0 += a0[p] * xp
        s1 += a1[p] * xp
        s2 += a2[p] * xp
        s3 += a3[p] * xp
    return s0, s1, s2, s3


@njit(parallel=True, cache=True)
def _rows_dot_row(e, x, y):
    """y = e @ x, e (N, K) C-contiguous: one dot product per row, ROWS_PER_TASK * 4 rows a task."""
    N = e.shape[0]
    rows = 4 * ROWS_PER_TASK
    # for each block of rows, in parallel: four rows at a time
    for t in prange((N + rows - 1) // rows):
        n, end = t * rows, min(N, t * rows + rows)
        while n + 4 <= end:
            y[n], y[n + 1], y[n + 2], y[n + 3] = _dot4(e[n], e[n + 1], e[n + 2], e[n + 3], x)
            n += 4
        while n < end:
            y[n] = _dot(e[n], x)
            n += 1


def row_times_matrix(x: np.ndarray, w: np.ndarray) -> np.ndarray | None:
    """x @ w for x (1, K) and w (K, N) in either layout: row-major (a Linear's weight: partial
    sums over blocks of rows) or the transpose of a row-major (N, K) (the tied head's E^T: one dot
    product per row of E). Returns (1, N); None for any other layout (the caller uses BLAS)."""
    K, N = w.shape
    out = np.empty((1, N), dtype=x.dtype)
    row = np.ascontiguousarray(x[0])
    if w.flags.c_contiguous:
        parts = np.empty(((K + ROWS_PER_TASK - 1) // ROWS_PER_TASK, N), dtype=x.dtype)
        _row_times_rows(row, w, parts, out[0])
    elif w.flags.f_contiguous:
        _rows_dot_row(w.T, row, out[0])
    else:
        return None
    return out


@njit(fastmath=_FM, cache=True)
def _attend_one(q, k, v, scale, out):
    """out = softmax(k q * scale) v for one query q (D,), keys and values (L, D)."""
    L, D = k.shape
    dt = q.dtype.type
    s = np.empty(L, dtype=q.dtype)
    m = dt(-np.inf)
    # s_j = q . k_j * scale;  m = max_j s_j
    for j in range(L):
        s[j] = _dot(q, k[j]) * dt(scale)
        m = max(m, s[j])
    # p_j = exp(s_j - m);  total = sum_j p_j
    total = dt(0)
    for j in range(L):
        s[j] = _exp_nonpos(s[j] - m)
        total += s[j]
    # out = sum_j p_j v_j / total
    out[:] = 0
    for j in range(L):
        p, vj = s[j], v[j]
        for d in range(D):
            out[d] += p * vj[d]
    inv = dt(1) / total
    for d in range(D):
        out[d] *= inv


@njit(cache=True)
def _attend_heads(q, k, v, length, scale, out):
    B, H = q.shape[0], q.shape[1]
    # for each (batch, head), on the calling thread: a token's attention is small work
    for t in range(B * H):
        b, h = t // H, t % H
        _attend_one(q[b, h, 0], k[b, h, :length], v[b, h, :length], scale, out[b, h, 0])


@njit(parallel=True, cache=True)
def _attend_heads_parallel(q, k, v, length, scale, out):
    B, H = q.shape[0], q.shape[1]
    # for each (batch, head), in parallel (many sequences, or long ones)
    for t in prange(B * H):
        b, h = t // H, t % H
        _attend_one(q[b, h, 0], k[b, h, :length], v[b, h, :length], scale, out[b, h, 0])


def attention_decode(q, k_cache, v_cache, length: int):
    """reference.attention_decode: new queries against a KV cache's first `length` positions.

    One query per head (the decoding step) reads the buffers in place, on the calling thread
    below ATTEND_PARALLEL_FROM cached numbers, else one (batch, head) per task. More
    queries (a prompt, once) go to the general kernel, which copies the filled part.
    """
    reference.check_attention_decode_args(q, k_cache, v_cache, length)
    B, H, Tq, D = q.shape
    if Tq != 1 or not (k_cache.flags.c_contiguous and v_cache.flags.c_contiguous):
        out, _ = attention_forward(q, k_cache[:, :, :length], v_cache[:, :, :length], causal=True)
        return out
    out = np.empty_like(q)
    attend = _attend_heads_parallel if B * H * length * D >= ATTEND_PARALLEL_FROM else _attend_heads
    attend(np.ascontiguousarray(q), k_cache, v_cache, length, 1.0 / math.sqrt(D), out)
    return out
