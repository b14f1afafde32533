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
Tq = Tk), its block products are BLAS's own (blas.py's `_gemm`: OpenBLAS's small-matrix kernels,
~4x the speed of gemm.py's Numba loop nests on a 64 x 64 x 64 block), and its blocks are held
transposed (keys down, queries across), so that the softmax's per-query sums and maxima are
vector operations along a row instead of sums across SIMD lanes (results/threads.md).
dropout_p > 0 goes to the reference: dropping probabilities needs them materialised.

Why one file: attention_forward chooses between the two paths and attention_backward follows
the cache's type; the paths share the masks' helpers, and a reader compares them side by side.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .. import reference
from ..reference import FlashAttentionCache, SoftmaxAttentionCache
from .blas import GEMM_SERIAL_MNK, _gemm
from .gemm import _dot
from .intrinsics import _FM, _exp_nonpos, _maxnum

# Block sizes (query rows x keys), forward and backward: at most these, and fewer for a head
# size over 64, so that each block product stays on the calling thread (_block_sizes).
ATTN_BR = 64          # queries per block
ATTN_BC = 64          # keys per block
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
def _first_query(j, i0, mi, Tq, Tk, causal):
    """The first row r of a query block (queries i0 .. i0+mi-1) that may see key j: causal, query
    i sees key j when j <= i + (Tk - Tq); otherwise every row does."""
    return min(max(j - (Tk - Tq) - i0, 0), mi) if causal else 0


@njit(fastmath=_FM, cache=True)
def _flash_forward_head(q, k, v, bias, causal, scale, out, lse, br, bc):
    """One head: out = softmax(q k^T * scale + mask) v, walking key blocks with an online softmax.

    q: (Tq, D), k, v: (Tk, D), bias: (Tk,) 0 or -inf; writes out: (Tq, D) and lse: (Tq,).
    Per query block only a score block, an accumulator and a few rows of br numbers are kept.

    The blocks are held transposed, keys down and queries across: S^T = K_j Q_i^T, and the
    accumulator as acc^T (D, br). Then every per-query quantity (the running max m, the sum l,
    the rescaling factor) is a row of br numbers, and each step of the softmax is one vector
    operation along a row of S^T; a query-major block would need a sum across SIMD lanes per
    row instead. Both products are plain ones on packed operands, as BLAS runs them fastest.
    """
    Tq, D = q.shape
    Tk = k.shape[0]
    qt = _transposed(q)                            # (D, Tq): S^T = K_j Q_i^T is a plain product
    vt = _transposed(v)                            # (D, Tk): acc^T += V_j^T P^T too
    st = np.empty((bc, br), dtype=q.dtype)         # S^T, then P^T, of one block
    acct = np.empty((D, br), dtype=q.dtype)        # unnormalised outputs, transposed: sum_j v_j p_ij
    m = np.empty(br, dtype=q.dtype)                # running max of each query's scores
    l = np.empty(br, dtype=q.dtype)                # running sum of exp(s - m) of each query  # noqa: E741
    mb = np.empty(br, dtype=q.dtype)               # this block's max, then exp(m_old - m_new)
    lb = np.empty(br, dtype=q.dtype)               # this block's sum of exp(s - m_new)
    # for each query block Q_i = q[i0:i1]
    for i0 in range(0, Tq, br):
        i1 = min(i0 + br, Tq)
        mi = i1 - i0
        m[:] = -np.inf
        l[:] = 0
        acct[:, :mi] = 0
        kend = _visible(i1 - 1, Tq, Tk, causal, Tk)   # keys past kend are hidden from the whole block
        # for each key block K_j, V_j = k[j0:j1], v[j0:j1] that some query of the block may see
        for j0 in range(0, kend, bc):
            j1 = min(j0 + bc, kend)
            nj = j1 - j0
            # S^T = K_j Q_i^T                                   (nj, D) @ (D, mi)
            _gemm(k[j0:j1], qt[:, i0:i1], st[:nj, :mi], 0.0)
            # P^T = exp(S^T * scale + mask - m_new), with the running max and sum updated
            _online_softmax_block(st, nj, mi, bias[j0:j1], scale, j0, i0, Tq, Tk, causal, m, l, mb, lb,
                                  acct)
            # acc^T += V_j^T P^T                                (D, nj) @ (nj, mi)
            _gemm(vt[:, j0:j1], st[:nj, :mi], acct[:, :mi], 1.0)
        _finish_columns(acct[:, :mi], m, l, out[i0:i1], lse[i0:i1])


