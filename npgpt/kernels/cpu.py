"""The Numba backend: the hot kernels compiled with @njit, parallel over 2+ cores, cached on disk.

Every function here has the signature and the semantics of its twin in kernels/reference.py (or,
for the fused kernels, of the NumPy code in npgpt/nn and npgpt/optim that defines them) and is
tested equal to it (tests/kernels/test_cpu_kernels.py, test_fused_kernels.py). What is here, and
why it is faster:

    gemm(a, b)                 a blocked, register-tiled matrix product, written to be studied
    matmul(a, b)               the reference's matmul; BLAS (np.matmul) or gemm, by measured shape;
                               stacked rows (B, T, K) @ (K, N) as one product
    matmul_add(c, a, b)        c += a @ b as one BLAS product (gemm's beta = 1): no temporary
    attention_forward(...)     FlashAttention: key blocks walked with an online softmax; the cache
    attention_backward(...)    keeps a row log-sum-exp (B, H, Tq), never a (Tq, Tk) matrix
    erf(x)                     math.erf over all cores, instead of one Python call per element
    layernorm_forward/backward, gelu_tanh_forward/backward, cross_entropy_forward/backward,
    adamw_update, sum_squares, embedding_backward
                               fused: one pass over each row or chunk where NumPy makes one pass
                               and one temporary per operation (see "Fused epilogues" below)
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

Threads. Numba's parallel loops run on OpenMP (the "omp" threading layer, GNU libgomp) here;
numpy's BLAS (OpenBLAS, pthreads) keeps its own threads. The settings, and why:

  - OMP_WAIT_POLICY=PASSIVE, set below before Numba starts its threads (`os.environ.setdefault`:
    a value the user exported wins; conftest.py sets it for the tests too). Idle OpenMP threads
    sleep at once instead of spinning. Spinning makes back-to-back parallel kernels ~2x faster
    on a quiet machine (GOMP_SPINCOUNT=100000: a GELU over 393 K elements 95 us vs 190 us), but
    a spinning thread takes a core from OpenBLAS and from other processes: in alternating runs
    of the baby training step on a loaded machine, PASSIVE took 44-148 ms and spinning
    (GOMP_SPINCOUNT 3e4-3e5) 180-1000 ms, so PASSIVE stays. Measured earlier on a
    BLAS-attention-BLAS step (T=256): PASSIVE ~260 ms, ACTIVE ~310 ms,
    NUMBA_THREADING_LAYER=workqueue ~245 ms, within noise of PASSIVE; workqueue may not be
    entered from two Python threads at once, so it is left to the user.
  - OpenBLAS's worker threads busy-wait after each product (no sched_yield: strace shows none),
    for up to 2^28 cycles (~0.1 s) before they sleep. During a training step they therefore
    hold the second core almost all the time, and a parallel Numba kernel launched after a
    product gets no second core: measured right after a GEMM, parallel = serial for every fused
    kernel (the softmax cross-entropy over GPT-2's vocabulary 17.6 ms either way; 9.0 ms in
    parallel when the BLAS threads are asleep). OPENBLAS_THREAD_TIMEOUT shortens the wait, but
    OpenBLAS reads it when numpy loads it (only a process started with it set sees it), and a
    short wait slows the products themselves: 2^16 or 2^20 cycles cost 10-25% on GPT-2's
    products (each product must wake the workers), 2^24 was neutral, and no setting changed
    the whole step beyond the noise of this shared machine. It is left at OpenBLAS's default.
  - So each fused kernel runs on the calling thread below PARALLEL_FROM = 1 M elements (every
    LayerNorm and GELU of the three benchmark models): there a parallel launch never paid
    (a PASSIVE thread takes ~50-100 us to wake), and on all threads above it (GPT-2's
    cross-entropy over 12.9 M logits, the AdamW update over 124 M parameters), where it pays
    whenever the BLAS threads are asleep and costs nothing when they are not. The short-sequence
    attention path runs its softmax on the calling thread for the same reason.
  - PyTorch ships its own OpenMP runtime, which reads the environment when torch is imported:
    the benchmarks run torch in its own process (bench_step.py) or import it before npgpt
    (common.py), so torch keeps the settings it would have on its own.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")   # before numba's OpenMP layer starts: see above

import math  # noqa: E402
import time  # noqa: E402
from typing import NamedTuple  # noqa: E402

import numpy as np  # noqa: E402

from . import reference  # noqa: E402
from .reference import FlashAttentionCache  # noqa: E402

__all__ = ["matmul", "matmul_add", "gemm", "attention_forward", "attention_backward", "erf", "warmup",
           "layernorm_forward", "layernorm_backward", "gelu_tanh_forward", "gelu_tanh_backward",
           "cross_entropy_forward", "cross_entropy_backward", "adamw_update", "sum_squares",
           "embedding_backward"]

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
    reference.check_matmul_args(a, b)
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
    With a 2-D b, a's leading axes are flattened into one (M', K) product, as the reference does
    (np.matmul would make one BLAS call per (M, K) slice, packing all of b each time).
    """
    reference.check_matmul_args(a, b)
    if b.ndim == 2 and a.ndim > 2:
        out = matmul(a.reshape(-1, a.shape[-1]), b)                 # (..., M, K) -> (M', K)
        return out.reshape(a.shape[:-1] + (b.shape[1],))           # (M', N) -> (..., M, N)
    if (b.ndim == 2 and a.dtype in (np.float32, np.float64)
            and _gemm_wins(a.shape[0], a.shape[1], b.shape[1])):
        return gemm(a, b)
    return np.matmul(a, b)


