"""Attention on the CPU: FlashAttention for long sequences, BLAS around a softmax for short ones.

Both paths have the reference's semantics (reference.attention_forward) and are tested equal to it:

    fused (Tk >= ATTN_FUSED_FROM_TK)  FlashAttention, one (batch, head) per parallel task: key
                   blocks walked with an online softmax, so no (Tq, Tk) matrix is ever held; the
                   cache keeps one log-sum-exp per query row (FlashAttentionCache), and the
                   backward recomputes the probabilities block by block from it
    short (Tk < ATTN_FUSED_FROM_TK)   batched BLAS products around a Numba softmax, keeping the
                   (Tq, Tk) probabilities (SoftmaxAttentionCache): for short sequences the
                   matrices are small and BLAS's products beat the fused kernel's

Why the fused kernel is fast: its memory is linear in T (the scores of one 64 x 64 block at a
time, in L1), causal blocks wholly in a query block's future are skipped (half the work at
Tq = Tk), and its products are the two loop orders of gemm.py, each where it wins: `_ab` for the
short sums over a head or a key block, `_abt` for the backward's long sums over all the queries.
dropout_p > 0 goes to the reference: dropping probabilities needs them materialised.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .. import reference
from ..reference import FlashAttentionCache, SoftmaxAttentionCache
from .gemm import _ab, _abt, _dot
from .intrinsics import _FM, _exp_nonpos

# Block sizes (query rows x keys): 32 to 256 measured alike (benchmarks/results/threads.md).
ATTN_BR = 64          # forward: queries per block
ATTN_BC = 64          # forward: keys per block
ATTN_BWD_BR = 64      # backward: queries per block
ATTN_BWD_BC = 64      # backward: keys per block (and rows of the P^T, dS^T strips)
# Below this many keys, attention_forward takes batched BLAS products around a Numba softmax
# instead of the fused kernel: faster there (see attention_forward).
ATTN_FUSED_FROM_TK = 96


@njit(fastmath=_FM, cache=True)
def _visible(i, Tq, Tk, causal, nkeys):
    """How many of the first keys query i may see: all, or (causal) keys j <= i + (Tk - Tq)."""
    return min(nkeys, i + (Tk - Tq) + 1) if causal else nkeys


@njit(cache=True)
def _row_length(n, itemsize):
    """A row length >= n whose byte stride is not a multiple of 512: rows 4 KiB apart (T = 1024
    float32) all fall in the same L1 cache sets and evict each other; one cache line more avoids it."""
    return n + 64 // itemsize if (n * itemsize) % 512 == 0 else n


@njit(fastmath=_FM, cache=True)
def _transposed(x):
    """x^T packed into a new array (S, R') whose first R columns are used (R' = _row_length(R))."""
    R, S = x.shape
    y = np.empty((S, _row_length(R, x.itemsize)), dtype=x.dtype)
    for r in range(R):
        for c in range(S):
            y[c, r] = x[r, c]
    return y


@njit(fastmath=_FM, cache=True)
def _flash_forward_head(q, k, v, bias, causal, scale, out, lse, br, bc):
    """One head: out = softmax(q k^T * scale + mask) v, walking key blocks with an online softmax.

    q: (Tq, D), k, v: (Tk, D), bias: (Tk,) 0 or -inf; writes out: (Tq, D) and lse: (Tq,).
    Per query block only a (br, bc) score block, (br, D) accumulator and two (br,) rows are kept.
    """
    Tq, D = q.shape
    Tk = k.shape[0]
    dt = q.dtype.type
    kt = _transposed(k)                            # (D, Tk): k packed so a block's keys are contiguous
    s = np.empty((br, bc), dtype=q.dtype)          # scores, then probabilities, of one block
    acc = np.empty((br, D), dtype=q.dtype)         # unnormalised output rows: sum_j p_ij v_j
    m = np.empty(br, dtype=q.dtype)                # running max of each row's scores
    l = np.empty(br, dtype=q.dtype)                # running sum of exp(s - m) of each row  # noqa: E741
    # for each query block Q_i = q[i0:i1]
    for i0 in range(0, Tq, br):
        i1 = min(i0 + br, Tq)
        mi = i1 - i0
        m[:] = -np.inf
        l[:] = 0
        acc[:] = 0
        kend = _visible(i1 - 1, Tq, Tk, causal, Tk)   # keys past kend are hidden from the whole block
        # for each key block K_j, V_j = k[j0:j1], v[j0:j1] that some query of the block may see
        for j0 in range(0, kend, bc):
            j1 = min(j0 + bc, kend)
            nj = j1 - j0
            # S = Q_i K_j^T                                     (mi, D) @ (D, nj)
            _ab(q[i0:i1], 0, kt, j0, D, nj, s, False)
            # for each row: m_new = max(m, max_j s);  p = exp(s - m_new);  l = l e^(m - m_new) + sum_j p
            for r in range(mi):
                nv = _visible(i0 + r, Tq, Tk, causal, j1) - j0      # keys j0 .. j0+nv-1 are not causal-hidden
                mx = dt(-np.inf)
                for c in range(max(nv, 0)):
                    x = s[r, c] * dt(scale) + bias[j0 + c]
                    s[r, c] = x
                    mx = max(mx, x)
                m_new = max(m[r], mx)
                if m_new == -np.inf:                                  # nothing visible yet: p = 0
                    s[r, :nj] = 0
                    continue
                alpha = _exp_nonpos(m[r] - m_new)                     # rescales what was summed so far
                total = dt(0)
                for c in range(max(nv, 0)):
                    p = _exp_nonpos(s[r, c] - m_new)
                    s[r, c] = p
                    total += p
                s[r, max(nv, 0):nj] = 0
                l[r] = l[r] * alpha + total
                m[r] = m_new
                for d in range(D):
                    acc[r, d] *= alpha
            # acc += P V_j                                      (mi, nj) @ (nj, D)
            _ab(s[:mi], 0, v[j0:j1], 0, nj, D, acc, True)
        _finish_rows(acc[:mi], m, l, out[i0:i1], lse[i0:i1])


@njit(fastmath=_FM, cache=True)
def _finish_rows(acc, m, l, out, lse):  # noqa: E741
    """out_i = acc_i / l_i;  lse_i = m_i + log(l_i)   (a row that saw no key: out = 0, lse = -inf)."""
    dt = acc.dtype.type
    for r in range(acc.shape[0]):
        if l[r] > 0:
            inv = dt(1) / l[r]
            for d in range(acc.shape[1]):
                out[r, d] = acc[r, d] * inv
            lse[r] = m[r] + math.log(l[r])
        else:
            out[r, :] = 0
            lse[r] = -np.inf


@njit(parallel=True, cache=True)
def _flash_forward(q, k, v, key_bias, causal, scale, out, lse, br, bc):
    B, H = q.shape[0], q.shape[1]
    # for each (batch, head), in parallel: one independent FlashAttention forward
    for t in prange(B * H):
        b, h = t // H, t % H
        _flash_forward_head(q[b, h], k[b, h], v[b, h], key_bias[b], causal, scale,
                            out[b, h], lse[b, h], br, bc)


@njit(fastmath={"contract"}, cache=True)
def _dot_in_order(a, b):
    """A dot product summed strictly left to right, in the order `_ab` sums dP = dO V^T: where a
    row sees a single key, out = v exactly and dS = P (dP - D) must come out exactly 0."""
    s = a.dtype.type(0)
    for p in range(a.shape[0]):
        s += a[p] * b[p]
    return s


@njit(fastmath=_FM, cache=True)
def _flash_backward_head(q, k, v, out, dout, lse, bias, causal, scale, dq, dk, dv, br, bc):
    """One head's gradients, recomputing the probabilities block by block from the row lse.

    dq, dk, dv: (T, D) outputs, zeroed here. FlashAttention-2 order: key blocks outside, query
    blocks inside. For one key block the P^T and dS^T of every query are kept, as a (bc, Tq)
    strip (linear in T), so that dV_j and dK_j are each one product summed over all the queries:
    a long sum keeps the 4 x 4 tiles busy, where a 64-long one spends half its time adding up
    the SIMD lanes.
    """
    Tq, D = q.shape
    Tk = k.shape[0]
    dt = q.dtype.type
    kt = _transposed(k)                     # (D, Tk)  packs, so that each operand below is read
    vt = _transposed(v)                     # (D, Tk)  along its rows
    qt = _transposed(q)                     # (D, Tq)
    dot = _transposed(dout)                 # (D, Tq)
    # D_i = rowsum(dout_i * out_i) = sum_j p_ij dp_ij: the softmax backward's subtracted term
    delta = np.empty(Tq, dtype=q.dtype)
    for i in range(Tq):
        delta[i] = _dot_in_order(dout[i], out[i])
    p = np.empty((br, bc), dtype=q.dtype)    # P_ij of one block
    ds = np.empty((br, bc), dtype=q.dtype)   # dP_ij, then dS_ij in place
    pt = np.empty((bc, _row_length(Tq, q.itemsize)), dtype=q.dtype)    # P_:j^T for every query:
    dst = np.empty((bc, _row_length(Tq, q.itemsize)), dtype=q.dtype)   # the strip of key block j; dS^T
    dq[:] = 0
    # for each key block K_j, V_j = k[j0:j1], v[j0:j1]
    for j0 in range(0, Tk, bc):
        j1 = min(j0 + bc, Tk)
        nj = j1 - j0
        # the queries that see some key of the block (causal: from query j0 - (Tk - Tq) on)
        istart = 0
        if causal:
            istart = max(0, j0 - (Tk - Tq)) // br * br
        # for each query block Q_i = q[i0:i1] of them
        for i0 in range(istart, Tq, br):
            i1 = min(i0 + br, Tq)
            mi = i1 - i0
            # S = Q_i K_j^T;  dP = dO_i V_j^T                  (mi, D) @ (D, nj) each
            _ab(q[i0:i1], 0, kt, j0, D, nj, p, False)
            _ab(dout[i0:i1], 0, vt, j0, D, nj, ds, False)
            # P = exp(S * scale + mask - lse_i);  dS = P * (dP - D_i) * scale
            for r in range(mi):
                i = i0 + r
                nv = _visible(i, Tq, Tk, causal, j1) - j0
                nv = max(nv, 0) if lse[i] > -np.inf else 0          # a row with no visible key: 0
                for c in range(nv):
                    x = _exp_nonpos(p[r, c] * dt(scale) + bias[j0 + c] - lse[i])
                    p[r, c] = x
                    ds[r, c] = x * (ds[r, c] - delta[i]) * dt(scale)
                for c in range(nv, nj):
                    p[r, c] = 0
                    ds[r, c] = 0
                for c in range(nj):
                    pt[c, i] = p[r, c]
                    dst[c, i] = ds[r, c]
            # dQ_i += dS K_j                                     (mi, nj) @ (nj, D)
            _ab(ds[:mi], 0, k[j0:j1], 0, nj, D, dq[i0:i1], True)
        # dV_j = P_:j^T dO;  dK_j = dS_:j^T Q        (nj, Tq - istart) @ (Tq - istart, D)
        _abt(pt[:nj], istart, dot, istart, Tq - istart, dv[j0:j1], False)
        _abt(dst[:nj], istart, qt, istart, Tq - istart, dk[j0:j1], False)


@njit(parallel=True, cache=True)
def _flash_backward(q, k, v, out, dout, lse, key_bias, causal, scale, dq, dk, dv, br, bc):
    B, H = q.shape[0], q.shape[1]
    # for each (batch, head), in parallel: one independent FlashAttention backward
    for t in prange(B * H):
        b, h = t // H, t % H
        _flash_backward_head(q[b, h], k[b, h], v[b, h], out[b, h], dout[b, h], lse[b, h],
                             key_bias[b], causal, scale, dq[b, h], dk[b, h], dv[b, h], br, bc)


@njit(fastmath=_FM, cache=True)
def _softmax_head(s, bias, causal, scale):
    """In place, each row of one head's scores: s <- softmax(s * scale + mask); a hidden-only row -> 0."""
    Tq, Tk = s.shape
    dt = s.dtype.type
    # for each query row i: x = s * scale + bias over its visible keys, m = max x, p = exp(x - m) / sum
    for i in range(Tq):
        nv = _visible(i, Tq, Tk, causal, Tk)
        mx = dt(-np.inf)
        for c in range(nv):
            x = s[i, c] * dt(scale) + bias[c]
            s[i, c] = x
            mx = max(mx, x)
        if mx == -np.inf:
            s[i, :] = 0
            continue
        total = dt(0)
        for c in range(nv):
            p = _exp_nonpos(s[i, c] - mx)
            s[i, c] = p
            total += p
        inv = dt(1) / total
        for c in range(nv):
            s[i, c] *= inv
        s[i, nv:] = 0


