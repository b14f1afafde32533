"""The CUDA backend: numba.cuda kernels, written to be studied (an optional target).

Every function here has the signature and the semantics of its twin in kernels/reference.py and
is tested equal to it (tests/kernels/test_cuda_kernels.py, under numba's CUDA simulator in CI;
benchmarks/cuda_check.py on a real GPU). What is here:

    matmul(a, b)               a shared-memory tiled GEMM: one thread per element of C
    attention_forward(...)     FlashAttention's idea, one thread per query row: key blocks staged
    attention_backward(...)    in shared memory, an online softmax; the cache keeps a row
                               log-sum-exp (B, H, Tq), never a (Tq, Tk) matrix

What this backend is for. The layers hold numpy arrays, so every call copies its inputs to the
GPU and its result back. For the shapes of this project's models (a baby GPT: a few hundred rows
of 128 columns) those copies and the kernel launches from Python take far longer than the
arithmetic (benchmarks/cuda_check.py times them against the CPU): this target is for study (how
a GPU kernel is laid out: threads, blocks, shared memory, barriers) and for checking the kernels
on a real device, not for speed at this size.
The kernels are the textbook versions, not tuned ones (no register tiling, no tensor cores).

How the code is organised. CUDA needs the sizes of shared and local arrays at compile time, so
each kernel is built by a small factory (`_gemm_kernel(tile, dtype)`, `_attention_kernels(br,
bc, D, dtype)`) that closes over those sizes and over the dtype; the factory is cached, so a
kernel is compiled once per tile size, head size and dtype. The dtype's own scalars (`zero`,
`neg_inf`) are used throughout so that a float32 kernel does no float64 arithmetic.

Running without a GPU: with NUMBA_ENABLE_CUDASIM=1 (set before numba is imported) numba.cuda
runs every thread of a kernel as a Python thread on the CPU: the same code, correct, and very
slow. Under the simulator the tile and block sizes below are small, so that a test's blocks hold
a few threads; the tests also run the device sizes on tiny shapes. check_available() says which
of the two is missing when neither works.

Why one file: the backend is three subjects' worth of kernels (a GEMM, attention forward and
backward) that share one set of launch sizes, one simulator switch and one way of staging rows
in shared memory; read top to bottom, it is one lesson in GPU layout, and the attention kernels
sit in one factory because they share its device functions and compile-time sizes.
"""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np
from numba import config, cuda
from numba.core.errors import NumbaPerformanceWarning

from . import reference

__all__ = ["matmul", "attention_forward", "attention_backward"]

SIMULATOR = bool(config.ENABLE_CUDASIM)   # numba.cuda runs kernels in Python threads on the CPU
# GEMM_TILE: a GEMM block is GEMM_TILE x GEMM_TILE threads, one element of C each
# ATTN_BR:   threads of an attention block, one query (key) row each
# ATTN_BC:   keys (queries) an attention block stages in shared memory per step
DEVICE_SIZES = (16, 64, 32)               # (GEMM_TILE, ATTN_BR, ATTN_BC) on a GPU
SIMULATOR_SIZES = (4, 4, 4)               # a few threads per block: the simulator runs each in Python
GEMM_TILE, ATTN_BR, ATTN_BC = SIMULATOR_SIZES if SIMULATOR else DEVICE_SIZES
SHARED_BYTES = 48 * 1024                  # static shared memory one block may use on every GPU
MAX_GRID_Y = 65535                        # CUDA's limit on gridDim.y and gridDim.z