# ---------------------------------------------------------------------------------------------
# c += a @ b in one BLAS call: numpy's own OpenBLAS, through its CBLAS interface
# ---------------------------------------------------------------------------------------------

_CBLAS = {}     # {"s" | "d": the ?gemm function of numpy's OpenBLAS}, filled by _cblas_gemm


def _cblas_gemm(dtype):
    """cblas_sgemm / cblas_dgemm of the OpenBLAS that numpy itself loaded, or None.

    numpy >= 2's wheels ship OpenBLAS with 64-bit integers and prefixed symbols
    (scipy_cblas_sgemm64_); only those (or plain openblas64_ builds: cblas_sgemm64_) are used,
    since their integer width is known. The first use checks one small product against
    np.matmul; any doubt (another BLAS, a missing symbol, a wrong answer) and matmul_add falls
    back to the reference's c += a @ b.
    """
    import ctypes

    kind = "s" if dtype == np.float32 else "d"
    if kind in _CBLAS:
        return _CBLAS[kind]
    _CBLAS[kind] = None
    try:
        with open("/proc/self/maps") as f:
            paths = sorted({line.split()[-1] for line in f if "openblas" in line.lower() and ".so" in line})
    except OSError:
        return None
    real = ctypes.c_float if kind == "s" else ctypes.c_double
    for path in paths:
        lib = ctypes.CDLL(path)
        for name in (f"scipy_cblas_{kind}gemm64_", f"cblas_{kind}gemm64_"):
            if hasattr(lib, name):
                fn = getattr(lib, name)
                i64, ptr = ctypes.c_int64, ctypes.c_void_p
                fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, i64, i64, i64, real, ptr, i64,
                               ptr, i64, real, ptr, i64]
                fn.restype = None
                _CBLAS[kind] = fn
                rng = np.random.default_rng(0)
                a, b, c0 = (rng.standard_normal(s).astype(dtype) for s in ((5, 3), (3, 4), (5, 4)))
                c = c0.copy()
                if _blas_matmul_add(c, a.T.copy().T, b) and np.allclose(c, c0 + a @ b, rtol=1e-5, atol=1e-5):
                    return fn
                _CBLAS[kind] = None
                return None
    return None


def _blas_layout(x: np.ndarray):
    """(transposed?, leading dimension) of a 2-D array as a row-major BLAS operand, or None if
    neither its rows nor its columns are contiguous."""
    item = x.itemsize
    if x.strides[1] == item and x.strides[0] >= max(1, x.shape[1]) * item:
        return False, x.strides[0] // item
    if x.strides[0] == item and x.strides[1] >= max(1, x.shape[0]) * item:
        return True, x.strides[1] // item       # x is the transpose of a row-major array
    return None


def _blas_matmul_add(c, a, b) -> bool:
    """c += a @ b with gemm's beta = 1, if the BLAS and the layouts allow; True if done."""
    fn = _CBLAS.get("s" if c.dtype == np.float32 else "d")
    la, lb, lc = _blas_layout(a), _blas_layout(b), _blas_layout(c)
    if fn is None or la is None or lb is None or lc is None or lc[0]:
        return False
    row_major, no_trans, trans = 101, 111, 112
    M, K = a.shape
    N = b.shape[1]
    fn(row_major, trans if la[0] else no_trans, trans if lb[0] else no_trans, M, N, K, 1.0,
       a.ctypes.data, la[1], b.ctypes.data, lb[1], 1.0, c.ctypes.data, lc[1])
    return True