@njit(cache=True)
def _softmax_heads(s, key_bias, causal, scale):
    """On the calling thread, on purpose: OpenBLAS's worker threads spin for a while after each
    product, and a parallel softmax right after one waits for the core they hold (it measured
    slower than this serial loop at every short T this path serves: results/threads.md)."""
    B, H = s.shape[0], s.shape[1]
    # for each (batch, head)
    for t in range(B * H):
        _softmax_head(s[t // H, t % H], key_bias[t // H], causal, scale)


@njit(fastmath=_FM, cache=True)
def _softmax_backward_head(att, datt, scale):
    """In place: datt <- att * (datt - sum_k(datt * att)) * scale, row by row."""
    dt = att.dtype.type
    for i in range(att.shape[0]):
        dot = _dot(datt[i], att[i])
        for c in range(att.shape[1]):
            datt[i, c] = att[i, c] * (datt[i, c] - dot) * dt(scale)


@njit(cache=True)
def _softmax_backward_heads(att, datt, scale):
    B, H = att.shape[0], att.shape[1]
    # for each (batch, head), on the calling thread (see _softmax_heads)
    for t in range(B * H):
        _softmax_backward_head(att[t // H, t % H], datt[t // H, t % H], scale)


def _attention_forward_blas(q, k, v, causal, key_bias):
    """s = q k^T (BLAS); att = softmax(s * scale + mask) (Numba, in place); out = att v (BLAS)."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    att = np.matmul(q, k.transpose(0, 1, 3, 2))                   # (B, H, Tq, Tk)
    _softmax_heads(att, key_bias, causal, scale)
    return np.matmul(att, v), SoftmaxAttentionCache(q, k, v, att, scale)


def _attention_backward_blas(dout, cache):
    q, k, v, att, scale = cache
    # forward: out = att @ v
    dv = np.matmul(att.transpose(0, 1, 3, 2), dout)               # (B, H, Tk, D)
    ds = np.matmul(dout, v.transpose(0, 1, 3, 2))                 # datt: (B, H, Tq, Tk)
    # forward: att = softmax(s * scale + mask)   ->  ds = att * (datt - rowsum(datt * att)) * scale
    _softmax_backward_heads(att, ds, scale)
    # forward: s = q @ k^T
    return np.matmul(ds, k), np.matmul(ds.transpose(0, 1, 3, 2), q), dv


def attention_forward(q, k, v, causal=True, key_pad=None, dropout_p=0.0, rng=None):
    """Scaled dot-product attention, fused (FlashAttention), with the reference's semantics.

        s = q @ k^T / sqrt(D) + mask;  att = softmax(s);  out = att @ v      (see reference.py)

    The forward walks the keys in blocks of ATTN_BC for each block of ATTN_BR queries, keeping a
    running max m and sum l per query row (online softmax): when a block raises the max, what was
    summed so far is rescaled by exp(m_old - m_new). So it never holds a (Tq, Tk) matrix: its
    extra memory is linear in T, and its cache is FlashAttentionCache with the row log-sum-exp
    lse = m + log(l) in place of the probabilities. Causal blocks wholly in a query block's future
    are skipped (half the work at Tq = Tk).

    Which path, by shape (benchmarks/bench_attention.py; figures in benchmarks/results/):
      - Tk < ATTN_FUSED_FROM_TK = 96 keys: batched BLAS products around a Numba softmax
        (`_attention_forward_blas`, cache SoftmaxAttentionCache, (Tq, Tk) probabilities kept):
        the (T, T) matrices are small there and BLAS's products are single-threaded, about
        twice as fast as the fused kernel for the baby GPT's T = 64.
      - from 96 keys on: the fused kernel, faster than the BLAS path (whose products go
        multi-threaded, and whose spinning workers stall the softmax) and with a peak memory
        linear in T where the BLAS path's is quadratic.

    dropout_p > 0 goes to reference.attention_forward: dropping probabilities needs them
    materialised, which is what this kernel avoids. attention_backward follows the cache's type.
    """
    reference.check_attention_args(q, k, v, key_pad, causal)       # before any compiled code runs
    if dropout_p > 0:
        return reference.attention_forward(q, k, v, causal, key_pad, dropout_p, rng)
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    q, k, v = (np.ascontiguousarray(t) for t in (q, k, v))        # per-head tiles must be contiguous
    key_bias = reference.key_bias(key_pad, B, Tk, q.dtype)
    if Tk < ATTN_FUSED_FROM_TK:
        return _attention_forward_blas(q, k, v, bool(causal), key_bias)
    return _attention_forward_fused(q, k, v, bool(causal), key_bias)


def _attention_forward_fused(q, k, v, causal, key_bias):
    B, H, Tq, D = q.shape
    scale = 1.0 / math.sqrt(D)
    out = np.empty((B, H, Tq, D), dtype=q.dtype)
    lse = np.empty((B, H, Tq), dtype=q.dtype)
    if out.size:
        _flash_forward(q, k, v, key_bias, causal, scale, out, lse, ATTN_BR, ATTN_BC)
    else:
        lse[:] = -np.inf
    return out, FlashAttentionCache(q, k, v, out, lse, key_bias, causal, scale)


def attention_backward(dout, cache):
    """Gradients (dq, dk, dv) of attention_forward, for either kind of cache it returns.

    FlashAttentionCache: the fused backward. For each (key block j, query block i) it recomputes
        P = exp(S * scale + mask - lse)                       (from the stored row lse)
        dV_j += P^T dO_i,   dP = dO_i V_j^T,   dS = P * (dP - D_i) * scale,
        dQ_i += dS K_j,     dK_j += dS^T Q_i,     with D_i = rowsum(dO_i * O_i) computed once
    (D_i equals sum_j P_ij dP_ij, the term the softmax backward subtracts). A reference
    AttentionCache (dropout_p > 0) goes to reference.attention_backward.
    """
    if isinstance(cache, reference.AttentionCache):
        return reference.attention_backward(dout, cache)
    if not isinstance(cache, (FlashAttentionCache, SoftmaxAttentionCache)):
        raise TypeError(f"attention_backward: cache is {type(cache).__name__}: expected the cache "
                        f"returned by attention_forward")
    want = cache.q.shape
    if not isinstance(dout, np.ndarray) or dout.shape != want or dout.dtype != cache.q.dtype:
        raise ValueError(f"attention_backward: dout has shape {getattr(dout, 'shape', None)} and dtype "
                         f"{getattr(dout, 'dtype', None)}: expected {want} {cache.q.dtype}")
    dout = np.ascontiguousarray(dout)
    if isinstance(cache, SoftmaxAttentionCache):
        return _attention_backward_blas(dout, cache)
    q, k, v, out, lse, key_bias, causal, scale = cache
    dq = np.empty_like(q)
    dk = np.empty_like(k)
    dv = np.empty_like(v)
    if q.size and k.size:
        _flash_backward(q, k, v, out, dout, lse, key_bias, causal, scale, dq, dk, dv,
                        ATTN_BWD_BR, ATTN_BWD_BC)
    else:
        dq[:] = 0
        dk[:] = 0
        dv[:] = 0
    return dq, dk, dv
