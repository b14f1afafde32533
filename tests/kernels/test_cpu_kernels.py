"""The Numba backend (npgpt/kernels/cpu/) against the NumPy reference, kernel by kernel.

Tolerances (relative error max|a - b| / max(|a| + |b|), tests/helpers.py):
    float64  1e-12   the kernels sum in another order (SIMD lanes, blocks): a few ulps per sum
    float32  1e-5    the same reordering in float32, plus the polynomial exp (~1e-7 relative)
    erf      1e-15   both call libm's erf in float64: equal to the last bit in practice
"""

from __future__ import annotations

import math
import sys
import tracemalloc
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npgpt.kernels import reference

cpu = pytest.importorskip("npgpt.kernels.cpu", reason="numba is not available")

from npgpt.kernels.cpu import attention, tasks  # noqa: E402
from npgpt.kernels.cpu.gemm import GEMM_KC, GEMM_MC, GEMM_NC  # noqa: E402
from tests.helpers import assert_close, matmul_operands  # noqa: E402

TOL = {np.float64: 1e-12, np.float32: 1e-5}
DTYPES = st.sampled_from([np.float32, np.float64])


def _normal(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


# ------------------------------------------------------------------------------------------ gemm

@settings(max_examples=20)
@given(M=st.integers(1, 37), K=st.integers(1, 70), N=st.integers(1, 37), dtype=DTYPES,
       layout=st.sampled_from(["nn", "tn", "nt", "tt"]), seed=st.integers(0, 2**16))
def test_gemm_equals_reference_on_odd_shapes_and_transposed_views(M, K, N, dtype, layout, seed):
    rng = np.random.default_rng(seed)
    a, b = matmul_operands(rng, M, K, N, dtype, layout)
    out = cpu.gemm(a, b)
    assert out.dtype == dtype
    assert_close(f"gemm {layout} {(M, K, N)}", out, reference.matmul(a, b), TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_larger_than_one_block_and_strided_views(dtype):
    rng = np.random.default_rng(1)
    # M > GEMM_MC, N > GEMM_NC and K > GEMM_KC, none a multiple of the tile: every edge and panel
    a = _normal(rng, (GEMM_MC * 2 + 3, GEMM_KC + 5), dtype)
    b = _normal(rng, (GEMM_KC + 5, GEMM_NC + 7), dtype)
    assert_close("gemm blocked", cpu.gemm(a, b), a @ b, TOL[dtype])
    s = _normal(rng, (30, 40), dtype)[::2, 1::3]          # (15, 13): neither C- nor F-contiguous
    t = _normal(rng, (39, 9), dtype)[::3]                 # (13, 9)
    assert_close("gemm strided", cpu.gemm(s, t), s @ t, TOL[dtype])


def test_gemm_empty_dimensions():
    assert cpu.gemm(np.ones((0, 3)), np.ones((3, 4))).shape == (0, 4)
    out = cpu.gemm(np.ones((2, 0)), np.ones((0, 4)))
    assert out.shape == (2, 4) and not out.any()


@pytest.mark.parametrize("a, b, error", [
    (np.ones((2, 3)), np.ones((4, 2)), ValueError),                       # K mismatch
    (np.ones((2, 3), np.float32), np.ones((3, 2)), TypeError),            # dtype mismatch
    (np.ones(3), np.ones((3, 2)), ValueError),                            # 1-D
    (np.ones((2, 3), np.int64), np.ones((3, 2), np.int64), TypeError),    # not a float
])
def test_gemm_bad_input_raises(a, b, error):
    with pytest.raises(error, match="a has"):
        cpu.gemm(a, b)


@settings(max_examples=10)
@given(batch=st.lists(st.integers(1, 3), min_size=0, max_size=2), M=st.integers(1, 9),
       K=st.integers(1, 9), N=st.integers(1, 9), batched_b=st.booleans(), dtype=DTYPES,
       seed=st.integers(0, 2**16))
def test_matmul_equals_reference_batched(batch, M, K, N, batched_b, dtype, seed):
    rng = np.random.default_rng(seed)
    a = _normal(rng, (*batch, M, K), dtype)
    b = _normal(rng, (*batch, K, N) if batched_b else (K, N), dtype)
    assert_close("matmul", cpu.matmul(a, b), reference.matmul(a, b), TOL[dtype])


def test_matmul_checks_its_arguments():
    a = np.random.default_rng(2).standard_normal((2, 3, 5, 7))
    with pytest.raises(ValueError, match="a.shape"):
        cpu.matmul(a, np.ones((4, 7)))


# ------------------------------------------------------------------------------------------- erf

@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-15), (np.float32, 1e-7)])
def test_erf_equals_reference(dtype, tol):
    x = np.concatenate([np.linspace(-6, 6, 1001), [0.0, -0.0, 1e-300, np.inf, -np.inf]])
    x = x.astype(dtype).reshape(2, -1)[:, ::-1]                     # 2-D and non-contiguous
    got, want = cpu.erf(x), reference.erf(x)
    assert got.dtype == dtype and got.shape == x.shape
    rel = np.abs(got - want) / np.maximum(np.abs(want), np.finfo(dtype).tiny)
    assert rel.max() <= tol, f"erf: worst relative error {rel.max():.3e}"