def matmul_add(c: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """c += a @ b in place (the reference's matmul_add), as one BLAS product: gemm computes
    C = alpha A B + beta C, and beta = 1 adds into c while the product is formed.

    np.matmul has no such form: `c += a @ b` makes a temporary of c's size, then walks c again
    to add it. For GPT-2's tied head that is a 154 MB array per step, freshly paged in: its
    dW = dlogits^T x took ~370 ms of CPU this way against ~210 ms as one product (one core).
    a and b may be transposed views (the backward's X^T dY): they go to BLAS as they are.
    """
    reference.check_matmul_add(c, a, b)
    if c.size and a.shape[1] and _cblas_gemm(c.dtype) is not None and _blas_matmul_add(c, a, b):
        return c
    c += np.matmul(a, b)
    return c


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
    Below ln(2^-126) ~ -87.3 (the smallest normal float32) the result is 0, so is exp(-inf);
    exp(NaN) is NaN (a NaN score or logit must not vanish into a 0).
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
        return p * two_n if x >= lo else (np.float32(0.0) if x < lo else x)   # exp(NaN) = NaN
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


# ---------------------------------------------------------------------------------------------
# Fused epilogues: LayerNorm, GELU (tanh), softmax cross-entropy, AdamW, the sum of squares
# ---------------------------------------------------------------------------------------------
#
# The layers in npgpt/nn (and npgpt/optim.py) hold the readable NumPy definition of each of
# these; they call the kernel here through `kernels.fused(name)` when the backend is "numba",
# and tests/kernels/test_fused_kernels.py holds each equal to that NumPy code. What a kernel
# here does that the NumPy form cannot: the NumPy form makes an array-sized temporary per
# operation (x - mu, its square, ...) and walks memory once per operation; a kernel here reads
# a row (or a chunk of a flat buffer) once and runs every step of the formula on it while it
# sits in L1/L2, with no temporaries.
#
# Three details make the loops vectorise (16 float32 lanes with AVX-512):
#   - error_model="numpy": Numba's default tests every float division for a zero divisor, to
#     raise ZeroDivisionError as Python does, and that branch keeps LLVM from vectorising the
#     loop (measured: a rational tanh 9 ms -> 1 ms per 3 M elements). With the numpy model a
#     division is IEEE's (x / 0 = inf), as in NumPy.
#   - `_maxnum` (LLVM's maxnum) for running maxima: Python's max() compiles to a compare and
#     a select that LLVM does not vectorise (27.7 us vs 2.5 us per 50257-long row).
#   - exp and tanh as polynomials (`_exp_nonpos`, `_tanh`) in float32, not libm calls.
#
# Threads: below PARALLEL_FROM elements a kernel runs on the calling thread; from there on all
# of Numba's threads share it. Below that size a parallel launch cost more than it saved at
# every size measured (waking a PASSIVE thread takes ~50-100 us here, and right after a BLAS
# product the second core is held by OpenBLAS's spinning worker: see the module docstring).
# Measured serial vs parallel after a GEMM, in us: LayerNorm backward (256, 768) 208 vs 305,
# GELU forward (256, 3072) 502 vs 567; without the GEMM before, cross-entropy over (256, 50257)
# 17.7 ms vs 9.1 ms.
# Sums across rows (LayerNorm's dw and db, the loss, the sum of squares) are added per fixed
# chunk into partial sums, then the partials in order: no two threads write one number, and
# the result does not depend on how many threads there are.

_FE = dict(fastmath=_FM, error_model="numpy", cache=True)   # the row and elementwise kernels
PARALLEL_FROM = 1 << 20      # elements: a kernel on fewer runs on the calling thread
ROWS_PER_TASK = 16           # rows per parallel task (and per partial sum of LayerNorm's dw, db)
FLAT_CHUNK = 1 << 16         # elements per parallel task of the flat kernels (AdamW, sum of squares)
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)     # the GELU's constants, as npgpt/nn/activation.py
GELU_TANH_C = 0.044715


