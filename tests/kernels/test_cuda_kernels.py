"""The CUDA backend (npgpt/kernels/cuda.py) against the NumPy reference, kernel by kernel.

CI has no GPU: tests/conftest.py sets NUMBA_ENABLE_CUDASIM=1 (unless the environment already
says), and numba's CUDA simulator runs every kernel thread as a Python thread on the CPU. On a
GPU machine, NUMBA_ENABLE_CUDASIM=0 runs the same tests on the device. These tests never skip:
where numba.cuda cannot run at all they fail and say why.

The simulator is slow (a Python thread per CUDA thread), so the shapes are tiny; they are chosen
to hit the tails: sizes that do not divide the tile or block, blocks with idle threads, a key
block cut short by the causal mask. Each kernel runs at the simulator's block sizes
(cuda.SIMULATOR_SIZES, a few threads per block) and once at the GPU's (cuda.DEVICE_SIZES).

Tolerances (relative error max|a - b| / max(|a| + |b|), tests/helpers.py), and why that size:
    float64  1e-12   the kernels sum in another order than BLAS: a few ulps per sum
    float32  1e-5    the same in float32, plus the simulator's float64 exp and log
    0        where the reference's answer is exactly 0 (a fully padded row, a row that sees a
             single key): the kernels recompute the same numbers in the same order, so exactly 0
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from npgpt import kernels
from npgpt.kernels import reference
from npgpt.nn import MultiHeadAttention
from tests.helpers import assert_close, matmul_operands

try:
    from npgpt.kernels import cuda
except Exception as e:                    # numba.cuda itself missing: say so, do not skip
    pytest.fail(f"npgpt.kernels.cuda does not import ({type(e).__name__}: {e}): the CUDA tests "
                f"need numba.cuda", pytrace=False)

TOL = {np.float64: 1e-12, np.float32: 1e-5}
SIZES = {"simulator sizes": cuda.SIMULATOR_SIZES, "device sizes": cuda.DEVICE_SIZES}


@pytest.fixture(scope="module", autouse=True)
def cuda_runs():
    """Fail every test here, with numba's reason, when numba.cuda can run no kernel at all."""
    try:
        cuda.check_available()
        problem = None
    except RuntimeError as e:
        problem = str(e)
    if problem:
        pytest.fail(f"{problem}\n(NUMBA_ENABLE_CUDASIM={os.environ.get('NUMBA_ENABLE_CUDASIM')!r}: "
                    f"tests/conftest.py sets 1 unless the environment sets it)", pytrace=False)


@pytest.fixture
def sizes(monkeypatch):
    """Run a test at given (GEMM_TILE, ATTN_BR, ATTN_BC) block sizes."""
    def use(sizes):
        for name, value in zip(("GEMM_TILE", "ATTN_BR", "ATTN_BC"), sizes):
            monkeypatch.setattr(cuda, name, value)
    return use


@pytest.fixture
def no_launch(monkeypatch):
    """Make every kernel factory fail the test: what runs after it must raise before a launch."""
    def launched(*args):
        raise AssertionError("a kernel was built for bad input: the check must come first")
    monkeypatch.setattr(cuda, "_gemm_kernel", launched)
    monkeypatch.setattr(cuda, "_attention_kernels", launched)