@njit(fastmath=_FM, cache=True)
def _online_softmax_block(st, nj, mi, bias, scale, j0, i0, Tq, Tk, causal, m, l, mb, lb, acct):  # noqa: E741
    """One key block of the online softmax, in place: st[:nj, :mi] holds S^T and leaves as P^T,

        s = S^T * scale + mask;  m_new = max(m, max over the block's keys);
        P^T = exp(s - m_new);  l = l exp(m - m_new) + sum over the keys;  acc^T *= exp(m - m_new)

    (0 for a query that has seen no key yet). mb, lb: scratch rows of mi numbers. The whole
    arrays are passed, not st[:nj, :mi]: Numba knows a whole C array's rows are contiguous, and
    only then vectorises the loops along them."""
    dt = st.dtype.type
    mb[:mi] = -np.inf
    # s = S^T * scale + mask, and each query's max over the block
    for c in range(nj):
        r0 = _first_query(j0 + c, i0, mi, Tq, Tk, causal)
        st[c, :r0] = -np.inf                              # key j0+c is in their future
        # views, so that the loop runs from 0 (see gemm.py's _abt: it then vectorises)
        s_c, m_c, b = st[c, r0:mi], mb[r0:mi], bias[c]
        for r in range(mi - r0):
            x = s_c[r] * dt(scale) + b
            s_c[r] = x
            m_c[r] = _maxnum(m_c[r], x)
    # m_new = max(m, block max);  alpha = exp(m - m_new) rescales what was summed so far
    for r in range(mi):
        m_new = _maxnum(m[r], mb[r])
        mb[r] = _exp_nonpos(m[r] - m_new) if m_new > -np.inf else dt(1)
        m[r] = m_new
        lb[r] = 0
    # P^T = exp(s - m_new) (0 while a query has seen no key), and each query's sum
    for c in range(nj):
        for r in range(mi):
            x = _exp_nonpos(st[c, r] - m[r]) if m[r] > -np.inf else dt(0)
            st[c, r] = x
            lb[r] += x
    for r in range(mi):
        l[r] = l[r] * mb[r] + lb[r]
    for d in range(acct.shape[0]):
        for r in range(mi):
            acct[d, r] *= mb[r]


@njit(fastmath=_FM, cache=True)
def _finish_columns(acct, m, l, out, lse):  # noqa: E741
    """out_i = acc_i / l_i (acc held transposed);  lse_i = m_i + log(l_i)   (a query that saw no
    key: out = 0, lse = -inf)."""
    dt = acct.dtype.type
    for r in range(out.shape[0]):
        if l[r] > 0:
            inv = dt(1) / l[r]
            for d in range(acct.shape[0]):
                out[r, d] = acct[d, r] * inv
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


@njit(fastmath=_FM, cache=True)
def _flash_backward_head(q, k, v, out, dout, lse, bias, causal, scale, dq, dk, dv, br, bc):
    """One head's gradients, recomputing the probabilities block by block from the row lse.

    dq, dk, dv: (T, D) outputs, written here. FlashAttention-2 order: key blocks outside, query
    blocks inside, so dK_j and dV_j add up in place over the query blocks while dQ_i collects a
    term from every key block. The blocks are transposed as in the forward (keys down, queries
    across: S^T, dP^T, then P^T, dS^T in their place), which makes P^T and dS^T the operands of
    dV_j and dK_j as they are, dQ^T a plain product too, and each step of the softmax backward
    one vector operation along a row.
    """
    Tq, D = q.shape
    Tk = k.shape[0]
    qt = _transposed(q)                      # (D, Tq)  packed: every product below is a plain one
    dot = _transposed(dout)                  # (D, Tq)
    kt = _transposed(k)                      # (D, Tk)
    dqt = np.zeros((D, qt.shape[1]), dtype=q.dtype)   # dQ^T, added into over the key blocks
    # D_i = rowsum(dout_i * out_i) = sum_j p_ij dp_ij: the softmax backward's subtracted term;
    # a query that sees no key gets lse = +inf here, so that its P = exp(s - lse) is 0
    delta = np.empty(Tq, dtype=q.dtype)
    lse_p = np.empty(Tq, dtype=q.dtype)
    for i in range(Tq):
        delta[i] = _dot(dout[i], out[i])
        lse_p[i] = lse[i] if lse[i] > -np.inf else np.inf
    st = np.empty((bc, br), dtype=q.dtype)    # S^T, then P^T, of one block
    dst = np.empty((bc, br), dtype=q.dtype)   # dP^T, then dS^T
    dk[:] = 0
    dv[:] = 0
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
            # S^T = K_j Q_i^T;  dP^T = V_j dO_i^T              (nj, D) @ (D, mi) each
            _gemm(k[j0:j1], qt[:, i0:i1], st[:nj, :mi], 0.0)
            _gemm(v[j0:j1], dot[:, i0:i1], dst[:nj, :mi], 0.0)
            # P = exp(S * scale + mask - lse_i);  dS = P * (dP - D_i) * scale
            _softmax_backward_block(st, dst, nj, mi, bias[j0:j1], scale, lse_p[i0:i1], delta[i0:i1],
                                    j0, i0, Tq, Tk, causal)
            # dV_j += P^T dO_i;  dK_j += dS^T Q_i            (nj, mi) @ (mi, D) each
            _gemm(st[:nj, :mi], dout[i0:i1], dv[j0:j1], 1.0)
            _gemm(dst[:nj, :mi], q[i0:i1], dk[j0:j1], 1.0)
            # dQ_i^T += K_j^T dS^T                             (D, nj) @ (nj, mi)
            _gemm(kt[:, j0:j1], dst[:nj, :mi], dqt[:, i0:i1], 1.0)
    for i in range(Tq):
        for d in range(D):
            dq[i, d] = dqt[d, i]