@intrinsic
def _maxnum(typingctx, a, b):
    """max(a, b) as LLVM's maxnum, which the vectoriser turns into vmaxps over 16 lanes.
    A NaN argument is ignored (the other is returned): the sums that follow a max still see the
    NaN (exp(NaN - m) = NaN), so a NaN logit still gives a NaN loss."""
    sig = a(a, b)

    def codegen(context, builder, signature, args):
        t = args[0].type
        fn = builder.module.declare_intrinsic("llvm.maxnum", [t], ir.FunctionType(t, [t, t]))
        return builder.call(fn, args)
    return sig, codegen


def _tanh(x):
    """tanh(x), typed by `overload`: libm in float64, a rational function in float32."""
    raise NotImplementedError("only callable from compiled code")


@overload(_tanh, jit_options={"fastmath": {"contract"}, "error_model": "numpy"})
def _tanh_impl(x):
    """float64: math.tanh (libm: the reference's np.tanh to an ulp, so float64 stays 1e-12 equal).

    float32: Eigen's rational approximation (generic_fast_tanh_float), which vectorises:
        tanh(x) ~ x P(x^2) / Q(x^2),   P of degree 6, Q of degree 3 in x^2, x clamped to +-7.905
        tanh(x) = +-1 exactly for |x| >= 9 (where float32's tanh rounds to 1)
    The exact +-1 matters to the GELU's derivative, whose (1 - t^2) term is multiplied by ~x^3:
    with 1 - 2.4e-7 at x = -12 (the clamped value) dx was off by 5e-5. Max absolute (and
    relative) error 3.9e-7 over [-12, 12] and down to 1e-30, measured against float64 np.tanh
    (np.tanh in float32: 6e-8); about 1 ms per 3 M elements on one core, as numpy's own SIMD
    tanh, where math.tanh in Numba is one scalar libm call per element (~9 ms).
    """
    if isinstance(x, types.Float) and x.bitwidth == 64:
        return lambda x: math.tanh(x)

    def tanh32(x):
        c = np.float32(7.90531110763549805)
        xc = x if x < c else c
        xc = xc if xc > -c else -c
        x2 = xc * xc
        p = np.float32(-2.76076847742355e-16)
        p = p * x2 + np.float32(2.00018790482477e-13)
        p = p * x2 + np.float32(-8.60467152213735e-11)
        p = p * x2 + np.float32(5.12229709037114e-08)
        p = p * x2 + np.float32(1.48572235717979e-05)
        p = p * x2 + np.float32(6.37261928875436e-04)
        p = p * x2 + np.float32(4.89352455891786e-03)
        q = np.float32(1.19825839466702e-06)
        q = q * x2 + np.float32(1.18534705686654e-04)
        q = q * x2 + np.float32(2.26843463243900e-03)
        q = q * x2 + np.float32(4.89352518554385e-03)
        r = xc * p / q
        one = np.float32(1.0) if x > 0 else np.float32(-1.0)
        return r if abs(x) < np.float32(9.0) else one     # |x| >= 9: tanh rounds to +-1 in float32
    return tanh32


def _tasks(n_rows: int, row_size: int) -> int:
    """How many parallel tasks for n_rows rows of row_size elements: 0 means the calling thread."""
    return 0 if n_rows * row_size < PARALLEL_FROM else (n_rows + ROWS_PER_TASK - 1) // ROWS_PER_TASK


def _as_rows(name: str, x: np.ndarray, width: int | None = None) -> np.ndarray:
    """x (..., C) as a C-contiguous (N, C) array (a view when it is one already), after checks."""
    if not isinstance(x, np.ndarray) or x.dtype not in (np.float32, np.float64) or x.ndim < 1:
        raise TypeError(f"{name} has dtype {getattr(x, 'dtype', type(x).__name__)} and shape "
                        f"{getattr(x, 'shape', None)}: expected a float32 or float64 array")
    if width is not None and x.shape[-1] != width:
        raise ValueError(f"{name} has shape {x.shape}: expected the last dimension to be {width}")
    return np.ascontiguousarray(x).reshape(-1, x.shape[-1])


def _check_like(name: str, a, like: np.ndarray, what: str) -> None:
    if not isinstance(a, np.ndarray) or a.shape != like.shape or a.dtype != like.dtype:
        raise ValueError(f"{name} has shape {getattr(a, 'shape', None)} and dtype "
                         f"{getattr(a, 'dtype', None)}: expected {like.shape} {like.dtype}, {what}")