def _normal(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


# ------------------------------------------------------------------------------------------ matmul

@pytest.mark.parametrize("layout, dtype", [("nn", np.float64), ("nn", np.float32), ("tn", np.float64),
                                           ("nt", np.float32), ("tt", np.float64)])
def test_matmul_equals_reference_on_odd_shapes_and_transposed_views(layout, dtype):
    rng = np.random.default_rng(0)
    M, K, N = 5, 9, 6                     # none a multiple of the tile (4): every edge of C and of k
    # "t": the operand is the transpose of a C-contiguous array (the backward's a.T @ b, a @ b.T)
    a, b = matmul_operands(rng, M, K, N, dtype, layout)
    out = cuda.matmul(a, b)
    assert out.dtype == dtype and out.shape == (M, N)
    assert_close(f"matmul {layout}", out, reference.matmul(a, b), TOL[dtype])


@pytest.mark.parametrize("a_shape, b_shape, dtype", [
    ((2, 3, 5), (5, 4), np.float32),            # (..., M, K) @ (K, N): a Linear layer's product
    ((2, 1, 3, 5), (3, 5, 2), np.float64),      # batched, broadcast on both sides
    ((3, 5), (2, 5, 4), np.float64),            # a 2-D a against a stack of b
])
def test_matmul_batched_and_broadcast_shapes(a_shape, b_shape, dtype):
    rng = np.random.default_rng(1)
    a, b = _normal(rng, a_shape, dtype), _normal(rng, b_shape, dtype)
    out = cuda.matmul(a, b)
    assert out.dtype == dtype
    assert_close(f"matmul {a_shape} @ {b_shape}", out, reference.matmul(a, b), TOL[dtype])


def test_matmul_at_the_device_tile_and_with_a_grid_shorter_than_the_batch(sizes, monkeypatch):
    rng = np.random.default_rng(2)
    sizes(cuda.DEVICE_SIZES)                     # 16 x 16 threads: rows and k past one tile
    a, b = _normal(rng, (17, 18), np.float64), _normal(rng, (18, 3), np.float64)
    assert_close("matmul at the device tile", cuda.matmul(a, b), a @ b, TOL[np.float64])
    sizes(cuda.SIMULATOR_SIZES)
    monkeypatch.setattr(cuda, "MAX_GRID_Y", 2)   # 3 matrices on a grid of 2: the grid-stride loop
    a, b = _normal(rng, (3, 2, 3), np.float64), _normal(rng, (3, 3, 2), np.float64)
    assert_close("matmul grid-stride", cuda.matmul(a, b), a @ b, TOL[np.float64])


def test_matmul_empty_dimensions_and_other_dtypes():
    assert cuda.matmul(np.ones((0, 3)), np.ones((3, 4))).shape == (0, 4)
    out = cuda.matmul(np.ones((2, 0)), np.ones((0, 4)))
    assert out.shape == (2, 4) and not out.any()
    ints = np.arange(6).reshape(2, 3)                # not a float: the reference computes it
    assert (cuda.matmul(ints, ints.T) == ints @ ints.T).all()


@pytest.mark.parametrize("a, b, error", [
    (np.ones((2, 3)), np.ones((4, 2)), ValueError),                       # K mismatch
    (np.ones((2, 3), np.float32), np.ones((3, 2)), TypeError),            # dtype mismatch
    (np.ones(3), np.ones((3, 2)), ValueError),                            # 1-D
    (np.ones((2, 2, 3)), np.ones((3, 3, 2)), ValueError),                 # batches do not broadcast
    ([[1.0]], np.ones((1, 1)), TypeError),                                # not an array
])
def test_matmul_bad_input_raises_before_any_launch(a, b, error, no_launch):
    with pytest.raises(error, match="a (has|is)"):
        cuda.matmul(a, b)


# --------------------------------------------------------------------------------------- attention

def _key_pad(B, Tk, kind):
    """None, or a (B, Tk) padding mask: batch 0 pads its last keys, batch 1 (if any) every key."""
    if kind is None:
        return None
    pad = np.zeros((B, Tk), dtype=bool)
    pad[0, -2:] = True
    if B > 1:
        pad[1] = True                            # a fully padded row: out = 0, no gradient
    return pad


def _check_attention(B, H, Tq, Tk, D, causal, pad, dtype, seed=0):
    rng = np.random.default_rng(seed)
    q, dout = _normal(rng, (B, H, Tq, D), dtype), _normal(rng, (B, H, Tq, D), dtype)
    k, v = _normal(rng, (B, H, Tk, D), dtype), _normal(rng, (B, H, Tk, D), dtype)
    key_pad = _key_pad(B, Tk, pad)
    out, cache = cuda.attention_forward(q, k, v, causal=causal, key_pad=key_pad)
    ref_out, ref_cache = reference.attention_forward(q, k, v, causal=causal, key_pad=key_pad)
    assert isinstance(cache, reference.FlashAttentionCache) and cache.lse.shape == (B, H, Tq)
    assert out.dtype == dtype
    assert_close("out", out, ref_out, TOL[dtype])
    grads = cuda.attention_backward(dout, cache)
    ref_grads = reference.attention_backward(dout, ref_cache)
    for name, g, ref in zip(("dq", "dk", "dv"), grads, ref_grads):
        assert g.dtype == dtype
        assert_close(name, g, ref, TOL[dtype])
    if key_pad is not None and B > 1:           # batch 1 sees no key at all
        for name, x in zip(("out", "dq", "dk", "dv"), (out, *grads)):
            assert not x[1].any(), f"{name} of a fully padded row is not 0"
        assert np.isneginf(cache.lse[1]).all()


ATTENTION_CASES = {
    #                                  B, H, Tq, Tk, D, causal, key_pad
    "T=1":                            (1, 1, 1, 1, 2, True, None),
    "T=5 causal":                     (2, 2, 5, 5, 3, True, None),
    "Tq<Tk causal (a KV cache)":      (1, 2, 3, 7, 3, True, None),
    "head size 1":                    (1, 1, 6, 6, 1, False, None),
    "cross, key padding":             (2, 1, 5, 6, 3, False, "pad"),
    "causal, key padding":            (2, 1, 5, 5, 2, True, "pad"),
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", list(ATTENTION_CASES))
def test_attention_equals_reference_forward_and_backward(case, dtype):
    _check_attention(*ATTENTION_CASES[case], dtype)


def test_attention_at_the_device_block_sizes(sizes):
    # 64 threads for 33 query rows (31 idle), 37 keys: a full block of 32 and a tail of 5
    sizes(cuda.DEVICE_SIZES)
    _check_attention(2, 1, 33, 37, 2, True, "pad", np.float64)


def test_a_row_that_sees_one_key_has_exactly_zero_dq_and_dk():
    # out = v_0 exactly, so dp - D = 0 exactly: the reference gives 0, and so must the kernels
    rng = np.random.default_rng(3)
    q, k, v, dout = (_normal(rng, (1, 1, 1, 3), np.float64) for _ in range(4))
    out, cache = cuda.attention_forward(q, k, v, causal=True)
    dq, dk, dv = cuda.attention_backward(dout, cache)
    assert (out == v).all() and not dq.any() and not dk.any() and (dv == dout).all()


def test_dropout_goes_to_the_reference_and_the_backward_follows_the_cache():
    rng = np.random.default_rng(4)
    q, k, v, dout = (_normal(rng, (1, 2, 4, 3), np.float64) for _ in range(4))
    out, cache = cuda.attention_forward(q, k, v, dropout_p=0.5, rng=np.random.default_rng(7))
    ref_out, ref_cache = reference.attention_forward(q, k, v, dropout_p=0.5, rng=np.random.default_rng(7))
    assert isinstance(cache, reference.AttentionCache)
    assert (out == ref_out).all()
    for g, ref in zip(cuda.attention_backward(dout, cache), reference.attention_backward(dout, ref_cache)):
        assert (g == ref).all()


@pytest.mark.parametrize("shapes, key_pad, causal, error, match", [
    (((1, 1, 2, 3), (1, 1, 2, 3), (1, 1, 2)), None, True, ValueError, "v has shape"),
    (((1, 1, 2, 3), (1, 2, 2, 3), (1, 2, 2, 3)), None, True, ValueError, "k has shape"),
    (((1, 1, 3, 2), (1, 1, 2, 2), (1, 1, 2, 2)), None, True, ValueError, "causal with 3 queries"),
    (((1, 1, 2, 2), (1, 1, 2, 2), (1, 1, 2, 2)), np.zeros((1, 3), bool), False, ValueError, "key_pad"),
    (((1, 1, 2, 2), (1, 1, 2, 2), (1, 1, 2, 2)), np.zeros((1, 2), int), False, ValueError, "key_pad"),
])
def test_attention_bad_input_raises_before_any_launch(shapes, key_pad, causal, error, match, no_launch):
    q, k, v = (np.ones(s) for s in shapes)
    with pytest.raises(error, match=match):
        cuda.attention_forward(q, k, v, causal=causal, key_pad=key_pad)


def test_attention_dtype_mismatch_and_bad_backward_input_raise_before_any_launch(no_launch):
    x = np.ones((1, 1, 2, 2))
    with pytest.raises(TypeError, match="dtypes"):
        cuda.attention_forward(x, x.astype(np.float32), x)
    cache = reference.FlashAttentionCache(x, x, x, x, np.zeros((1, 1, 2)), np.zeros((1, 2)), True, 1.0)
    with pytest.raises(ValueError, match="dout has shape"):
        cuda.attention_backward(np.ones((1, 1, 2, 3)), cache)
    with pytest.raises(TypeError, match="cache is tuple"):
        cuda.attention_backward(x, tuple(cache))


# ----------------------------------------------------------------------- through the registry

def test_multi_head_attention_on_the_cuda_backend_equals_the_numpy_backend():
    """A layer on the cuda backend: its products and its attention run as CUDA kernels."""
    rng = np.random.default_rng(5)
    x, dy = _normal(rng, (2, 3, 4), np.float64), _normal(rng, (2, 3, 4), np.float64)
    key_pad = np.array([[False, False, True], [False, False, False]])
    results = {}
    for name in ("numpy", "cuda"):
        layer = MultiHeadAttention(4, 2, dtype="float64", rng=np.random.default_rng(6))
        with kernels.backend(name):
            want = cuda if name == "cuda" else reference
            assert kernels.get("attention_forward") is want.attention_forward
            y = layer.forward(x, key_pad=key_pad)
            dx = layer.backward(dy)
        results[name] = {"y": y, "dx": dx, **{p: v.grad for p, v in layer.named_parameters()}}
    assert len(results["cuda"]) == len(results["numpy"]) > 2
    for key, value in results["numpy"].items():
        assert_close(key, results["cuda"][key], value, TOL[np.float64])


def test_the_registry_names_what_cuda_implements():
    assert cuda.__all__ == ["matmul", "attention_forward", "attention_backward"]
    with kernels.backend("cuda"):
        assert kernels.get("matmul") is cuda.matmul
        assert kernels.get("erf") is reference.erf          # not implemented: the reference
        assert kernels.fused("layernorm_forward") is None


def _python(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env={**os.environ, **env}, timeout=120)


def test_without_a_gpu_or_the_simulator_the_backend_says_why():
    run = _python("""
        from numba import cuda
        from npgpt import kernels
        try:
            kernels.use_backend("cuda")
            print("device", cuda.get_current_device().name)
        except RuntimeError as e:
            print(e)
    """, NUMBA_ENABLE_CUDASIM="0")
    assert run.returncode == 0, run.stderr
    if not run.stdout.startswith("device"):                  # no GPU here: the message says why
        assert "backend='cuda' is not available" in run.stdout
        assert "numba.cuda cannot run a kernel here" in run.stdout
        assert "NUMBA_ENABLE_CUDASIM=1" in run.stdout


PTX_SCRIPT = """
    import re, types
    import numpy as np
    import numba
    import numba.cuda.dispatcher
    from numba import cuda
    from numba import types as nt
    from numba.cuda.cudadrv import nvvm
    try:
        nvvm.NVVM()
    except Exception as e:
        print("no NVVM:", " ".join(str(e).split()))
        raise SystemExit(0)
    # no GPU to ask: a stand-in answers the compute capability the device functions compile for
    numba.cuda.dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=(9, 0))
    from npgpt.kernels import cuda as backend
    tile, br, bc = backend.DEVICE_SIZES
    for dtype in (np.float32, np.float64):
        s = numba.from_dtype(np.dtype(dtype))
        a2, a3, a4 = (nt.Array(s, n, "C") for n in (2, 3, 4))
        forward, dq, dkdv = backend._attention_kernels(br, bc, 64, np.dtype(dtype))
        for name, kernel, sig in [
            ("gemm", backend._gemm_kernel(tile, np.dtype(dtype)), (a3, a3, a3)),
            ("forward", forward, (a4, a4, a4, a2, nt.boolean, s, a4, a3)),
            ("backward_dq", dq, (a4, a4, a4, a4, a4, a3, a2, nt.boolean, s, a4, a3)),
            ("backward_dkdv", dkdv, (a4, a4, a4, a4, a3, a3, a2, nt.boolean, s, a4, a4)),
        ]:
            ptx, _ = cuda.compile_ptx(kernel.py_func, sig, cc=(9, 0))
            f64 = len(re.findall(r"\\.f64\\b", ptx))
            print(name, np.dtype(dtype).name, "f64 instructions:", f64)
"""


def test_every_kernel_compiles_for_a_real_gpu():
    """The simulator runs kernels as Python: it accepts code numba.cuda cannot compile (numba's
    built-in min and max, for one). This compiles each kernel to PTX for sm_90 with the CUDA
    toolkit's NVVM, no GPU needed, and checks that a float32 kernel has no float64 instruction."""
    run = _python(PTX_SCRIPT, NUMBA_ENABLE_CUDASIM="0")
    assert run.returncode == 0, run.stderr[-3000:]
    if run.stdout.startswith("no NVVM"):
        pytest.skip(f"the CUDA toolkit's NVVM is not installed, so no PTX was compiled "
                    f"({run.stdout.strip()})")
    lines = run.stdout.splitlines()
    assert len(lines) == 8, run.stdout
    for line in lines:
        if "float32" in line:
            assert line.endswith("f64 instructions: 0"), line