def check_available() -> None:
    """Raise RuntimeError, saying why, unless numba.cuda can run a kernel here.

    It needs an NVIDIA GPU with its driver (and the CUDA toolkit's NVVM to compile), or numba's
    CUDA simulator. The check launches a one-thread kernel and reads its result back.
    """
    try:
        flag = cuda.to_device(np.zeros(1, dtype=np.float32))
        with warnings.catch_warnings():              # "grid size 1 ... under-utilization": on purpose
            warnings.simplefilter("ignore", NumbaPerformanceWarning)
            _probe[1, 1](flag)
        ok = flag.copy_to_host()[0] == 1
    except Exception as e:        # no driver, no GPU, no NVVM: numba's own message says which
        reason = " ".join(f"{type(e).__name__}: {e}".split())
        raise RuntimeError(
            f"numba.cuda cannot run a kernel here ({reason}). The cuda backend needs an NVIDIA GPU "
            f"with its driver and the CUDA toolkit (set CUDA_HOME if numba does not find it), or "
            f"numba's CUDA simulator: NUMBA_ENABLE_CUDASIM=1 in the environment before numba is "
            f"imported (it runs the kernels in Python on the CPU: slow, for tests)") from None
    if not ok:
        raise RuntimeError("numba.cuda ran a one-thread kernel but its result did not come back")


@cuda.jit
def _probe(flag):
    flag[0] = 1