# -- LayerNorm -----------------------------------------------------------------------------------

class LayerNormCache(NamedTuple):
    """The fields of npgpt.nn.norm.LayerNormCache, in its order (either backward reads either)."""
    x: np.ndarray
    w: np.ndarray
    mu: np.ndarray      # (..., 1)
    rstd: np.ndarray    # (..., 1)
    has_bias: bool


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
    same two-pass formula as the reference, so as stable); the NumPy form makes four
    array-sized temporaries. Returns (y, LayerNormCache) with mu, rstd of shape (..., 1).
    """
    x2 = _as_rows("x", x)
    C = x2.shape[1]
    _check_like("w", w, np.empty(C, x2.dtype), "the LayerNorm weight")
    if b is not None:
        _check_like("b", b, w, "the LayerNorm bias")
    N = x2.shape[0]
    y = np.empty_like(x2)
    mu = np.empty(N, dtype=x2.dtype)
    rstd = np.empty(N, dtype=x2.dtype)
    args = (x2, w, w if b is None else b, b is not None, float(eps), y, mu, rstd)
    n_tasks = _tasks(N, C)
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
    (~300) instead of exactly 0, as the reference's is."""
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
    x2 = _as_rows("x", x)
    N, C = x2.shape
    _check_like("dout", dout, x, "the shape of the LayerNorm's input")
    d2 = np.ascontiguousarray(dout).reshape(N, C)
    dx = np.empty_like(x2)
    n_tasks = _tasks(N, C)
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


def _flat_tasks(n: int) -> int:
    return 0 if n < PARALLEL_FROM else (n + FLAT_CHUNK - 1) // FLAT_CHUNK


def gelu_tanh_forward(x):
    """npgpt.nn.activation.gelu_tanh_forward in one pass: (y, (x, t)), t = tanh(u) as the
    reference keeps it. float32's tanh is the rational approximation of `_tanh` (error <= 3.9e-7,
    where np.tanh's is 6e-8): vectorised, where Numba's math.tanh is a libm call per element.
    float64 uses libm's tanh, as the reference does."""
    flat = _as_rows("x", x).reshape(-1)
    y = np.empty_like(flat)
    t = np.empty_like(flat)
    n_tasks = _flat_tasks(flat.size)
    if n_tasks:
        _gelu_tanh_forward_tasks(flat, y, t, n_tasks)
    else:
        _gelu_tanh_forward_span(flat, y, t, 0, flat.size)
    return y.reshape(x.shape), (x, t.reshape(x.shape))


def gelu_tanh_backward(dout, cache):
    """npgpt.nn.activation.gelu_tanh_backward in one pass, from the cache (x, t)."""
    x, t = cache
    _check_like("dout", dout, x, "the shape of the GELU's input")
    flat = _as_rows("x", x).reshape(-1)
    dx = np.empty_like(flat)
    args = (_as_rows("dout", dout).reshape(-1), flat, _as_rows("t", t).reshape(-1), dx)
    n_tasks = _flat_tasks(flat.size)
    if n_tasks:
        _gelu_tanh_backward_tasks(*args, n_tasks)
    else:
        _gelu_tanh_backward_span(*args, 0, flat.size)
    return dx.reshape(x.shape)


# -- softmax cross-entropy -----------------------------------------------------------------------

class CrossEntropyCache(NamedTuple):
    """The fields of npgpt.nn.loss.CrossEntropyCache, in its order (either backward reads either)."""
    logits: np.ndarray
    lse: np.ndarray        # (N, 1)
    targets: np.ndarray
    valid: np.ndarray
    n_valid: int
    label_smoothing: float
    shape: tuple


@njit(**_FE)
def _cross_entropy_forward_rows(x, targets, valid, eps, lse, loss, i0, i1):
    """Rows i0 .. i1-1: lse_i = m + log sum_v exp(x_iv - m), m = max_v x_iv, and the row's loss
        (1 - eps) (lse_i - x_i,y) + eps (lse_i - mean_v x_iv)      (0 for an ignored row)
    A row (200 KiB at V = 50257) is read from memory once: the max sweep brings it into L2, the
    sum of exponentials reads it from there."""
    V = x.shape[1]
    dt = x.dtype.type
    # for each row: max (and sum, for the smoothing term), then the sum of exp(x - max)
    for i in range(i0, i1):
        xi = x[i]
        m = dt(-np.inf)
        total = dt(0)
        for c in range(V):
            m = _maxnum(m, xi[c])
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
    computed in the reference's order: ((exp(x - lse) [- (1 - eps) at y_i]) - eps / V) * scale."""
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


