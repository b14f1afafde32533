"""The study GEMM: a blocked, register-tiled matrix product in Numba.

matmul itself goes to numpy's BLAS (blas.py), which is faster on every shape measured
(benchmarks/results/gemm.md); `gemm` is here to be read, and is tested equal to the reference.
The fused attention, which once built its block products from these pieces, calls BLAS's
small-matrix kernels too (blas.py's `_gemm`: ~4x faster on its 64 x 64 x 64 blocks).

    _tile4x4   16 dot products of 4 rows of A with 4 rows of B, the sums held in registers
    _abt       C (+)= A @ B^T, rows of both contiguous along the sum: 4 x 4 tiles of `_tile4x4`.
               The inner loop is a dot product, so it wins for long sums
    _dot       one dot product (the tiles' edges; attention's rowsum(dO * O))
    gemm       C = a @ b, cache-blocked panels of `_abt`, one parallel task per row panel

Where an operand is laid out the other way it is first copied transposed ("packed"), at a cost
linear in its size.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .. import reference
from .intrinsics import _FM

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


# ---------------------------------------------------------------------------------------------
# GEMM
# ---------------------------------------------------------------------------------------------
# Cache blocking, sized for a 32 KiB L1d and a 1 MiB L2 per core (sizes within a factor of two
# either way measured alike: benchmarks/results/threads.md).
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
       units, not by memory): about 13x the naive i-j-k triple loop.
    2. Cache blocking (`_gemm_rows`): the summed index is cut in panels of GEMM_KC so that the 8
       rows of one tile stay in L1; C's columns in panels of GEMM_NC so that those rows of Bt stay
       in L2 while every row of A passes them; C's rows in panels of GEMM_MC, one parallel task
       each (prange).
    3. Edges: rows or columns that do not fill a 4 x 4 tile are single dot products (`_abt`).

    Transposed inputs (the backward's a.T @ b and a @ b.T) are views with the wrong strides: they
    are packed into C-contiguous copies first (a @ b.T needs no copy at all: b.T's transpose is b).

    It reaches 0.6-0.8x OpenBLAS's speed on large squares, less on short sums (the 16 sums
    across SIMD lanes at the end of each tile weigh more when the tile's loop is short): see
    benchmarks/results/gemm.md. That is why matmul takes BLAS.
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
