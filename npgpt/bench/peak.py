"""What the machine can physically do: its compute peak and its memory bandwidth, measured.

    sgemm_gflops(sizes)       the best float32 GFLOP/s of numpy's BLAS on square products
                              n x n x n (2 n^3 flops each): the compute roof
    triad_gbs(n)              STREAM's triad a = b + s * c over three float32 arrays of n
                              elements, in Numba, on every thread: the memory roof
    read_gbs(n)               a parallel sum over one array of n float32: reading alone (npgpt
                              bench reads 3 n, the bytes of the triad's three arrays)

Bytes are counted as STREAM counts them: the triad moves 12 bytes per element (read b and c,
write a). The hardware moves 16 where a store first reads its cache line (write-allocate), so the
triad's figure is a cautious bound; decoding a token reads weights and writes almost nothing,
which is why the reading rate is reported beside it. Arrays default to 2^26 elements (256 MiB
each), far larger than any cache, so every pass comes from memory.

Each function times `repeats` passes after one untimed pass (page faults, the compile) and
returns the best, as STREAM does: a bound is what the machine can do, not what it usually does.
"""

from __future__ import annotations

import time

import numpy as np
from numba import njit, prange

TRIAD_ELEMENTS = 1 << 26          # 256 MiB per float32 array: far past every cache
GEMM_SIZES = (1024, 2048)         # square sgemm shapes; the best one is the compute roof


@njit(parallel=True, cache=True)
def _triad(a, b, c, s):
    """a = b + s * c, element by element, the elements split evenly among the threads."""
    for i in prange(a.shape[0]):
        a[i] = b[i] + s * c[i]


@njit(parallel=True, fastmath={"reassoc"}, cache=True)
def _read(x):
    """sum(x): a reduction over the threads (reassoc lets each thread sum in SIMD lanes)."""
    total = np.float32(0)
    for i in prange(x.shape[0]):
        total += x[i]
    return total


def _best_seconds(fn, repeats: int) -> float:
    fn()                                                  # page faults, the compile
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def triad_gbs(n: int = TRIAD_ELEMENTS, repeats: int = 5) -> float:
    """The triad's bandwidth in GB/s (1e9 bytes), STREAM's count: 3 * 4 bytes per element."""
    b = np.ones(n, dtype=np.float32)
    c = np.full(n, 2.0, dtype=np.float32)
    a = np.empty_like(b)
    seconds = _best_seconds(lambda: _triad(a, b, c, np.float32(3.0)), repeats)
    return 12 * n / seconds / 1e9


def read_gbs(n: int = TRIAD_ELEMENTS, repeats: int = 5) -> float:
    """Reading one array of n float32 (a parallel sum), in GB/s."""
    x = np.ones(n, dtype=np.float32)
    seconds = _best_seconds(lambda: _read(x), repeats)
    return 4 * n / seconds / 1e9


def sgemm_gflops(sizes=GEMM_SIZES, repeats: int = 3) -> tuple[float, int]:
    """(best GFLOP/s, at which n) of numpy's float32 matmul over n x n x n products."""
    rng = np.random.default_rng(0)
    best = (0.0, 0)
    for n in sizes:
        a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
        out = np.empty((n, n), dtype=np.float32)
        seconds = _best_seconds(lambda: np.matmul(a, b, out=out), repeats)
        best = max(best, (2 * n ** 3 / seconds / 1e9, n))
    return best