def cross_entropy_forward(x, targets, ignore_index, label_smoothing, shape):
    """npgpt.nn.loss.cross_entropy_forward on rows already checked and flattened by it:
    x: (N, V) float, targets: (N,) int64 in [0, V) or ignore_index. Returns (loss, cache).

    One pass over the logits, row by row, in parallel (see `_cross_entropy_forward_rows`); the
    NumPy form makes three (N, V) temporaries (x - m, its exp, and the smoothing term's mean).
    The per-row losses are added in float64, in row order.
    """
    x = _as_rows("logits", x)
    N, V = x.shape
    if not isinstance(targets, np.ndarray) or targets.shape != (N,) or targets.dtype != np.int64:
        raise ValueError(f"targets has shape {getattr(targets, 'shape', None)} and dtype "
                         f"{getattr(targets, 'dtype', None)}: expected ({N},) int64")
    valid = targets != ignore_index
    n_valid = int(valid.sum())
    lse = np.empty(N, dtype=x.dtype)
    loss_rows = np.empty(N, dtype=x.dtype)
    eps = float(label_smoothing)
    n_tasks = _tasks(N, V)
    if n_tasks:
        _cross_entropy_forward_tasks(x, targets, valid, eps, lse, loss_rows, n_tasks)
    elif N:
        _cross_entropy_forward_rows(x, targets, valid, eps, lse, loss_rows, 0, N)
    loss = float(loss_rows.sum(dtype=np.float64) / n_valid) if n_valid else 0.0
    return loss, CrossEntropyCache(x, lse.reshape(N, 1), targets, valid, n_valid, eps, tuple(shape))


def cross_entropy_backward(dloss, cache, out=None):
    """npgpt.nn.loss.cross_entropy_backward in one pass over the logits: the gradient written
    straight into its own (N, V) array (or `out`, an array of the logits' shape and dtype, to
    reuse one across steps), where the NumPy form makes three (N, V) temporaries."""
    x, lse, targets, valid, n_valid, eps, shape = cache
    N, V = x.shape
    if out is None:
        out = np.empty(shape, dtype=x.dtype)
    else:
        if not isinstance(out, np.ndarray) or out.shape != tuple(shape) or out.dtype != x.dtype \
                or not out.flags.c_contiguous:
            raise ValueError(f"out has shape {getattr(out, 'shape', None)} and dtype "
                             f"{getattr(out, 'dtype', None)}: expected a C-contiguous {tuple(shape)} "
                             f"{x.dtype} array")
    if n_valid == 0:
        out[...] = 0
        return out
    dx = out.reshape(N, V)
    scale = float(dloss) / n_valid
    args = (x, np.ascontiguousarray(lse).reshape(N), targets, valid, float(eps), scale, dx)
    n_tasks = _tasks(N, V)
    if n_tasks:
        _cross_entropy_backward_tasks(*args, n_tasks)
    else:
        _cross_entropy_backward_rows(*args, 0, N)
    return out


# -- the embedding's scatter-add ------------------------------------------------------------------

@njit(fastmath=_FM, cache=True)
def _scatter_add_rows(out, idx, rows):
    """out[idx[i]] += rows[i] for every i, in order (a repeated id gets every row, summed)."""
    # for each token i: one row of the table gets its gradient row
    for i in range(idx.shape[0]):
        o, r = out[idx[i]], rows[i]
        for c in range(r.shape[0]):
            o[c] += r[c]