# ---------------------------------------------------------------------------------------------
# matmul: a shared-memory tiled GEMM
# ---------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _gemm_kernel(tile: int, dtype: np.dtype):
    """The tiled GEMM kernel for one tile size and dtype: C[z] = A[z] @ B[z] for every z.

    A: (nb, M, K), B: (nb, K, N), C: (nb, M, N), C-contiguous device arrays. Launched with blocks
    of (tile, tile) threads and a grid of (ceil(M / tile), ceil(N / tile), <= 65535) blocks.

    The variant: each thread computes one element C[i, j] = sum_k A[i, k] B[k, j]. The naive kernel
    reads A's row and B's column from global memory: 2K loads for 2K flops. Here the block's
    threads first copy a tile x tile tile of A and one of B into shared memory (each thread one
    element of each: neighbouring threads read neighbouring addresses, so the loads coalesce),
    wait at a barrier, and then every thread sums over the tile from shared memory: each element
    loaded from global memory is used `tile` times. Elements past an edge (M, N or K not a
    multiple of the tile) are staged as 0, so the sum needs no test inside its loop.
    """
    scalar = np.dtype(dtype).type
    zero = scalar(0)

    @cuda.jit
    def gemm(A, B, C):
        nb, M, K = A.shape
        N = B.shape[2]
        sa = cuda.shared.array((tile, tile), scalar)     # A[i0:i0+tile, k0:k0+tile]
        sb = cuda.shared.array((tile, tile), scalar)     # B[k0:k0+tile, j0:j0+tile]
        ty = cuda.threadIdx.y
        tx = cuda.threadIdx.x
        i = cuda.blockIdx.x * tile + ty                  # the row of C this thread computes
        j = cuda.blockIdx.y * tile + tx                  # and its column
        # for each matrix z of the batch (a grid-stride loop: the grid's z is at most 65535)
        for z in range(cuda.blockIdx.z, nb, cuda.gridDim.z):
            acc = zero
            # for each tile of the summed index, k0 = 0, tile, 2 tile, ...
            for k0 in range(0, K, tile):
                # stage A[i, k0 + tx] and B[k0 + ty, j], 0 past the edges
                sa[ty, tx] = A[z, i, k0 + tx] if i < M and k0 + tx < K else zero
                sb[ty, tx] = B[z, k0 + ty, j] if k0 + ty < K and j < N else zero
                cuda.syncthreads()                       # the whole tile is staged
                # acc += A_tile[ty, :] . B_tile[:, tx]
                for kk in range(tile):
                    acc += sa[ty, kk] * sb[kk, tx]
                cuda.syncthreads()                       # every thread is done with the tile
            if i < M and j < N:
                C[z, i, j] = acc

    return gemm


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b for (..., M, K) @ (K, N) or batched (..., M, K) @ (..., K, N), on the GPU.

    (..., M, K) @ (K, N) is one GEMM of all the rows at once; batched products are broadcast on
    the host to one (nb, M, K) @ (nb, K, N) stack. Inputs are made C-contiguous on the host
    (transposed views are copied) before they are copied to the device, and C is copied back: for
    small shapes these copies take longer than the product (see the module docstring). float32
    and float64 run the kernel (`_gemm_kernel`); other dtypes go to reference.matmul.
    """
    reference.check_matmul_args(a, b)
    M, K = a.shape[-2:]
    N = b.shape[-1]
    if b.ndim == 2:
        batch = a.shape[:-2]
    else:
        try:
            batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        except ValueError:
            raise ValueError(f"matmul: a has shape {a.shape} and b {b.shape}: expected batch "
                             f"dimensions that broadcast together") from None
    out_shape = batch + (M, N)
    if a.dtype not in (np.float32, np.float64):
        return reference.matmul(a, b)
    if math.prod(out_shape) == 0 or K == 0:
        return np.zeros(out_shape, dtype=a.dtype)
    tile = GEMM_TILE
    if b.ndim == 2:
        A = np.ascontiguousarray(a).reshape(1, -1, K)               # (..., M, K) -> (1, M', K)
        B = np.ascontiguousarray(b).reshape(1, K, N)                # (K, N) -> (1, K, N)
    else:
        A = np.ascontiguousarray(np.broadcast_to(a, batch + (M, K))).reshape(-1, M, K)  # (nb, M, K)
        B = np.ascontiguousarray(np.broadcast_to(b, batch + (K, N))).reshape(-1, K, N)  # (nb, K, N)
    nb, rows = A.shape[0], A.shape[1]
    grid = (-(-rows // tile), -(-N // tile), min(nb, MAX_GRID_Y))
    if grid[1] > MAX_GRID_Y:
        raise ValueError(f"matmul: b has {N} columns: expected at most {MAX_GRID_Y * tile} "
                         f"(CUDA's grid limit times the tile, {tile})")
    kernel = _gemm_kernel(tile, a.dtype)
    dA, dB = cuda.to_device(A), cuda.to_device(B)
    dC = cuda.device_array((nb, rows, N), dtype=a.dtype)
    kernel[grid, (tile, tile)](dA, dB, dC)
    return dC.copy_to_host().reshape(out_shape)                     # (nb, M, N) -> (..., M, N)


# ---------------------------------------------------------------------------------------------
# attention: one thread per query row, key blocks in shared memory, an online softmax
# ---------------------------------------------------------------------------------------------

def _staged_rows(bc: int, D: int, itemsize: int) -> int:
    """How many rows of the other operand a block stages per step: bc, or fewer when bc rows of
    two (D,) vectors and two scalars would not fit in SHARED_BYTES of shared memory."""
    fit = SHARED_BYTES // ((2 * D + 2) * itemsize)
    if fit < 1:
        raise ValueError(f"attention: head size D={D} is too large for the CUDA kernels: one staged "
                         f"row needs {(2 * D + 2) * itemsize} bytes of shared memory, "
                         f"expected at most {SHARED_BYTES}")
    return min(bc, fit)


# CUDA needs shared and local array sizes at compile time: the three attention kernels close
# over (br, bc, D, dtype), and share their device functions (dot, stage, visible) inside it.
# kernel factory: one closure per compile-time shape, its kernels and their helpers together
@functools.lru_cache(maxsize=None)
def _attention_kernels(br: int, bc: int, D: int, dtype: np.dtype):
    """The three attention kernels for one block shape, head size D and dtype: (forward, dq, dkdv).

    All three are launched with blocks of br threads, one per row, and a grid of (B * H,
    ceil(rows / br)) blocks: blockIdx.x is the (batch, head), blockIdx.y the block of rows.
    The block walks the other operand in steps of bc rows, which its threads first copy into
    shared memory together (`stage`): each key is read from global memory once per block of br
    queries, not once per query.

    Compiled for sm_90 at D = 64 (ptxas -v): float32 forward 170 registers per thread, no spills;
    the backward kernels 255 registers with a few hundred bytes spilled (their four (D,) rows of
    local arrays live in registers when they fit); float64 spills more. 64 threads per block keep
    even 255 registers a thread within one multiprocessor's register file.
    """
    scalar = np.dtype(dtype).type
    zero, neg_inf = scalar(0), scalar(-np.inf)

    @cuda.jit(device=True)
    def dot(x, y):
        """x . y over D, summed d = 0, 1, ... in order: the same order everywhere, so that the
        backward recomputes exactly the forward's scores."""
        s = zero
        for d in range(D):
            s += x[d] * y[d]
        return s

    @cuda.jit(device=True)
    def lesser(a, b):
        """min(a, b), written out: numba's built-in min and max do not compile for this target."""
        return a if a < b else b

    @cuda.jit(device=True)
    def greater(a, b):
        """max(a, b), written out (no NaN reaches it: scores are finite or -inf)."""
        return a if a > b else b

    @cuda.jit(device=True)
    def visible(i, Tq, Tk, causal):
        """How many of the first keys query i may see: all, or (causal) keys j <= i + (Tk - Tq)."""
        return lesser(Tk, i + Tk - Tq + 1) if causal else Tk

    @cuda.jit(device=True)
    def stage(x, b, h, r0, n, sx, t):
        """Copy rows r0 .. r0 + n - 1 of x[b, h] into the shared sx, the block's br threads taking
        turns over the n * D elements (neighbouring threads read neighbouring addresses)."""
        for e in range(t, n * D, br):
            sx[e // D, e % D] = x[b, h, r0 + e // D, e % D]

    @cuda.jit
    def forward(q, k, v, key_bias, causal, scale, out, lse):
        H, Tq, Tk = q.shape[1], q.shape[2], k.shape[2]
        b, h = cuda.blockIdx.x // H, cuda.blockIdx.x % H
        t = cuda.threadIdx.x
        i = cuda.blockIdx.y * br + t                   # this thread's query row
        active = i < Tq                                # the last block's spare threads only stage
        sk = cuda.shared.array((bc, D), scalar)        # K_j: a block of keys
        sv = cuda.shared.array((bc, D), scalar)        # V_j
        qi = cuda.local.array(D, scalar)               # q_i
        acc = cuda.local.array(D, scalar)              # sum_j exp(s_ij - m) v_j, rescaled as m grows
        s = cuda.local.array(bc, scalar)               # s_ij for the keys of K_j
        # load q_i; acc = 0
        for d in range(D):
            qi[d] = q[b, h, i, d] if active else zero
            acc[d] = zero
        m = neg_inf                                    # running max of the row's scores
        l = zero                                       # running sum of exp(s_ij - m)  # noqa: E741
        last = lesser(cuda.blockIdx.y * br + br, Tq) - 1          # the block's last query row
        kend = visible(last, Tq, Tk, causal)           # keys past kend are hidden from the whole block
        nvis = visible(i, Tq, Tk, causal)              # keys past nvis are hidden from this row
        # for each key block K_j, V_j = k[j0:j0+bc], v[j0:j0+bc] that a row of this block may see
        for j0 in range(0, kend, bc):
            nj = lesser(bc, kend - j0)
            stage(k, b, h, j0, nj, sk, t)
            stage(v, b, h, j0, nj, sv, t)
            cuda.syncthreads()                         # K_j, V_j are staged
            if active:
                nv = lesser(nj, nvis - j0)             # keys of K_j this row sees (causal)
                # s_ij = q_i . k_j * scale + bias_j, and their max
                mx = neg_inf
                for c in range(nv):
                    x = dot(qi, sk[c]) * scale + key_bias[b, j0 + c]
                    s[c] = x
                    mx = greater(mx, x)
                m_new = greater(m, mx)
                if m_new > neg_inf:                    # else nothing visible yet: nothing to add
                    # online softmax: what was summed so far is rescaled by exp(m - m_new)
                    alpha = math.exp(m - m_new)
                    l *= alpha
                    for d in range(D):
                        acc[d] *= alpha
                    # for each visible key: p = exp(s_ij - m_new);  l += p;  acc += p v_j
                    for c in range(nv):
                        p = math.exp(s[c] - m_new)
                        l += p
                        for d in range(D):
                            acc[d] += p * sv[c, d]
                    m = m_new
            cuda.syncthreads()                         # every thread is done with K_j, V_j
        if active:
            # out_i = acc / l;  lse_i = m + log(l)   (a row that saw no key: out = 0, lse = -inf)
            for d in range(D):
                out[b, h, i, d] = acc[d] / l if l > zero else zero
            lse[b, h, i] = m + math.log(l) if l > zero else neg_inf

    @cuda.jit
    def backward_dq(q, k, v, out, dout, lse, key_bias, causal, scale, dq, delta):
        H, Tq, Tk = q.shape[1], q.shape[2], k.shape[2]
        b, h = cuda.blockIdx.x // H, cuda.blockIdx.x % H
        t = cuda.threadIdx.x
        i = cuda.blockIdx.y * br + t                   # this thread's query row
        active = i < Tq
        sk = cuda.shared.array((bc, D), scalar)        # K_j
        sv = cuda.shared.array((bc, D), scalar)        # V_j
        qi = cuda.local.array(D, scalar)               # q_i
        doi = cuda.local.array(D, scalar)              # dout_i
        dqi = cuda.local.array(D, scalar)              # dq_i, summed over the keys
        # load q_i, dout_i; dq_i = 0
        for d in range(D):
            qi[d] = q[b, h, i, d] if active else zero
            doi[d] = dout[b, h, i, d] if active else zero
            dqi[d] = zero
        # D_i = dout_i . out_i  (= sum_j p_ij dp_ij, the softmax backward's subtracted term)
        di = dot(doi, out[b, h, i]) if active else zero
        li = lse[b, h, i] if active else neg_inf
        if active:
            delta[b, h, i] = di                        # for backward_dkdv
        live = li > neg_inf               # a row that saw no key has no gradient (and p would be NaN)
        kend = visible(lesser(cuda.blockIdx.y * br + br, Tq) - 1, Tq, Tk, causal)
        nvis = visible(i, Tq, Tk, causal)
        # for each key block K_j, V_j that a row of this block may see
        for j0 in range(0, kend, bc):
            nj = lesser(bc, kend - j0)
            stage(k, b, h, j0, nj, sk, t)
            stage(v, b, h, j0, nj, sv, t)
            cuda.syncthreads()
            if live:
                # for each visible key j of the block:
                for c in range(lesser(nj, nvis - j0)):
                    # p_ij = exp(q_i . k_j * scale + bias_j - lse_i), recomputed from the row's lse
                    p = math.exp(dot(qi, sk[c]) * scale + key_bias[b, j0 + c] - li)
                    # forward: out_i = sum_j p_ij v_j  ->  dp_ij = dout_i . v_j
                    # forward: p = softmax(s)         ->  ds_ij = p_ij (dp_ij - D_i) scale
                    ds = p * (dot(doi, sv[c]) - di) * scale
                    # forward: s_ij = q_i . k_j scale ->  dq_i += ds_ij k_j
                    for d in range(D):
                        dqi[d] += ds * sk[c, d]
            cuda.syncthreads()
        if active:
            # write dq_i
            for d in range(D):
                dq[b, h, i, d] = dqi[d]

    @cuda.jit
    def backward_dkdv(q, k, v, dout, lse, delta, key_bias, causal, scale, dk, dv):
        H, Tq, Tk = q.shape[1], q.shape[2], k.shape[2]
        b, h = cuda.blockIdx.x // H, cuda.blockIdx.x % H
        t = cuda.threadIdx.x
        j = cuda.blockIdx.y * br + t                   # this thread's key row
        active = j < Tk
        sq = cuda.shared.array((bc, D), scalar)        # Q_i: a block of queries
        sdo = cuda.shared.array((bc, D), scalar)       # dO_i
        sl = cuda.shared.array(bc, scalar)             # lse_i
        sdelta = cuda.shared.array(bc, scalar)         # D_i
        kj = cuda.local.array(D, scalar)               # k_j
        vj = cuda.local.array(D, scalar)               # v_j
        dkj = cuda.local.array(D, scalar)              # dk_j, summed over the queries
        dvj = cuda.local.array(D, scalar)              # dv_j
        # load k_j, v_j; dk_j = dv_j = 0
        for d in range(D):
            kj[d] = k[b, h, j, d] if active else zero
            vj[d] = v[b, h, j, d] if active else zero
            dkj[d] = zero
            dvj[d] = zero
        bias = key_bias[b, j] if active else neg_inf
        live = bias > neg_inf                          # a padded key has no gradient
        # the first query that sees key j: causal, i >= j - (Tk - Tq); else every query, from 0
        first = greater(0, cuda.blockIdx.y * br - (Tk - Tq)) if causal else 0   # for the block's first key
        mine = greater(0, j - (Tk - Tq)) if causal else 0                       # for key j
        # for each block of queries Q_i, dO_i = q[i0:i0+bc], dout[i0:i0+bc] that may see a key here
        for i0 in range(first, Tq, bc):
            ni = lesser(bc, Tq - i0)
            stage(q, b, h, i0, ni, sq, t)
            stage(dout, b, h, i0, ni, sdo, t)
            # stage lse_i and D_i of the block's queries
            for e in range(t, ni, br):
                sl[e] = lse[b, h, i0 + e]
                sdelta[e] = delta[b, h, i0 + e]
            cuda.syncthreads()
            if live:
                # for each query i of the block that sees key j (so lse_i is finite):
                for r in range(greater(0, mine - i0), ni):
                    # p_ij, recomputed exactly as backward_dq and the forward computed it
                    p = math.exp(dot(sq[r], kj) * scale + bias - sl[r])
                    # ds_ij = p_ij (dout_i . v_j - D_i) scale, as backward_dq
                    ds = p * (dot(sdo[r], vj) - sdelta[r]) * scale
                    # forward: out_i = sum_j p_ij v_j  ->  dv_j += p_ij dout_i
                    # forward: s_ij = q_i . k_j scale  ->  dk_j += ds_ij q_i
                    for d in range(D):
                        dvj[d] += p * sdo[r, d]
                        dkj[d] += ds * sq[r, d]
            cuda.syncthreads()
        if active:
            # write dk_j, dv_j
            for d in range(D):
                dk[b, h, j, d] = dkj[d]
                dv[b, h, j, d] = dvj[d]

    return forward, backward_dq, backward_dkdv


def attention_forward(q, k, v, causal=True, key_pad=None, dropout_p=0.0, rng=None):
    """Scaled dot-product attention on the GPU, with the reference's semantics.

        s = q @ k^T / sqrt(D) + mask;  att = softmax(s);  out = att @ v      (see reference.py)

    The variant (FlashAttention's idea, in its simplest GPU form): one thread per (batch, head,
    query row); a block of ATTN_BR rows stages ATTN_BC keys and values at a time in shared memory,
    and each thread walks them with an online softmax, keeping a running max m and sum l of its
    row: when a key block raises the max, what was summed so far is rescaled by exp(m_old - m_new).
    So no (Tq, Tk) matrix is ever written, and the cache (reference.FlashAttentionCache) keeps the
    row log-sum-exp lse = m + log(l) in place of the probabilities. Key blocks wholly in the future
    of a query block (causal) are not visited. A row whose every key is hidden gets out = 0.
    dropout_p > 0 goes to reference.attention_forward (dropping probabilities needs them
    materialised); attention_backward follows the type of the cache.
    """
    reference.check_attention_args(q, k, v, key_pad, causal)        # before any kernel launch
    if dropout_p > 0:
        return reference.attention_forward(q, k, v, causal, key_pad, dropout_p, rng)
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    scale = 1.0 / math.sqrt(D)
    bc = _staged_rows(ATTN_BC, D, q.dtype.itemsize)
    q, k, v = (np.ascontiguousarray(t) for t in (q, k, v))
    key_bias = reference.key_bias(key_pad, B, Tk, q.dtype)
    out = np.zeros((B, H, Tq, D), dtype=q.dtype)
    lse = np.full((B, H, Tq), -np.inf, dtype=q.dtype)
    if q.size and k.size:
        forward, _, _ = _attention_kernels(ATTN_BR, bc, D, q.dtype)
        q_dev, k_dev, v_dev, bias_dev = (cuda.to_device(t) for t in (q, k, v, key_bias))
        out_dev, lse_dev = cuda.device_array_like(out), cuda.device_array_like(lse)
        forward[(B * H, -(-Tq // ATTN_BR)), ATTN_BR](                 # grid (B H, row blocks), br threads
            q_dev, k_dev, v_dev, bias_dev, bool(causal), q.dtype.type(scale), out_dev, lse_dev)
        out, lse = out_dev.copy_to_host(), lse_dev.copy_to_host()
    return out, reference.FlashAttentionCache(q, k, v, out, lse, key_bias, bool(causal), scale)


def attention_backward(dout, cache):
    """Gradients (dq, dk, dv) of attention_forward, for either kind of cache it returns.

    FlashAttentionCache: two kernels, each recomputing p_ij = exp(s_ij - lse_i) from the row lse:
        backward_dq    one thread per query row i:  D_i = dout_i . out_i, then over its keys
                       ds_ij = p_ij (dout_i . v_j - D_i) * scale,   dq_i = sum_j ds_ij k_j
        backward_dkdv  one thread per key row j, over the queries that see it:
                       dv_j = sum_i p_ij dout_i,   dk_j = sum_i ds_ij q_i
    (D_i equals sum_j p_ij dp_ij, the term the softmax backward subtracts.) Each gradient row is
    summed by the one thread that owns it: no two threads write one address, so no atomics, and
    the sums come out in the same order on every run. The price is computing p_ij and ds_ij twice.
    A reference AttentionCache (dropout_p > 0) goes to reference.attention_backward.
    """
    if isinstance(cache, reference.AttentionCache):
        return reference.attention_backward(dout, cache)
    if not isinstance(cache, reference.FlashAttentionCache):
        raise TypeError(f"attention_backward: cache is {type(cache).__name__}: expected the cache "
                        f"returned by attention_forward")
    q, k, v, out, lse, key_bias, causal, scale = cache
    if not isinstance(dout, np.ndarray) or dout.shape != q.shape or dout.dtype != q.dtype:
        raise ValueError(f"attention_backward: dout has shape {getattr(dout, 'shape', None)} and dtype "
                         f"{getattr(dout, 'dtype', None)}: expected {q.shape} {q.dtype}")
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    dq, dk, dv = np.zeros_like(q), np.zeros_like(k), np.zeros_like(v)
    if not (q.size and k.size):
        return dq, dk, dv
    bc = _staged_rows(ATTN_BC, D, q.dtype.itemsize)
    _, backward_dq, backward_dkdv = _attention_kernels(ATTN_BR, bc, D, q.dtype)
    q_dev, k_dev, v_dev, out_dev, lse_dev, bias_dev = (
        cuda.to_device(t) for t in (q, k, v, out, lse, key_bias))
    dout_dev = cuda.to_device(np.ascontiguousarray(dout))
    dq_dev, dk_dev, dv_dev = (cuda.device_array_like(t) for t in (dq, dk, dv))
    delta_dev = cuda.device_array_like(lse)                        # D_i, written by backward_dq
    s = q.dtype.type(scale)
    # one thread per query row, then one per key row: backward_dkdv reads the D_i that
    # backward_dq writes, and two kernels launched on one stream run one after the other
    backward_dq[(B * H, -(-Tq // ATTN_BR)), ATTN_BR](
        q_dev, k_dev, v_dev, out_dev, dout_dev, lse_dev, bias_dev, causal, s, dq_dev, delta_dev)
    backward_dkdv[(B * H, -(-Tk // ATTN_BR)), ATTN_BR](
        q_dev, k_dev, v_dev, dout_dev, lse_dev, delta_dev, bias_dev, causal, s, dk_dev, dv_dev)
    return dq_dev.copy_to_host(), dk_dev.copy_to_host(), dv_dev.copy_to_host()