# ------------------------------------------------------------------------------------- attention

def attention_path(path):
    """Force attention_forward's path: "fused" (FlashAttention) or "blas" (BLAS + Numba softmax)."""
    return mock.patch.object(attention, "ATTN_FUSED_FROM_TK", 0 if path == "fused" else 2**62)


CACHE_OF_PATH = {"fused": reference.FlashAttentionCache, "blas": reference.SoftmaxAttentionCache}


@st.composite
def attention_case(draw):
    dtype = draw(DTYPES)
    causal = draw(st.booleans())
    B, H = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    # T=1, T inside one block, T just over a block, T over two blocks (ATTN_BR = ATTN_BC = 64)
    Tk = draw(st.sampled_from([1, 2, 5, 17, 63, 64, 65, 130]))
    Tq = draw(st.integers(1, Tk)) if causal else draw(st.sampled_from([1, 7, 65]))
    D = draw(st.sampled_from([1, 3, 17, 64]))
    pad = draw(st.sampled_from(["none", "random", "full row"]))
    return dict(dtype=dtype, causal=causal, B=B, H=H, Tq=Tq, Tk=Tk, D=D, pad=pad,
                seed=draw(st.integers(0, 2**16)), path=draw(st.sampled_from(["fused", "blas"])))


def _attention_inputs(dtype, causal, B, H, Tq, Tk, D, pad, seed, path):
    rng = np.random.default_rng(seed)
    q, k, v = _normal(rng, (B, H, Tq, D), dtype), _normal(rng, (B, H, Tk, D), dtype), \
        _normal(rng, (B, H, Tk, D), dtype)
    key_pad = None
    if pad != "none":
        key_pad = rng.random((B, Tk)) < 0.3
        if pad == "full row":
            key_pad[0] = True               # batch 0: every key hidden: out = 0, no gradient
    dout = _normal(rng, (B, H, Tq, D), dtype)
    return q, k, v, key_pad, dout


def _check_attention(case):
    q, k, v, key_pad, dout = _attention_inputs(**case)
    tol = TOL[case["dtype"]]
    want, want_cache = reference.attention_forward(q, k, v, case["causal"], key_pad)
    with attention_path(case["path"]):
        got, got_cache = cpu.attention_forward(q, k, v, case["causal"], key_pad)
    assert isinstance(got_cache, CACHE_OF_PATH[case["path"]])
    assert got.dtype == q.dtype
    assert_close(f"attention out {case}", got, want, tol)
    for name, g, w in zip(("dq", "dk", "dv"), cpu.attention_backward(dout, got_cache),
                          reference.attention_backward(dout, want_cache)):
        assert g.dtype == q.dtype
        assert_close(f"attention {name} {case}", g, w, tol)
    if case["pad"] == "full row":
        assert not got[0].any()
        assert not cpu.attention_backward(dout, got_cache)[0][0].any()


@settings(max_examples=30)
@given(case=attention_case())
def test_attention_forward_and_gradients_equal_reference(case):
    _check_attention(case)


@pytest.mark.parametrize("Tq, Tk, causal, pad", [
    (1, 1, True, "none"), (130, 130, True, "random"), (3, 130, True, "none"),    # decode: Tq < Tk
    (65, 64, False, "full row"), (64, 129, True, "full row")])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("path", ["fused", "blas"])
def test_attention_block_edges(Tq, Tk, causal, pad, dtype, path):
    _check_attention(dict(dtype=dtype, causal=causal, B=2, H=1, Tq=Tq, Tk=Tk, D=17, pad=pad, seed=5,
                          path=path))


@pytest.mark.parametrize("path", ["fused", "blas"])
def test_attention_non_contiguous_inputs(path):
    """The layers pass heads as transposed views (B, T, H, D) -> (B, H, T, D)."""
    rng = np.random.default_rng(7)
    q, k, v = (rng.standard_normal((2, 9, 3, 5)).transpose(0, 2, 1, 3) for _ in range(3))
    dout = rng.standard_normal((2, 9, 3, 5)).transpose(0, 2, 1, 3)
    want, wc = reference.attention_forward(q, k, v)
    with attention_path(path):
        got, gc = cpu.attention_forward(q, k, v)
    assert_close("out", got, want, 1e-12)
    for g, w in zip(cpu.attention_backward(dout, gc), reference.attention_backward(dout, wc)):
        assert_close("grad", g, w, 1e-12)


