"""matmul and matmul_add on numpy's own OpenBLAS; matmul_add through its CBLAS interface.

matmul is the reference's: np.matmul (BLAS's hand-written kernels beat the study `gemm` on every
shape measured), with stacked rows (B, T, K) @ (K, N) flattened into one product.

matmul_add(c, a, b) is c += a @ b, what a layer's backward does to add a weight's gradient into
its .grad. np.matmul has no such form: `c += a @ b` makes a temporary of c's size, then walks c
again to add it; for GPT-2's tied head that is a 154 MB array per step, freshly paged in. BLAS's
gemm computes C = alpha A B + beta C, and beta = 1 adds into c while the product is formed: one
pass, no temporary. numpy does not expose it, so this module finds cblas_?gemm in the OpenBLAS
that numpy loaded and calls it with ctypes. The lookup runs once, when the module is imported.
"""

from __future__ import annotations

import ctypes

import numpy as np

from .. import reference

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112      # CBLAS's enum values


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b for (..., M, K) @ (K, N) or batched (..., M, K) @ (..., K, N): the reference's matmul.

    With a 2-D b, a's leading axes are flattened into one (M', K) product, as the reference does
    (np.matmul would make one BLAS call per (M, K) slice, packing all of b each time).
    """
    reference.check_matmul_args(a, b)
    if b.ndim == 2 and a.ndim > 2:
        out = np.matmul(a.reshape(-1, a.shape[-1]), b)              # (..., M, K) -> (M', K) @ (K, N)
        return out.reshape(a.shape[:-1] + (b.shape[1],))           # (M', N) -> (..., M, N)
    return np.matmul(a, b)


def matmul_add(c: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """c += a @ b in place (the reference's matmul_add), as one BLAS product with beta = 1.

    a and b may be transposed views (the backward's X^T dY): they go to BLAS as they are. Where
    no CBLAS was found, or an operand has neither contiguous rows nor contiguous columns, it is
    the reference's c += a @ b.
    """
    reference.check_matmul_add(c, a, b)
    if c.size and a.shape[1] and _blas_matmul_add(c, a, b):
        return c
    c += np.matmul(a, b)
    return c


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
    """c += a @ b with gemm's beta = 1, if a CBLAS was found and the layouts allow; True if done."""
    return _call_gemm(_CBLAS.get("s" if c.dtype == np.float32 else "d"), c, a, b)


def _call_gemm(fn, c, a, b) -> bool:
    la, lb, lc = _blas_layout(a), _blas_layout(b), _blas_layout(c)
    if fn is None or la is None or lb is None or lc is None or lc[0]:
        return False
    M, K = a.shape
    N = b.shape[1]
    fn(_ROW_MAJOR, _TRANS if la[0] else _NO_TRANS, _TRANS if lb[0] else _NO_TRANS, M, N, K, 1.0,
       a.ctypes.data, la[1], b.ctypes.data, lb[1], 1.0, c.ctypes.data, lc[1])
    return True


def _find_cblas_gemm(kind: str):
    """cblas_sgemm (kind "s") or cblas_dgemm ("d") of the OpenBLAS numpy loaded, or None.

    numpy >= 2's wheels ship OpenBLAS with 64-bit integers and prefixed symbols
    (scipy_cblas_sgemm64_); only those (or plain openblas64_ builds: cblas_sgemm64_) are used,
    since their integer width is known. One small product is checked against np.matmul; any
    doubt (another BLAS, a missing symbol, a wrong answer) and the answer is None.
    """
    try:
        with open("/proc/self/maps") as f:
            paths = sorted({line.split()[-1] for line in f if "openblas" in line.lower() and ".so" in line})
    except OSError:
        return None
    real = ctypes.c_float if kind == "s" else ctypes.c_double
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    for path in paths:
        lib = ctypes.CDLL(path)
        for name in (f"scipy_cblas_{kind}gemm64_", f"cblas_{kind}gemm64_"):
            if hasattr(lib, name):
                fn = getattr(lib, name)
                fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, i64, i64, i64, real, ptr, i64,
                               ptr, i64, real, ptr, i64]
                fn.restype = None
                return fn if _gives_the_right_answer(fn, np.float32 if kind == "s" else np.float64) else None
    return None


def _gives_the_right_answer(fn, dtype) -> bool:
    rng = np.random.default_rng(0)
    a, b, c0 = (rng.standard_normal(s).astype(dtype) for s in ((5, 3), (3, 4), (5, 4)))
    c = c0.copy()
    return _call_gemm(fn, c, a.T.copy().T, b) and np.allclose(c, c0 + a @ b, rtol=1e-5, atol=1e-5)


_CBLAS = {kind: _find_cblas_gemm(kind) for kind in ("s", "d")}   # {"s" | "d": ?gemm or None}