@njit(fastmath=_FM, cache=True)
def _softmax_backward_block(st, dst, nj, mi, bias, scale, lse, delta, j0, i0, Tq, Tk, causal):
    """In place on one block, transposed (keys down, queries across): st[:nj, :mi] holds S^T and
    leaves as P^T = exp(S^T * scale + mask - lse), dst holds dP^T and leaves as
    dS^T = P^T (dP^T - D) scale. (Whole arrays passed: see _online_softmax_block.)"""
    dt = st.dtype.type
    for c in range(nj):
        r0 = _first_query(j0 + c, i0, mi, Tq, Tk, causal)
        st[c, :r0] = 0                                     # key j0+c is in their future
        dst[c, :r0] = 0
        # views, so that the loop runs from 0 (see gemm.py's _abt: it then vectorises)
        p_c, ds_c, b, lse_c, delta_c = st[c, r0:mi], dst[c, r0:mi], bias[c], lse[r0:mi], delta[r0:mi]
        for r in range(mi - r0):
            x = _exp_nonpos(p_c[r] * dt(scale) + b - lse_c[r])
            p_c[r] = x
            # P = 1: the query sees this key alone, D_i = dP_ij and dS = 0 (only rounding
            # would differ: BLAS sums dP in its own order), exactly 0 as in the reference
            ds_c[r] = x * (ds_c[r] - delta_c[r]) * dt(scale) if x != 1 else dt(0)


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
        for c in range(nv):
            s[i, c] = s[i, c] * dt(scale) + bias[c]
        mx = dt(-np.inf)
        for c in range(nv):            # a loop of its own: with the stores above it stays scalar
            mx = _maxnum(mx, s[i, c])
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


def _block_sizes(D: int) -> tuple[int, int]:
    """(queries, keys) per block: ATTN_BR x ATTN_BC, fewer keys (then queries) for a head size
    over 64, so that every block product, br x bc x D multiply-adds, is at most GEMM_SERIAL_MNK:
    OpenBLAS then runs it on the calling thread (blas.py), inside this kernel's parallel tasks."""
    bc = min(ATTN_BC, max(1, GEMM_SERIAL_MNK // (ATTN_BR * max(D, 1))))
    br = min(ATTN_BR, max(1, GEMM_SERIAL_MNK // (bc * max(D, 1))))
    return br, bc


def _attention_forward_fused(q, k, v, causal, key_bias):
    B, H, Tq, D = q.shape
    scale = 1.0 / math.sqrt(D)
    out = np.empty((B, H, Tq, D), dtype=q.dtype)
    lse = np.empty((B, H, Tq), dtype=q.dtype)
    if out.size:
        _flash_forward(q, k, v, key_bias, causal, scale, out, lse, *_block_sizes(D))
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
                        *_block_sizes(q.shape[-1]))
    else:
        dq[:] = 0
        dk[:] = 0
        dv[:] = 0
    return dq, dk, dv