def test_attention_dropout_goes_to_the_reference():
    rng = np.random.default_rng(8)
    q, k, v = (rng.standard_normal((1, 2, 6, 4)) for _ in range(3))
    got, cache = cpu.attention_forward(q, k, v, dropout_p=0.5, rng=np.random.default_rng(0))
    want, want_cache = reference.attention_forward(q, k, v, dropout_p=0.5, rng=np.random.default_rng(0))
    assert isinstance(cache, reference.AttentionCache)
    np.testing.assert_array_equal(got, want)
    for g, w in zip(cpu.attention_backward(got, cache), reference.attention_backward(want, want_cache)):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(k=np.ones((1, 2, 5, 3))), ValueError, "k has shape"),
    (dict(v=np.ones((1, 1, 4, 3))), ValueError, "v has shape"),
    (dict(q=np.ones((1, 1, 5, 3), np.float32)), TypeError, "dtypes"),
    (dict(q=np.ones((1, 1, 6, 3))), ValueError, "causal"),
    (dict(key_pad=np.zeros((1, 4), dtype=np.int64)), ValueError, "key_pad"),
    (dict(q=np.ones((1, 5, 3))), ValueError, "q has shape"),
])
def test_attention_bad_input_raises_before_compiled_code(monkeypatch, kwargs, error, match):
    def must_not_run(*args):
        raise AssertionError("compiled code ran on bad input")
    monkeypatch.setattr(attention, "_flash_forward", must_not_run)
    monkeypatch.setattr(attention, "_softmax_heads", must_not_run)
    args = dict(q=np.ones((1, 1, 5, 3)), k=np.ones((1, 1, 5, 3)), v=np.ones((1, 1, 5, 3)),
                key_pad=None)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        cpu.attention_forward(args["q"], args["k"], args["v"], causal=True, key_pad=args["key_pad"])


@pytest.mark.parametrize("path", ["fused", "blas"])
def test_attention_backward_bad_input_raises(path):
    q = np.ones((1, 1, 4, 2))
    with attention_path(path):
        _, cache = cpu.attention_forward(q, q, q)
    with pytest.raises(ValueError, match="dout has shape"):
        cpu.attention_backward(np.ones((1, 1, 3, 2)), cache)
    with pytest.raises(TypeError, match="cache is"):
        cpu.attention_backward(q, (q, q, q))


def _extra_bytes(forward, T):
    """Bytes a forward allocates beyond its inputs: Python-level allocations (tracemalloc) plus
    the cache's arrays that are not the inputs themselves. Arrays that Numba allocates inside a
    kernel are invisible to tracemalloc; the fused kernel's are per-thread blocks of size O(T)."""
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, 1, T, 16)).astype(np.float32) for _ in range(3))
    forward(q, k, v)                                        # compiled and warm before measuring
    tracemalloc.start()
    try:
        out, cache = forward(q, k, v)
        traced = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    held = sum(a.nbytes for a in cache if isinstance(a, np.ndarray)
               and not any(a is x or np.shares_memory(a, x) for x in (q, k, v)))
    return max(traced, held)


def test_fused_attention_memory_grows_linearly_in_T():
    ref_growth = _extra_bytes(reference.attention_forward, 1024) / _extra_bytes(reference.attention_forward, 256)
    with attention_path("fused"):
        fused_growth = _extra_bytes(cpu.attention_forward, 1024) / _extra_bytes(cpu.attention_forward, 256)
    assert ref_growth > 12, f"the reference's (T, T) probabilities should grow ~16x, grew {ref_growth:.1f}x"
    assert fused_growth < 5, f"the fused attention should grow ~4x (linear in T), grew {fused_growth:.1f}x"


# -------------------------------------------------------------------------------- the backend

def test_all_lists_what_cpu_implements():
    for name in cpu.__all__:
        assert callable(getattr(cpu, name))
    for name in ("matmul", "attention_forward", "attention_backward", "erf"):
        assert name in cpu.__all__


def test_registry_serves_the_numba_kernels():
    import npgpt.kernels as kernels
    with kernels.backend("numba"):
        assert kernels.get("attention_forward") is cpu.attention_forward
        assert kernels.get("attention_mask") is reference.attention_mask     # falls back


def _module_state():
    """Every module-level name of the backend's files and what it is bound to."""
    modules = [m for name, m in sorted(sys.modules.items()) if name.startswith("npgpt.kernels.cpu")]
    return {(m.__name__, k): id(v) for m in modules for k, v in vars(m).items()}


def test_warmup_reports_seconds_per_kernel_and_changes_no_module_state():
    before = _module_state()
    seconds = cpu.warmup(("float64",))
    assert set(seconds) == {"gemm[float64]", "attention[float64]", "erf[float64]", "layernorm[float64]",
                            "gelu_tanh[float64]", "cross_entropy[float64]", "adamw[float64]",
                            "sum_squares[float64]", "matmul_add[float64]", "embedding[float64]",
                            "decode[float64]"}
    assert all(s >= 0 and math.isfinite(s) for s in seconds.values())
    assert _module_state() == before
    assert tasks.PARALLEL_FROM == 1 << 20
