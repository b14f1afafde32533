"""matmul and matmul_add on numpy's own OpenBLAS; matmul_add, and the products inside compiled
kernels (`_gemm`), through its CBLAS interface.

matmul is the reference's: np.matmul (BLAS's hand-written kernels beat the study `gemm` on every
shape measured), with stacked rows (B, T, K) @ (K, N) flattened into one product.

matmul_add(c, a, b) is c += a @ b, what a layer's backward does to add a weight's gradient into
its .grad. np.matmul has no such form: `c += a @ b` makes a temporary of c's size, then walks c
again to add it; for GPT-2's tied head that is a 154 MB array per step, freshly paged in. BLAS's
gemm computes C = alpha A B + beta C, and beta = 1 adds into c while the product is formed: one
pass, no temporary. numpy does not expose it, so this module finds cblas_?gemm in the OpenBLAS
that numpy loaded and calls it with ctypes. The lookup runs once, when the module is imported.

_gemm(A, B, C, beta) is C = A @ B + beta C on 2-D views, callable from a Numba kernel: the
fused attention's block products (attention.py). It calls the same cblas_?gemm, by a symbol
name registered with LLVM here (so Numba's on-disk cache stays valid from process to process),
where a Numba loop nest (gemm.py's kind) reaches a quarter of BLAS's speed on a 64 x 64 x 64
block (results/threads.md). Without a CBLAS, the symbol is a compiled loop nest instead.

The same OpenBLAS also says and sets how many threads it runs (openblas_api("get_num_threads"),
set_blas_threads, blas_threads): what MPI's processes on one machine share, and what a benchmark
pins.
"""

from __future__ import annotations

import contextlib
import ctypes

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir
from numba import cfunc, carray, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

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


def _openblas_libraries() -> list:
    """The OpenBLAS libraries this process loaded (numpy's), as ctypes libraries."""
    try:
        with open("/proc/self/maps") as f:
            paths = sorted({line.split()[-1] for line in f if "openblas" in line.lower() and ".so" in line})
    except OSError:
        return []
    return [ctypes.CDLL(path) for path in paths]


def openblas_function(*names):
    """The first of `names` exported by a loaded OpenBLAS (numpy's), or None."""
    for lib in _openblas_libraries():
        for name in names:
            if hasattr(lib, name):
                return getattr(lib, name)
    return None


def openblas_api(name: str):
    """OpenBLAS's own openblas_<name> (e.g. "get_num_threads") under the names numpy's wheels
    (scipy_openblas_<name>64_) and other builds give it, or None."""
    return openblas_function(f"scipy_openblas_{name}64_", f"openblas_{name}64_", f"openblas_{name}")


def set_blas_threads(threads: int) -> bool:
    """numpy's BLAS on `threads` threads from now on: through threadpoolctl where it is installed
    (every BLAS and OpenMP pool), else OpenBLAS's own setter. False when neither can."""
    try:
        # optional dependency (the `bench` extra): every BLAS and OpenMP pool, not only OpenBLAS
        from threadpoolctl import threadpool_limits
    except ImportError:
        put = openblas_api("set_num_threads")
        if put is None:
            return False
        put(int(threads))
        return True
    threadpool_limits(limits=int(threads), user_api="blas")
    return True


@contextlib.contextmanager
def blas_threads(threads: int):
    """Inside: numpy's BLAS (and any OpenMP pool) on `threads` threads, through threadpoolctl
    where it is installed, else through OpenBLAS's own openblas_set_num_threads (numpy's
    wheels carry OpenBLAS); the count before is put back on leaving. Another BLAS without
    threadpoolctl is left as it is."""
    try:
        # optional dependency (the `bench` extra): every BLAS and OpenMP pool, not only OpenBLAS
        from threadpoolctl import threadpool_limits
    except ImportError:
        threadpool_limits = None
    if threadpool_limits is not None:
        with threadpool_limits(limits=threads):
            yield
        return
    get, put = openblas_api("get_num_threads"), openblas_api("set_num_threads")
    if get is None or put is None:
        yield
        return
    before = get()
    put(threads)
    try:
        yield
    finally:
        put(before)


def _find_cblas_gemm(kind: str):
    """cblas_sgemm (kind "s") or cblas_dgemm ("d") of the OpenBLAS numpy loaded, or None.

    numpy >= 2's wheels ship OpenBLAS with 64-bit integers and prefixed symbols
    (scipy_cblas_sgemm64_); only those (or plain openblas64_ builds: cblas_sgemm64_) are used,
    since their integer width is known. One small product is checked against np.matmul; any
    doubt (another BLAS, a missing symbol, a wrong answer) and the answer is None.
    """
    fn = openblas_function(f"scipy_cblas_{kind}gemm64_", f"cblas_{kind}gemm64_")
    if fn is None:
        return None
    real = ctypes.c_float if kind == "s" else ctypes.c_double
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, i64, i64, i64, real, ptr, i64, ptr, i64, real,
                   ptr, i64]
    fn.restype = None
    return fn if _gives_the_right_answer(fn, np.float32 if kind == "s" else np.float64) else None


