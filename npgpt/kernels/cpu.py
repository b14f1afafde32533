"""The Numba backend: the hot kernels compiled with @njit, parallel over 2+ cores, cached on disk.

Every function here has the signature and the semantics of its twin in kernels/reference.py and
is tested equal to it (tests/kernels/test_cpu_kernels.py). What is here, and why it is faster:

    gemm(a, b)                 a blocked, register-tiled matrix product, written to be studied
    matmul(a, b)               the reference's matmul; BLAS (np.matmul) or gemm, by measured shape
    attention_forward(...)     FlashAttention: key blocks walked with an online softmax; the cache
    attention_backward(...)    keeps a row log-sum-exp (B, H, Tq), never a (Tq, Tk) matrix
    erf(x)                     math.erf over all cores, instead of one Python call per element
    warmup(dtypes)             compiles every kernel now and says how long each took

Two loop orders for a product, each where it wins (the surprise a reader should take away):
    `_abt`  C = A @ B^T with rows of A and of B contiguous along the summed index: the inner loop
            is a dot product, and a 4 x 4 tile of C stays in registers (`_tile4x4`). It wins for
            long sums (the GEMM; attention's dV, dK summed over all queries).
    `_ab`   C = A @ B, the inner loop along a row of C and of B ("axpy"): no sums across SIMD
            lanes at the end, but C's rows go through L1 at every step. It wins for short sums
            (attention's head size, a 64-key block): 45 vs 28 GFLOP/s on one core at 64^3.
Where an operand is laid out the other way it is first copied transposed ("packed"), at a cost
linear in its size.

Threads. Numba's parallel loops run on OpenMP (the "omp" threading layer) here; numpy's BLAS
(OpenBLAS) keeps its own threads. On a 2-core machine each pool's idle threads spin while the
other works: an earlier measurement found attention's mix of BLAS and Numba calls 3x slower.
Set below, before Numba starts its threads: OMP_WAIT_POLICY=PASSIVE (idle OpenMP threads sleep
at once). It is `os.environ.setdefault`, so a value the user exported wins; conftest.py sets
PASSIVE for the tests too. Measured on a BLAS-attention-BLAS step (T=256, loaded machine):
omp + PASSIVE ~260 ms, omp spinning (ACTIVE) ~310 ms, NUMBA_THREADING_LAYER=workqueue ~245 ms,
within noise of PASSIVE; workqueue may not be entered from two Python threads at once, so it is
left for the user to choose. OpenBLAS's own workers still spin for a while after each product,
which nothing set from here can change (OpenBLAS reads its settings when numpy loads it, and
OPENBLAS_THREAD_TIMEOUT=4 measured far worse): so the short-sequence attention path runs its
softmax on the calling thread, and a Numba kernel launched right after a large BLAS product can
lose a core for a few milliseconds. PyTorch ships its own OpenMP runtime, which reads the
environment when torch is imported: benchmarks/common.py imports torch before npgpt, so torch
keeps the settings it would have on its own.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")   # before numba's OpenMP layer starts: see above

import math  # noqa: E402
import time  # noqa: E402
from typing import NamedTuple  # noqa: E402

import numpy as np  # noqa: E402

from . import reference  # noqa: E402

__all__ = ["matmul", "gemm", "attention_forward", "attention_backward", "erf", "warmup"]

import numba  # noqa: E402
from llvmlite import ir  # noqa: E402
from numba import njit, prange, types  # noqa: E402
from numba.extending import intrinsic, overload  # noqa: E402

# fastmath: only reassociation (so a sum may be split over SIMD lanes) and fused multiply-add.
# No "nnan"/"ninf": the attention masks are -inf and must stay so. The reference tests pass with it.
_FM = {"reassoc", "contract"}


def check_available() -> None:
    """Raise if Numba cannot run here (the registry then falls back to the NumPy reference)."""
    njit(lambda x: x + 1)(1)


# ---------------------------------------------------------------------------------------------
# The micro-kernel: a 4 x 4 tile of C = A @ B^T kept in registers
# ---------------------------------------------------------------------------------------------

@njit(fastmath=_FM, cache=True)
def _tile4x4(a0, a1, a2, a3, b0, b1, b2, b3):
    """The 16 dot products of four rows of A with four rows of B (all 1-D, contiguous, one length).

    Register blocking: the 16 sums live in registers for the whole loop. Each step loads 4 + 4
    numbers and does 16 multiply-adds, so the loop is bound by arithmetic, not by memory. LLVM
    vectorises it across p (16 float32 lanes with AVX-512): each sum becomes a vector of partial
    sums, added up once at the end (that reordering is why fastmath "reassoc" is on).
    """
    z = a0.dtype.type(0)
    c00 = c01 = c02 = c03 = c10 = c11 = c12 = c13 = z
    c20 = c21 = c22 = c23 = c30 = c31 = c32 = c33 = z
    # for p: c[r][s] += a_r[p] * b_s[p]
    for p in range(a0.shape[0]):
        x0 = a0[p]; x1 = a1[p]; x2 = a2[p]; x3 = a3[p]        # noqa: E702
        y0 = b0[p]; y1 = b1[p]; y2 = b2[p]; y3 = b3[p]        # noqa: E702
        c00 += x0 * y0; c01 += x0 * y1; c02 += x0 * y2; c03 += x0 * y3   # noqa: E702
        c10 += x1 * y0; c11 += x1 * y1; c12 += x1 * y2; c13 += x1 * y3   # noqa: E702
        c20 += x2 * y0; c21 += x2 * y1; c22 += x2 * y2; c23 += x2 * y3   # noqa: E702
        c30 += x3 * y0; c31 += x3 * y1; c32 += x3 * y2; c33 += x3 * y3   # noqa: E702
    return (c00, c01, c02, c03, c10, c11, c12, c13, c20, c21, c22, c23, c30, c31, c32, c33)


@njit(fastmath=_FM, cache=True)
def _dot(a, b):
    """One dot product of two contiguous rows: the edges that do not fill a 4 x 4 tile."""
    s = a.dtype.type(0)
    for p in range(a.shape[0]):
        s += a[p] * b[p]
    return s


@njit(fastmath=_FM, cache=True)
def _abt(A, ak, B, bk, n, C, accumulate):
    """C[r, c] (+)= sum_{p < n} A[r, ak + p] * B[c, bk + p]   for every row r of A and c of B.

    A: (m, *), B: (nb, *), C: (>= m, >= nb), all 2-D and C-contiguous. The row views
    A[r, ak:ak+n] are contiguous, so `_tile4x4` runs on them; rows and columns left over after the
    4 x 4 tiles (m or nb not a multiple of 4) fall back to one `_dot` each.

    Why sliced views and loops from 0, not `for p in range(ak, ak + n)`: Numba cannot tell that
    an index running from a run-time start is not negative, and its wraparound check for negative
    indices turns the vector loads into gathers (measured 10x slower).
    """
    m = A.shape[0]
    nb = B.shape[0]
    m4 = m - m % 4
    nb4 = nb - nb % 4
    # for each group of 4 rows of A (the 4 rows stay in L1 while B streams past)
    for r in range(0, m4, 4):
        a0 = A[r, ak:ak + n]; a1 = A[r + 1, ak:ak + n]                # noqa: E702
        a2 = A[r + 2, ak:ak + n]; a3 = A[r + 3, ak:ak + n]            # noqa: E702
        # for each group of 4 rows of B: one 4 x 4 tile of C
        for c in range(0, nb4, 4):
            t = _tile4x4(a0, a1, a2, a3, B[c, bk:bk + n], B[c + 1, bk:bk + n],
                         B[c + 2, bk:bk + n], B[c + 3, bk:bk + n])
            if accumulate:
                C[r, c] += t[0]; C[r, c + 1] += t[1]; C[r, c + 2] += t[2]; C[r, c + 3] += t[3]           # noqa
                C[r + 1, c] += t[4]; C[r + 1, c + 1] += t[5]; C[r + 1, c + 2] += t[6]; C[r + 1, c + 3] += t[7]    # noqa
                C[r + 2, c] += t[8]; C[r + 2, c + 1] += t[9]; C[r + 2, c + 2] += t[10]; C[r + 2, c + 3] += t[11]  # noqa
                C[r + 3, c] += t[12]; C[r + 3, c + 1] += t[13]; C[r + 3, c + 2] += t[14]; C[r + 3, c + 3] += t[15]  # noqa
            else:
                C[r, c] = t[0]; C[r, c + 1] = t[1]; C[r, c + 2] = t[2]; C[r, c + 3] = t[3]               # noqa
                C[r + 1, c] = t[4]; C[r + 1, c + 1] = t[5]; C[r + 1, c + 2] = t[6]; C[r + 1, c + 3] = t[7]        # noqa
                C[r + 2, c] = t[8]; C[r + 2, c + 1] = t[9]; C[r + 2, c + 2] = t[10]; C[r + 2, c + 3] = t[11]      # noqa
                C[r + 3, c] = t[12]; C[r + 3, c + 1] = t[13]; C[r + 3, c + 2] = t[14]; C[r + 3, c + 3] = t[15]      # noqa
        # the columns of the edge: rows of B after the last full group of 4
        for c in range(nb4, nb):
            for rr in range(r, r + 4):
                s = _dot(A[rr, ak:ak + n], B[c, bk:bk + n])
                C[rr, c] = C[rr, c] + s if accumulate else s
    # the rows of the edge: rows of A after the last full group of 4
    for r in range(m4, m):
        for c in range(nb):
            s = _dot(A[r, ak:ak + n], B[c, bk:bk + n])
            C[r, c] = C[r, c] + s if accumulate else s


@njit(fastmath=_FM, cache=True)
def _ab(A, ak, B, bk, n, nb, C, accumulate):
    """C[r, c] (+)= sum_{p < n} A[r, ak + p] * B[p, bk + c]   for every row r of A and c < nb.

    The other loop order, for short sums (attention's head size, a 64-key block): the innermost
    loop runs along a row of C and of B ("axpy": c_r += a_rp * b_p), so the SIMD lanes hold
    different outputs and nothing is added across lanes at the end. Four rows of C at a time
    share each loaded row of B. C's rows are re-read and re-written at every p, so this wins
    only while they stay in L1 (measured: 45 vs 28 GFLOP/s for a 64 x 64 x 64 block on one core;
    `_abt` wins from sums of ~128 on).
    """
    m = A.shape[0]
    m4 = m - m % 4
    dt = C.dtype.type
    # for each group of 4 rows of C
    for r in range(0, m4, 4):
        c0 = C[r, :nb]; c1 = C[r + 1, :nb]; c2 = C[r + 2, :nb]; c3 = C[r + 3, :nb]   # noqa: E702
        if not accumulate:
            c0[:] = 0; c1[:] = 0; c2[:] = 0; c3[:] = 0                                # noqa: E702
        # for p along the sum: c_r += a_rp * b_p   (4 rows of C, one row of B)
        for p in range(n):
            x0 = A[r, ak + p]; x1 = A[r + 1, ak + p]; x2 = A[r + 2, ak + p]; x3 = A[r + 3, ak + p]  # noqa
            b = B[p, bk:bk + nb]
            for c in range(nb):
                y = b[c]
                c0[c] += x0 * y; c1[c] += x1 * y; c2[c] += x2 * y; c3[c] += x3 * y    # noqa: E702
    # the rows of the edge, one at a time
    for r in range(m4, m):
        c0 = C[r, :nb]
        if not accumulate:
            c0[:] = dt(0)
        for p in range(n):
            x0 = A[r, ak + p]
            b = B[p, bk:bk + nb]
            for c in range(nb):
                c0[c] += x0 * b[c]


# ---------------------------------------------------------------------------------------------
# GEMM
# ---------------------------------------------------------------------------------------------

# Cache blocking, measured on this machine (AMD EPYC Zen 4, 2 cores, 32 KiB L1d and 1 MiB L2 per
# core) by benchmarks/bench_gemm.py: see gemm's docstring.
GEMM_MC = 64      # rows of C per parallel task (and per L2-resident panel of A)
GEMM_NC = 256     # columns of C per panel: NC rows of B^T x KC stay in L2 while A's rows pass
GEMM_KC = 1024    # length of the summed index per panel: 8 rows x KC (A's 4, B's 4) fit in L1


@njit(fastmath=_FM, cache=True)
def _gemm_rows(A, Bt, C, i0, i1, kc, nc):
    """C[i0:i1] += A[i0:i1] @ Bt^T, one row panel, blocked over K (kc) and N (nc)."""
    M, K = A.shape
    N = Bt.shape[0]
    # for each panel of nc columns of C (nc rows of Bt, reused by every row of this panel)
    for j0 in range(0, N, nc):
        j1 = min(j0 + nc, N)
        # for each panel of kc along the summed index: C[i0:i1, j0:j1] += A[:, k0:k1] Bt[:, k0:k1]^T
        for k0 in range(0, K, kc):
            k1 = min(k0 + kc, K)
            _abt(A[i0:i1], k0, Bt[j0:j1], k0, k1 - k0, C[i0:i1, j0:], True)


@njit(parallel=True, cache=True)
def _gemm_abt(A, Bt, C, mc, kc, nc):
    """C += A @ Bt^T with A: (M, K), Bt: (N, K), C: (M, N), all C-contiguous."""
    M = A.shape[0]
    n_panels = (M + mc - 1) // mc
    # for each row panel of mc rows of C, in parallel (one call, so each level reads on its own)
    for t in prange(n_panels):
        _gemm_rows(A, Bt, C, t * mc, min(t * mc + mc, M), kc, nc)


@njit(parallel=True, cache=True)
def _transpose(x, out):
    """out = x^T, copied in 32 x 32 blocks (both reads and writes stay within a few cache lines)."""
    R, S = x.shape
    nb = (R + 31) // 32
    # for each band of 32 rows of x, in parallel
    for t in prange(nb):
        r0 = t * 32
        r1 = min(r0 + 32, R)
        # for each 32 x 32 block in the band: out[s, r] = x[r, s]
        for s0 in range(0, S, 32):
            s1 = min(s0 + 32, S)
            for s in range(s0, s1):
                for r in range(r0, r1):
                    out[s, r] = x[r, s]


def _packed_rows(x: np.ndarray, transpose: bool) -> np.ndarray:
    """x (or x^T when transpose) as a C-contiguous array: a view when it already is one."""
    y = x.T if transpose else x
    if y.flags.c_contiguous:
        return y
    if y.T.flags.c_contiguous:                     # y is a transposed view: a blocked parallel copy
        out = np.empty(y.shape, dtype=x.dtype)
        _transpose(y.T, out)
        return out
    return np.ascontiguousarray(y)                 # any other strides: numpy's copy


def _check_matmul(a, b) -> None:
    if not isinstance(a, np.ndarray) or not isinstance(b, np.ndarray):
        raise TypeError(f"matmul: a is {type(a).__name__} and b {type(b).__name__}: expected np.ndarray")
    if a.ndim < 2 or b.ndim < 2:
        raise ValueError(f"matmul: a has shape {a.shape} and b {b.shape}: expected at least 2-D arrays")
    if a.shape[-1] != b.shape[-2]:
        raise ValueError(f"matmul: a has shape {a.shape} and b {b.shape}: "
                         f"expected a.shape[-1] == b.shape[-2]")
    if a.dtype != b.dtype:
        raise TypeError(f"matmul: a has dtype {a.dtype} and b {b.dtype}: expected the same dtype")


def gemm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """C = a @ b for 2-D float32/float64 arrays, a blocked parallel GEMM in Numba, for study.

        C[i, j] = sum_k a[i, k] * b[k, j]          a: (M, K), b: (K, N) -> C: (M, N)

    How it is fast, from the inside out:

    1. Register blocking (`_tile4x4`): a 4 x 4 tile of C is 16 scalar sums that stay in registers
       while the loop runs over k. C is computed as A @ B^T with B packed transposed (Bt: (N, K)),
       so the 4 rows of A and the 4 rows of Bt are 1-D contiguous views and the loop over k is a
       dot product that LLVM vectorises (8 loads and 16 multiply-adds per step: bound by the FMA
       units, not by memory). The naive i-j-k triple loop runs at ~6.5 GFLOP/s here; the tile at
       ~85 GFLOP/s on one core.
    2. Cache blocking (`_gemm_rows`): the summed index is cut in panels of GEMM_KC so that the 8
       rows of one tile stay in L1; C's columns in panels of GEMM_NC so that those rows of Bt stay
       in L2 while every row of A passes them; C's rows in panels of GEMM_MC, one parallel task
       each (prange, 2 cores).
    3. Edges: rows or columns that do not fill a 4 x 4 tile are single dot products (`_abt`).

    Transposed inputs (the backward's a.T @ b and a @ b.T) are views with the wrong strides: they
    are packed into C-contiguous copies first (a @ b.T needs no copy at all: b.T's transpose is b).

    Measured here (AMD EPYC Zen 4, 2 cores, AVX-512; benchmarks/results/gemm.md), float32
    1024 x 1024 on 2 threads, quiet machine: ~158 GFLOP/s against OpenBLAS's ~206 and torch's
    ~192 (0.76x BLAS); packing b^T is ~15% of that (2.8 ms; a @ b.T skips it, ~180 without it).
    On one thread ~63-77 against ~94-100 (0.7-0.8x). Sums of 128 (the baby GPT's K) reach only
    about a third to a half of BLAS: the 16 sums across SIMD lanes at the end of each tile weigh
    more when the tile's loop is short.
    Block sizes: MC 16-128, NC 128-1024, KC 256-4096 all measured within noise at 1024 and 2048.
    """
    _check_matmul(a, b)
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"gemm: a has shape {a.shape} and b {b.shape}: expected 2-D arrays")
    if a.dtype not in (np.float32, np.float64):
        raise TypeError(f"gemm: a has dtype {a.dtype}: expected float32 or float64")
    M, K = a.shape
    N = b.shape[1]
    C = np.zeros((M, N), dtype=a.dtype)
    if M == 0 or N == 0 or K == 0:
        return C
    A = _packed_rows(a, transpose=False)      # (M, K), rows contiguous along k
    Bt = _packed_rows(b, transpose=True)      # (N, K), rows contiguous along k
    _gemm_abt(A, Bt, C, GEMM_MC, GEMM_KC, GEMM_NC)
    return C


def _gemm_wins(M: int, K: int, N: int) -> bool:
    """True for the shapes where the Numba gemm measured faster than numpy's BLAS here.

    Measured by benchmarks/bench_gemm.py (results/gemm.md): OpenBLAS wins every shape timed,
    square and GPT-shaped, on one thread by 1.2-2.5x (its hand-written AVX-512 kernels), so
    matmul always takes BLAS. The switch is kept so that a machine where the measurement turns
    out otherwise changes one line, and so that the tests exercise the gemm path.
    """
    return False


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b for (..., M, K) @ (K, N) or batched (..., M, K) @ (..., K, N): the reference's matmul.

    Takes numpy's BLAS (np.matmul) or `gemm`, whichever measured faster for the shape on this
    machine (`_gemm_wins`): BLAS for every shape measured so far (see _gemm_wins).
    """
    _check_matmul(a, b)
    if (b.ndim == 2 and a.dtype in (np.float32, np.float64)
            and _gemm_wins(int(np.prod(a.shape[:-1])), a.shape[-1], b.shape[1])):
        out = gemm(a.reshape(-1, a.shape[-1]), b)                   # (..., M, K) -> (M', K)
        return out.reshape(a.shape[:-1] + (b.shape[1],))           # (M', N) -> (..., M, N)
    return np.matmul(a, b)


# ---------------------------------------------------------------------------------------------
# exp for the softmax: a polynomial LLVM can vectorise
# ---------------------------------------------------------------------------------------------

@intrinsic
def _float32_from_bits(typingctx, bits):
    """The float32 whose IEEE-754 bit pattern is the int32 `bits` (a free register reinterpretation)."""
    sig = types.float32(types.int32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())
    return sig, codegen


def _exp_nonpos(x):
    """exp(x) for x <= 0 (all a max-subtracted softmax needs); exp(-inf) = 0. Typed by `overload`."""
    raise NotImplementedError("only callable from compiled code")


@overload(_exp_nonpos, jit_options={"fastmath": _FM})
def _exp_nonpos_impl(x):
    """float64: math.exp. float32: a polynomial with bit tricks instead of a libm call.

    Here Numba has no vector math library (SVML), so math.exp is one scalar libm call per element,
    which would make the softmax, not the products, the bottleneck of attention. For float32:
        exp(x) = 2^n * exp(r),  n = round(x / ln 2),  r = x - n ln 2 in [-ln2/2, ln2/2]
        exp(r) ~ 1 + r + r^2/2! + ... + r^7/7!       (truncation error < 1e-8 on that interval)
        2^n    = the float whose exponent bits are n + 127 (built from an integer, no call)
    Below ln(2^-126) ~ -87.3 (the smallest normal float32) the result is 0, so is exp(-inf).
    Relative error ~1e-7, a float32 ulp or two: the reference tests (1e-5) pass.
    """
    if isinstance(x, types.Float) and x.bitwidth == 64:
        return lambda x: math.exp(x)

    def exp32(x):
        lo = np.float32(-87.33654)
        xc = x if x > lo else lo
        n = np.floor(xc * np.float32(1.442695041) + np.float32(0.5))            # round(x / ln 2)
        r = xc - n * np.float32(0.693359375) + n * np.float32(2.12194440e-4)    # x - n ln 2 (two parts)
        p = np.float32(1.0 / 5040)
        p = p * r + np.float32(1.0 / 720)
        p = p * r + np.float32(1.0 / 120)
        p = p * r + np.float32(1.0 / 24)
        p = p * r + np.float32(1.0 / 6)
        p = p * r + np.float32(0.5)
        p = p * r + np.float32(1.0)
        p = p * r + np.float32(1.0)
        two_n = _float32_from_bits((np.int32(n) + np.int32(127)) << np.int32(23))
        return p * two_n if x >= lo else np.float32(0.0)
    return exp32


# ---------------------------------------------------------------------------------------------
# Fused attention (FlashAttention), one (batch, head) at a time
# ---------------------------------------------------------------------------------------------

# Block sizes (query rows x keys), measured by benchmarks/bench_attention.py: see attention_forward.
ATTN_BR = 64          # forward: queries per block
ATTN_BC = 64          # forward: keys per block
ATTN_BWD_BR = 64      # backward: queries per block
ATTN_BWD_BC = 64      # backward: keys per block (and rows of the P^T, dS^T strips)
# Below this many keys, attention_forward takes batched BLAS products around a Numba softmax
# instead of the fused kernel: measured faster there (see attention_forward).
ATTN_FUSED_FROM_TK = 96


class FlashAttentionCache(NamedTuple):
    """What the fused backward needs: the inputs, the output and one number per query row."""
    q: np.ndarray          # (B, H, Tq, D) C-contiguous
    k: np.ndarray          # (B, H, Tk, D)
    v: np.ndarray          # (B, H, Tk, D)
    out: np.ndarray        # (B, H, Tq, D)
    lse: np.ndarray        # (B, H, Tq) log sum_j exp(s_ij) over visible keys; -inf for a row with none
    key_bias: np.ndarray   # (B, Tk) 0 for a visible key, -inf for a padded one
    causal: bool
    scale: float           # 1 / sqrt(D)


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
        # out_i = acc / l;  lse_i = m + log(l)    (a row that saw no key: out = 0, lse = -inf)
        for r in range(mi):
            if l[r] > 0:
                inv = dt(1) / l[r]
                for d in range(D):
                    out[i0 + r, d] = acc[r, d] * inv
                lse[i0 + r] = m[r] + math.log(l[r])
            else:
                out[i0 + r, :] = 0
                lse[i0 + r] = -np.inf


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


# ---------------------------------------------------------------------------------------------
# Attention for short sequences: batched BLAS products around a Numba softmax
# ---------------------------------------------------------------------------------------------

class SoftmaxAttentionCache(NamedTuple):
    """The short-sequence path keeps the (Tq, Tk) probabilities, as the reference does (see
    attention_forward for where this path is taken and why)."""
    q: np.ndarray          # (B, H, Tq, D)
    k: np.ndarray          # (B, H, Tk, D)
    v: np.ndarray          # (B, H, Tk, D)
    att: np.ndarray        # (B, H, Tq, Tk) softmax probabilities (0 where hidden)
    scale: float           # 1 / sqrt(D)


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
    product, and a parallel softmax right after one waits for the core they hold (measured 2x
    slower at T = 128 than this serial loop, never faster at the short T this path serves)."""
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


def _key_bias(key_pad, B, Tk, dtype):
    """(B, Tk): 0 where a key is visible, -inf where key_pad hides it (added to the scores)."""
    bias = np.zeros((B, Tk), dtype=dtype)
    if key_pad is not None:
        bias[key_pad] = -np.inf
    return bias


def attention_forward(q, k, v, causal=True, key_pad=None, dropout_p=0.0, rng=None):
    """Scaled dot-product attention, fused (FlashAttention), with the reference's semantics.

        s = q @ k^T / sqrt(D) + mask;  att = softmax(s);  out = att @ v      (see reference.py)

    The forward walks the keys in blocks of ATTN_BC for each block of ATTN_BR queries, keeping a
    running max m and sum l per query row (online softmax): when a block raises the max, what was
    summed so far is rescaled by exp(m_old - m_new). So it never holds a (Tq, Tk) matrix: its
    extra memory is linear in T, and its cache is FlashAttentionCache with the row log-sum-exp
    lse = m + log(l) in place of the probabilities. Causal blocks wholly in a query block's future
    are skipped (half the work at Tq = Tk).

    Which path, by shape (measured with benchmarks/bench_attention.py, float32, causal):
      - Tk < ATTN_FUSED_FROM_TK = 96 keys: batched BLAS products around a Numba softmax
        (`_attention_forward_blas`, cache SoftmaxAttentionCache, (Tq, Tk) probabilities kept).
        At B=12, H=4, D=32, T=64 (the baby GPT) forward+backward took ~1.1 ms against ~1.9 ms
        fused; at T=32 ~0.3 against ~0.65 ms. The (T, T) matrices are small there and BLAS's
        products are single-threaded.
      - from 96 keys on: the fused kernel. At B=8, H=8, D=64: T=128 ~12 ms against ~28 ms for
        the BLAS path (OpenBLAS goes multi-threaded and its spinning workers stall the rest),
        T=1024 ~400 ms against ~490 ms, with 65 MiB of peak memory against 580 MiB.
    Block sizes ATTN_BR = ATTN_BC = 64 (and the backward's): 32 to 256 measured flat within
    noise (+-5%) at T=1024. Against torch's scaled_dot_product_attention at T=1024 the forward
    plus backward took 1.2-1.6x torch's time (see results/attention.md for the latest run).

    dropout_p > 0 goes to reference.attention_forward: dropping probabilities needs them
    materialised, which is what this kernel avoids. attention_backward follows the cache's type.
    """
    reference.check_attention_args(q, k, v, key_pad, causal)       # before any compiled code runs
    if dropout_p > 0:
        return reference.attention_forward(q, k, v, causal, key_pad, dropout_p, rng)
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    q, k, v = (np.ascontiguousarray(t) for t in (q, k, v))        # per-head tiles must be contiguous
    key_bias = _key_bias(key_pad, B, Tk, q.dtype)
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


# ---------------------------------------------------------------------------------------------
# erf
# ---------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------
# Compile ahead
# ---------------------------------------------------------------------------------------------

def warmup(dtypes=("float32",)) -> dict[str, float]:
    """Compile (or load from Numba's disk cache) every kernel for the common signatures now.

    Returns {kernel: seconds} for the first call of each, so a benchmark can report compile time
    apart from run time (about 0.2 s in all from a warm cache; several seconds cold).
    """
    seconds: dict[str, float] = {}
    for name in dtypes:
        dtype = np.dtype(name)
        rng = np.random.default_rng(0)
        a = rng.standard_normal((9, 7)).astype(dtype)
        b = rng.standard_normal((7, 5)).astype(dtype)
        q, k, v = (rng.standard_normal((1, 2, 5, 3)).astype(dtype) for _ in range(3))
        bias = _key_bias(None, 1, 5, dtype)

        def attention():
            for forward in (_attention_forward_fused, _attention_forward_blas):   # both paths
                out, cache = forward(q, k, v, True, bias)
                attention_backward(out, cache)

        for kernel, call in (("gemm", lambda: (gemm(a, b), gemm(a.T.T, b.T.T), gemm(b.T, a.T))),
                             ("attention", attention),
                             ("erf", lambda: erf(a))):
            t = time.perf_counter()
            call()
            seconds[f"{kernel}[{name}]"] = time.perf_counter() - t
    return seconds