def embedding_backward(dout, cache, out=None):
    """npgpt.nn.embedding.embedding_backward: dW[idx[i]] += dout[i], added into `out` (V, C) when
    given (the Module passes its .grad), else into a new zero table; returns it.

    np.add.at is numpy's unbuffered scatter, general and slow: ~0.9 ms for the baby model's
    768 rows of 128, ~1.7 ms for GPT-2's 256 of 768; this loop: a few microseconds per row.
    On the calling thread: two tokens may share a row, so rows cannot be split among threads
    without partial tables.
    """
    idx, V = cache
    rows = _as_rows("dout", dout)
    flat = np.asarray(idx).reshape(-1)
    if flat.shape[0] != rows.shape[0]:
        raise ValueError(f"dout has shape {getattr(dout, 'shape', None)}: expected one row per token id "
                         f"({flat.shape[0]} ids)")
    if out is None:
        out = np.zeros((V, rows.shape[1]), dtype=rows.dtype)
    elif not isinstance(out, np.ndarray) or out.shape != (V, rows.shape[1]) or out.dtype != rows.dtype \
            or not out.flags.c_contiguous:
        raise ValueError(f"out has shape {getattr(out, 'shape', None)} and dtype {getattr(out, 'dtype', None)}: "
                         f"expected a C-contiguous ({V}, {rows.shape[1]}) {rows.dtype} array")
    if flat.size and (flat.min() < 0 or flat.max() >= V):
        raise ValueError(f"token ids out of range [0, {V}): min {flat.min()}, max {flat.max()}")
    _scatter_add_rows(out, flat.astype(np.int64, copy=False), rows)
    return out


# -- AdamW and the sum of squares over flat buffers ----------------------------------------------

@njit(error_model="numpy", cache=True)
def _adamw_span(p, g, m, v, decay, i0, i1, wd_factor, one_minus_beta1, beta2, one_minus_beta2,
                bc2_sqrt, eps, neg_step_size):
    """Elements i0 .. i1-1 of the AdamW step, each operation in npgpt.optim.adamw_update's order
    and dtype (no fastmath: no fused multiply-add, so the same roundings, bit for bit)."""
    ps, gs, ms, vs, ds = p[i0:i1], g[i0:i1], m[i0:i1], v[i0:i1], decay[i0:i1]
    for i in range(ps.shape[0]):
        pi = ps[i] * wd_factor if ds[i] else ps[i]          # p <- p (1 - lr wd)   where decay
        gi = gs[i]
        mi = ms[i] + (gi - ms[i]) * one_minus_beta1           # m <- m + (1 - beta1) (g - m)
        vi = vs[i] * beta2 + (gi * gi) * one_minus_beta2      # v <- beta2 v + (1 - beta2) g^2
        denom = np.sqrt(vi) / bc2_sqrt + eps                  # sqrt(v) / sqrt(1 - beta2^t) + eps
        ps[i] = pi + (mi / denom) * neg_step_size             # p <- p - lr / (1 - beta1^t) m / denom
        ms[i] = mi
        vs[i] = vi


@njit(parallel=True, cache=True)
def _adamw_tasks(p, g, m, v, decay, wd_factor, one_minus_beta1, beta2, one_minus_beta2, bc2_sqrt,
                 eps, neg_step_size, n_tasks):
    n = p.shape[0]
    # for each chunk of FLAT_CHUNK elements, in parallel
    for t in prange(n_tasks):
        _adamw_span(p, g, m, v, decay, t * FLAT_CHUNK, min(t * FLAT_CHUNK + FLAT_CHUNK, n),
                    wd_factor, one_minus_beta1, beta2, one_minus_beta2, bc2_sqrt, eps, neg_step_size)


def adamw_update(p, g, m, v, decay, lr, beta1, beta2, eps, weight_decay, step) -> None:
    """npgpt.optim.adamw_update as one parallel pass over the flat buffers, in place (p, m, v).

    The NumPy form walks each 64 K chunk nine times (one ufunc per operation); this reads
    p, g, m, v, decay once and writes p, m, v once: the update is bound by memory bandwidth.
    Every operation is the NumPy form's, in its order, with its constants rounded to the dtype
    as NumPy rounds them (a Python float meets a float32 array as a float32): equal bit for bit.
    """
    for name, a in (("g", g), ("m", m), ("v", v)):
        _check_like(name, a, p, "the shape and dtype of p")
    if not isinstance(p, np.ndarray) or p.ndim != 1 or p.dtype not in (np.float32, np.float64):
        raise TypeError(f"p has dtype {getattr(p, 'dtype', None)} and shape {getattr(p, 'shape', None)}: "
                        f"expected a 1-D float32 or float64 array")
    if not isinstance(decay, np.ndarray) or decay.shape != p.shape or decay.dtype != np.bool_:
        raise ValueError(f"decay has shape {getattr(decay, 'shape', None)} and dtype "
                         f"{getattr(decay, 'dtype', None)}: expected a bool array of shape {p.shape}")
    for name, a in (("p", p), ("g", g), ("m", m), ("v", v)):
        if not a.flags.c_contiguous:
            raise ValueError(f"{name} is not contiguous: expected a slice of a flat buffer")
    dt = p.dtype.type
    consts = (dt(1 - lr * weight_decay) if weight_decay != 0 else dt(1), dt(1 - beta1), dt(beta2),
              dt(1 - beta2), dt((1 - beta2 ** step) ** 0.5), dt(eps), dt(-(lr / (1 - beta1 ** step))))
    n_tasks = _flat_tasks(p.size)
    if n_tasks:
        _adamw_tasks(p, g, m, v, decay, *consts, n_tasks)
    elif p.size:
        _adamw_span(p, g, m, v, decay, 0, p.size, *consts)