def _gives_the_right_answer(fn, dtype) -> bool:
    rng = np.random.default_rng(0)
    a, b, c0 = (rng.standard_normal(s).astype(dtype) for s in ((5, 3), (3, 4), (5, 4)))
    c = c0.copy()
    return _call_gemm(fn, c, a.T.copy().T, b) and np.allclose(c, c0 + a @ b, rtol=1e-5, atol=1e-5)


_CBLAS = {kind: _find_cblas_gemm(kind) for kind in ("s", "d")}   # {"s" | "d": ?gemm or None}


# ---------------------------------------------------------------------------------------------
# _gemm: C = A @ B + beta C inside a compiled kernel, on BLAS
# ---------------------------------------------------------------------------------------------

# the symbols a compiled kernel calls, bound below to cblas_sgemm / cblas_dgemm (or a loop nest)
_SYMBOLS = {"s": "npgpt_cblas_sgemm", "d": "npgpt_cblas_dgemm"}
# A product of at most this many multiply-adds (M N K) runs on the calling thread in OpenBLAS
# (its threshold for using its own threads, 65536 x GEMM_MULTITHREAD_THRESHOLD 4): a kernel
# that calls _gemm from its parallel tasks keeps its blocks under it, so that the two thread
# pools never meet.
GEMM_SERIAL_MNK = 65536 * 4


def _loop_gemm(kind: str):
    """cblas_?gemm's signature, row-major, no transposes, as a compiled loop nest: the symbol's
    target where numpy's BLAS offers no CBLAS (correct, and as slow as a plain loop nest)."""
    real = types.float32 if kind == "s" else types.float64
    sig = types.void(types.int32, types.int32, types.int32, types.int64, types.int64, types.int64, real,
                     types.CPointer(real), types.int64, types.CPointer(real), types.int64, real,
                     types.CPointer(real), types.int64)

    def gemm_nn(order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
        A, B, C = carray(a, (m, lda)), carray(b, (k, ldb)), carray(c, (m, ldc))
        for i in range(m):
            for j in range(n):
                C[i, j] = C[i, j] * beta if beta != 0 else 0
            # C_i += alpha * A_ip * B_p, for p along the sum
            for p in range(k):
                x = alpha * A[i, p]
                for j in range(n):
                    C[i, j] += x * B[p, j]
    return cfunc(sig, cache=True)(gemm_nn)


def _bind_symbols() -> None:
    for kind, symbol in _SYMBOLS.items():
        fn = _CBLAS[kind]
        address = ctypes.cast(fn, ctypes.c_void_p).value if fn is not None else _loop_gemm(kind).address
        llvm.add_symbol(symbol, address)


_bind_symbols()


@intrinsic
def _cblas_gemm_nn(typingctx, m, n, k, a, lda, b, ldb, beta, c, ldc):
    """cblas_?gemm(RowMajor, NoTrans, NoTrans, m, n, k, 1, a, lda, b, ldb, beta, c, ldc), the
    precision chosen by beta's type; a, b, c: addresses."""
    kind = "s" if beta.bitwidth == 32 else "d"
    i, u = types.intp, types.uintp
    sig = types.void(i, i, i, u, i, u, i, beta, u, i)

    def codegen(context, builder, signature, args):
        i32, i64 = ir.IntType(32), ir.IntType(64)
        real = ir.FloatType() if kind == "s" else ir.DoubleType()
        ptr = real.as_pointer()
        fnty = ir.FunctionType(ir.VoidType(), [i32, i32, i32, i64, i64, i64, real, ptr, i64, ptr, i64,
                                                real, ptr, i64])
        fn = cgutils.get_or_insert_function(builder.module, fnty, _SYMBOLS[kind])
        m_, n_, k_, a_, lda_, b_, ldb_, beta_, c_, ldc_ = args
        builder.call(fn, [ir.Constant(i32, _ROW_MAJOR), ir.Constant(i32, _NO_TRANS), ir.Constant(i32, _NO_TRANS),
                          m_, n_, k_, ir.Constant(real, 1.0), builder.inttoptr(a_, ptr), lda_,
                          builder.inttoptr(b_, ptr), ldb_, beta_, builder.inttoptr(c_, ptr), ldc_])
    return sig, codegen


def _gemm(A, B, C, beta):
    """C = A @ B + beta C, in place, inside compiled code. A: (m, k), B: (k, n), C: (m, n),
    views whose rows are contiguous (any row stride); beta 0 overwrites C, 1 adds into it."""
    raise NotImplementedError("only callable from compiled code")


@overload(_gemm)
def _gemm_impl(A, B, C, beta):
    dt = C.dtype

    def gemm(A, B, C, beta):
        m, k = A.shape
        n = B.shape[1]
        if m == 0 or n == 0:
            return
        if k == 0:                               # BLAS would scale C by beta: do it here
            if beta == 0:
                C[:, :] = 0
            return
        item = A.itemsize
        _cblas_gemm_nn(m, n, k, A.ctypes.data, max(A.strides[0] // item, k), B.ctypes.data,
                       max(B.strides[0] // item, n), dt(beta), C.ctypes.data, max(C.strides[0] // item, n))
    return gemm
