"""Decoding one token at a time: a row times a matrix, and one query's attention over a KV cache.

Generating a token reads every weight of the model once and does two FLOPs per weight: it is
bound by how fast memory delivers the weights, not by arithmetic (npgpt/bench/roofline.py). Two
things stood between npgpt's decoding and that bound, and this file removes them:

    row_times_matrix   y = x @ W for ONE row x (every Linear and the tied head while decoding).
                       np.matmul sends a (1, K) @ (K, N) product to BLAS's general gemm, which
                       copies ("packs") W into its own blocked layout before multiplying: every
                       weight is then read, written and read again, for a single use. Here W is
                       streamed once, in its own layout: for W (K, N) row-major (a Linear's
                       weight), each task owns a band of columns of y and adds x[k] * W[k, band]
                       for k = 0..K-1, four rows of W at a time (y's band stays in L1); for
                       W = E^T with E (N, K) row-major (the tied head, x @ E^T), each task owns
                       rows of E, one dot product each.
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
from .tasks import PARALLEL_FROM

COLUMN_BAND = 16 * 64        # columns per task of row_times_matrix (a multiple of the SIMD width)


@njit(fastmath=_FM, cache=True)
def _axpy_rows(x, w, y, lo, hi):
    """y[lo:hi] = sum_k x[k] * w[k, lo:hi], four rows of w per pass over y's band."""
    K = w.shape[0]
    yb = y[lo:hi]
    yb[:] = 0
    K4 = K - K % 4
    # for each group of 4 rows k .. k+3: yb += x_k w_k + ... + x_k+3 w_k+3   (sliced rows: see _abt)
    for k in range(0, K4, 4):
        w0, w1, w2, w3 = w[k, lo:hi], w[k + 1, lo:hi], w[k + 2, lo:hi], w[k + 3, lo:hi]
        x0, x1, x2, x3 = x[k], x[k + 1], x[k + 2], x[k + 3]
        for j in range(hi - lo):
            yb[j] += x0 * w0[j] + x1 * w1[j] + x2 * w2[j] + x3 * w3[j]
    for k in range(K4, K):
        wk, xk = w[k, lo:hi], x[k]
        for j in range(hi - lo):
            yb[j] += xk * wk[j]


@njit(parallel=True, cache=True)
def _row_times_rows(x, w, y, band):
    """y = x @ w, w (K, N) C-contiguous: one task per band of columns."""
    N = w.shape[1]
    # for each band of columns, in parallel
    for t in prange((N + band - 1) // band):
        _axpy_rows(x, w, y, t * band, min(N, t * band + band))


@njit(parallel=True, fastmath=_FM, cache=True)
def _rows_times_row(e, x, y):
    """y = e @ x, e (N, K) C-contiguous: one dot product per row of e, the rows split among threads."""
    # for each row of e, in parallel
    for n in prange(e.shape[0]):
        y[n] = _dot(e[n], x)


def row_times_matrix(x: np.ndarray, w: np.ndarray) -> np.ndarray | None:
    """x @ w for x (1, K) and a 2-D w laid out (K, N) row-major or (N, K) row-major transposed
    (w = E.T); None when w is neither (the caller then uses BLAS). Returns (1, N)."""
    out = np.empty((1, w.shape[1]), dtype=x.dtype)
    row = np.ascontiguousarray(x[0])
    if w.flags.c_contiguous:
        _row_times_rows(row, w, out[0], COLUMN_BAND)
    elif w.flags.f_contiguous:
        _rows_times_row(w.T, row, out[0])
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
    below PARALLEL_FROM cached numbers (every GPT-2 decode), else one (batch, head) per task. More
    queries (a prompt, once) go to the general kernel, which copies the filled part.
    """
    reference.check_attention_decode_args(q, k_cache, v_cache, length)
    B, H, Tq, D = q.shape
    if Tq != 1 or not (k_cache.flags.c_contiguous and v_cache.flags.c_contiguous):
        out, _ = attention_forward(q, k_cache[:, :, :length], v_cache[:, :, :length], causal=True)
        return out
    out = np.empty_like(q)
    attend = _attend_heads_parallel if B * H * length * D >= PARALLEL_FROM else _attend_heads
    attend(np.ascontiguousarray(q), k_cache, v_cache, length, 1.0 / math.sqrt(D), out)
    return out