@njit(fastmath=_FM, cache=True)
def _sum_squares_span(a, i0, i1):
    """sum(a[i0:i1]^2), each element squared and added in float64 (16 float64 partial sums)."""
    s = 0.0
    xs = a[i0:i1]
    for i in range(xs.shape[0]):
        x = np.float64(xs[i])
        s += x * x
    return s


@njit(parallel=True, cache=True)
def _sum_squares_tasks(a, parts):
    n = a.shape[0]
    # for each chunk of FLAT_CHUNK elements, in parallel: its own partial sum
    for t in prange(parts.shape[0]):
        parts[t] = _sum_squares_span(a, t * FLAT_CHUNK, min(t * FLAT_CHUNK + FLAT_CHUNK, n))


def sum_squares(a: np.ndarray) -> float:
    """sum(a^2) in float64 (npgpt.optim's clip_grad_norm's), one parallel pass: each chunk of
    FLAT_CHUNK elements summed on its own, then the chunks' sums in order."""
    if not isinstance(a, np.ndarray) or a.dtype not in (np.float32, np.float64):
        raise TypeError(f"a has dtype {getattr(a, 'dtype', type(a).__name__)}: expected a float32 "
                        f"or float64 array")
    flat = np.ascontiguousarray(a).reshape(-1)
    n_tasks = _flat_tasks(flat.size)
    if not n_tasks:
        return float(_sum_squares_span(flat, 0, flat.size)) if flat.size else 0.0
    parts = np.empty(n_tasks, dtype=np.float64)
    _sum_squares_tasks(flat, parts)
    return float(parts.sum())


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
        bias = reference.key_bias(None, 1, 5, dtype)

        def attention():
            for forward in (_attention_forward_fused, _attention_forward_blas):   # both paths
                out, cache = forward(q, k, v, True, bias)
                attention_backward(out, cache)

        def both_paths(call):
            """The calling-thread and the parallel variant (each is compiled on its own)."""
            global PARALLEL_FROM
            saved = PARALLEL_FROM
            try:
                for PARALLEL_FROM in (2**62, 0):
                    call()
            finally:
                PARALLEL_FROM = saved

        def layernorm():
            y, cache = layernorm_forward(a, a[0], a[0])
            layernorm_backward(y, cache)
            layernorm_backward(y, layernorm_forward(a, a[0])[1], need_dw=False)

        def gelu():
            y, cache = gelu_tanh_forward(a)
            gelu_tanh_backward(y, cache)

        def cross_entropy():
            loss, cache = cross_entropy_forward(a, np.arange(9) % 7, -100, 0.1, a.shape)
            cross_entropy_backward(1.0, cache)

        flat = a.reshape(-1)
        for kernel, call in (("gemm", lambda: (gemm(a, b), gemm(a.T.T, b.T.T), gemm(b.T, a.T))),
                             ("attention", attention),
                             ("erf", lambda: erf(a)),
                             ("layernorm", lambda: both_paths(layernorm)),
                             ("gelu_tanh", lambda: both_paths(gelu)),
                             ("cross_entropy", lambda: both_paths(cross_entropy)),
                             ("adamw", lambda: both_paths(lambda: adamw_update(
                                 flat.copy(), flat, flat.copy(), flat * flat, flat > 0, 1e-3, 0.9, 0.99,
                                 1e-8, 0.1, 1))),
                             ("sum_squares", lambda: both_paths(lambda: sum_squares(flat))),
                             ("embedding", lambda: embedding_backward(a, (np.arange(9) % 3, 3))),
                             ("matmul_add", lambda: matmul_add(a.T @ a, a.T, a))):
            t = time.perf_counter()
            call()
            seconds[f"{kernel}[{name}]"] = time.perf_counter() - t
    return seconds
