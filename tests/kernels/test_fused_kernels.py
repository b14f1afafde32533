"""The Numba backend's fused kernels against the NumPy code that defines them.

Each fused kernel in npgpt/kernels/cpu/ is the twin of a pure NumPy function in npgpt/nn
(LayerNorm, GELU-tanh, cross-entropy, the embedding's scatter-add) or npgpt/optim (the AdamW
update, the sum of squares): the same signature, the same cache type, the same argument checks.
That NumPy code is the reference here; the Modules, which choose between the two, must give the
same numbers on the "numpy" and the "numba" backend.

Tolerances (relative error max|a - b| / max(|a| + |b|), tests/helpers.py), and why that size:
    float64  1e-12   the kernels sum in another order (SIMD lanes, chunks): a few ulps per sum
    float32  1e-5    the same, plus float32's polynomial exp (~1e-7) and rational tanh (3.9e-7)
    AdamW    0       the same operations in the same order and dtype, no fused multiply-add:
                     equal bit for bit
"""

from __future__ import annotations

import ctypes
import inspect
import math
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npgpt import kernels, nn, optim
from npgpt.kernels import reference
from npgpt.nn import activation, embedding, loss, norm

cpu = pytest.importorskip("npgpt.kernels.cpu", reason="numba is not available")

from npgpt.kernels.cpu import blas, elementwise, optimizer, tasks  # noqa: E402
from npgpt.kernels.cpu import loss as cpu_loss  # noqa: E402
from numba import njit  # noqa: E402
from tests.helpers import assert_close, matmul_operands  # noqa: E402

TOL = {np.float32: 1e-5, np.float64: 1e-12}
DTYPES = st.sampled_from([np.float32, np.float64])
# leading shapes of the rows: one row, a few, a batch of sequences; widths around a SIMD width
LEAD = st.sampled_from([(1,), (3,), (2, 5), (4, 33)])
WIDTH = st.sampled_from([1, 2, 7, 16, 31, 64, 129])


PATH = st.sampled_from(["calling thread", "parallel"])


def kernel_path(path):
    """Run a kernel on the calling thread, or split into parallel tasks however small it is."""
    return mock.patch.object(tasks, "PARALLEL_FROM", 0 if path == "parallel" else 2**62)


def _normal(rng, shape, dtype, scale=1.0, shift=0.0):
    return (rng.standard_normal(shape) * scale + shift).astype(dtype)


def numpy_backend(fn, *args):
    """optim's _sum_squares chooses its fused twin itself: run it on the numpy backend."""
    with kernels.backend("numpy"):
        return fn(*args)


# ------------------------------------------------------------------------------------- LayerNorm

@settings(max_examples=15)
@given(path=PATH, lead=LEAD, C=WIDTH, dtype=DTYPES, bias=st.booleans(), need_dw=st.booleans(),
       seed=st.integers(0, 2**16))
def test_layernorm_equals_the_numpy_layer(path, lead, C, dtype, bias, need_dw, seed):
    with kernel_path(path):
        _layernorm_equals_the_numpy_layer_body(lead, C, dtype, bias, need_dw, seed)


def _layernorm_equals_the_numpy_layer_body(lead, C, dtype, bias, need_dw, seed):
    rng = np.random.default_rng(seed)
    x = _normal(rng, (*lead, C), dtype, scale=rng.uniform(0.1, 5), shift=rng.uniform(-3, 3))
    w, b = _normal(rng, C, dtype), (_normal(rng, C, dtype) if bias else None)
    dout = _normal(rng, x.shape, dtype)
    want, want_cache = norm.layernorm_forward(x, w, b)
    got, got_cache = cpu.layernorm_forward(x, w, b)
    tol = TOL[dtype]
    assert got.dtype == dtype and got.shape == x.shape
    assert_close("layernorm y", got, want, tol)
    for name in ("mu", "rstd"):
        assert getattr(got_cache, name).shape == getattr(want_cache, name).shape
        assert_close(f"layernorm {name}", getattr(got_cache, name), getattr(want_cache, name), tol)
    grads = cpu.layernorm_backward(dout, got_cache, need_dw)
    for name, g, r in zip(("dx", "dw", "db"), grads, norm.layernorm_backward(dout, want_cache, need_dw)):
        assert (g is None) == (r is None), name
        if r is not None:
            assert g.dtype == dtype
            assert_close(f"layernorm {name}", g, r, tol)


def test_layernorm_has_one_cache_type_and_either_backward_reads_either_cache():
    """The backend may change between a forward and its backward."""
    rng = np.random.default_rng(0)
    x, w, b, dout = _normal(rng, (3, 8), np.float64), np.ones(8), np.zeros(8), _normal(rng, (3, 8), np.float64)
    _, numpy_cache = norm.layernorm_forward(x, w, b)
    _, fused_cache = cpu.layernorm_forward(x, w, b)
    assert type(numpy_cache) is type(fused_cache) is reference.LayerNormCache is norm.LayerNormCache
    for g, r in zip(cpu.layernorm_backward(dout, numpy_cache), norm.layernorm_backward(dout, fused_cache)):
        assert_close("dx, dw, db across the caches", g, r, 1e-12)


def test_layernorm_backward_of_a_constant_row_is_exactly_zero():
    """C = 1 (or a constant row): xhat = 0 and g - mean(g) = 0 exactly, as in the reference."""
    dx, _, _ = cpu.layernorm_backward(np.array([[0.3]], np.float32),
                                      cpu.layernorm_forward(np.array([[2.0]], np.float32),
                                                            np.array([1.5], np.float32))[1])
    assert dx[0, 0] == 0


def test_layernorm_sums_do_not_depend_on_the_number_of_tasks(monkeypatch):
    rng = np.random.default_rng(1)
    x, dout = _normal(rng, (5 * tasks.ROWS_PER_TASK + 3, 24), np.float32), _normal(rng, (83, 24), np.float32)
    w = _normal(rng, 24, np.float32)
    _, cache = cpu.layernorm_forward(x, w, w)
    serial = cpu.layernorm_backward(dout, cache)
    monkeypatch.setattr(tasks, "PARALLEL_FROM", 0)
    for a, b in zip(serial, cpu.layernorm_backward(dout, cache)):
        assert_close("serial vs parallel", a, b, 1e-6)
    np.testing.assert_array_equal(cpu.layernorm_backward(dout, cache)[1],
                                  cpu.layernorm_backward(dout, cache)[1])


# ------------------------------------------------------------------------------------------ GELU

@settings(max_examples=15)
@given(path=PATH, lead=LEAD, C=WIDTH, dtype=DTYPES, scale=st.sampled_from([0.5, 3.0, 12.0]),
       seed=st.integers(0, 2**16))
def test_gelu_tanh_equals_the_numpy_layer(path, lead, C, dtype, scale, seed):
    with kernel_path(path):
        _gelu_tanh_equals_the_numpy_layer_body(lead, C, dtype, scale, seed)


def _gelu_tanh_equals_the_numpy_layer_body(lead, C, dtype, scale, seed):
    rng = np.random.default_rng(seed)
    x = _normal(rng, (*lead, C), dtype, scale=scale)
    dout = _normal(rng, x.shape, dtype)
    want, (_, want_t) = activation.gelu_tanh_forward(x)
    got, got_cache = cpu.gelu_tanh_forward(x)
    tol = TOL[dtype]
    assert got.dtype == dtype and got_cache[0] is x
    assert_close("gelu y", got, want, tol)
    assert_close("gelu tanh(u)", got_cache[1], want_t, tol)
    assert_close("gelu dx", cpu.gelu_tanh_backward(dout, got_cache),
                 activation.gelu_tanh_backward(dout, (x, want_t)), tol)


def test_float32_tanh_error_is_as_documented():
    """The rational tanh of float32: max abs error 3.9e-7 measured (docstring of intrinsics._tanh)."""
    x = np.concatenate([np.linspace(-12, 12, 200_001), np.logspace(-30, 1, 2001),
                        -np.logspace(-30, 1, 2001), [0.0, np.inf, -np.inf]]).astype(np.float32)
    _, (_, t) = cpu.gelu_tanh_forward(x)           # t = tanh(sqrt(2/pi) (x + 0.044715 x^3))
    u = math.sqrt(2 / math.pi) * (x.astype(np.float64) + 0.044715 * x.astype(np.float64) ** 3)
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs(t - np.tanh(u))
    assert np.nanmax(err[np.isfinite(x)]) < 4e-7
    assert t[-2] == 1 and t[-1] == -1


# -------------------------------------------------------------------------------- cross-entropy

@settings(max_examples=15)
@given(path=PATH, N=st.sampled_from([(1,), (5,), (4, 10)]), V=st.sampled_from([1, 2, 17, 65, 1000]), dtype=DTYPES,
       smoothing=st.sampled_from([0.0, 0.1]), ignored=st.sampled_from(["none", "some", "all"]),
       dloss=st.sampled_from([1.0, 0.37]), seed=st.integers(0, 2**16))
def test_cross_entropy_equals_the_numpy_loss(path, N, V, dtype, smoothing, ignored, dloss, seed):
    with kernel_path(path):
        _cross_entropy_equals_the_numpy_loss_body(N, V, dtype, smoothing, ignored, dloss, seed)


def _cross_entropy_equals_the_numpy_loss_body(N, V, dtype, smoothing, ignored, dloss, seed):
    rng = np.random.default_rng(seed)
    logits = _normal(rng, (*N, V), dtype, scale=rng.uniform(0.5, 20))
    targets = rng.integers(0, V, N)
    if ignored == "some":
        targets.reshape(-1)[::3] = -100
    elif ignored == "all":
        targets[...] = -100
    want, want_cache = loss.cross_entropy_forward(logits, targets, -100, smoothing)
    got, got_cache = cpu.cross_entropy_forward(logits, targets, -100, smoothing)
    assert type(got_cache) is type(want_cache) is reference.CrossEntropyCache
    assert got == pytest.approx(want, rel=TOL[dtype], abs=TOL[dtype])
    assert_close("lse", got_cache.lse, want_cache.lse, TOL[dtype])
    assert got_cache.shape == want_cache.shape and got_cache.n_valid == want_cache.n_valid
    grad = cpu.cross_entropy_backward(dloss, got_cache)
    assert grad.dtype == dtype and grad.shape == logits.shape
    assert_close("dlogits", grad, loss.cross_entropy_backward(dloss, want_cache), TOL[dtype])
    assert_close("dlogits across the caches", cpu.cross_entropy_backward(dloss, want_cache),
                 loss.cross_entropy_backward(dloss, got_cache), TOL[dtype])
    # the gradient written during the forward: the two kernels' numbers, bit for bit
    both, both_cache, both_grad = cpu.cross_entropy_forward_backward(logits, targets, -100, smoothing)
    assert both == got and type(both_cache) is reference.CrossEntropyCache
    np.testing.assert_array_equal(both_cache.lse, got_cache.lse)
    np.testing.assert_array_equal(both_grad, cpu.cross_entropy_backward(1.0, got_cache))
    want_both = loss.cross_entropy_forward_backward(logits, targets, -100, smoothing)
    assert want_both[0] == want
    np.testing.assert_array_equal(want_both[2], loss.cross_entropy_backward(1.0, want_cache))


def test_cross_entropy_of_a_gpt2_sized_row():
    """V = 50257: every row sweeps several SIMD blocks and leaves a ragged end."""
    rng = np.random.default_rng(3)
    logits, targets = _normal(rng, (3, 4, 50257), np.float32, scale=4.0), rng.integers(0, 50257, (3, 4))
    want, want_cache = loss.cross_entropy_forward(logits, targets)
    got, got_cache = cpu.cross_entropy_forward(logits, targets)
    assert got == pytest.approx(want, rel=1e-6)
    grad = cpu.cross_entropy_backward(1.0, got_cache)
    assert grad.shape == logits.shape
    assert_close("dlogits", grad, loss.cross_entropy_backward(1.0, want_cache), 1e-5)
    both, _, both_grad = cpu.cross_entropy_forward_backward(logits, targets)       # in parallel tasks
    assert both == got
    np.testing.assert_array_equal(both_grad, grad)


def test_a_nan_logit_gives_a_nan_loss():
    """The vectorised max ignores a NaN, but the sum of exponentials does not."""
    logits = np.zeros((2, 40), np.float32)
    logits[1, 7] = np.nan
    value, _ = cpu.cross_entropy_forward(logits, np.array([0, 0]))
    assert math.isnan(value)


# ------------------------------------------------------------------------------------ Embedding

@settings(max_examples=15)
@given(shape=st.sampled_from([(1,), (3, 5), (4, 64)]), V=st.sampled_from([1, 3, 65]), C=WIDTH,
       dtype=DTYPES, into=st.booleans(), seed=st.integers(0, 2**16))
def test_embedding_backward_equals_numpy_add_at(shape, V, C, dtype, into, seed):
    """Repeated ids (V small against the tokens) must receive every row, summed."""
    rng = np.random.default_rng(seed)
    idx, dout = rng.integers(0, V, shape), _normal(rng, (*shape, C), dtype)
    start = _normal(rng, (V, C), dtype)
    want = embedding.embedding_backward(dout, (idx, V), start.copy() if into else None)
    dw_out = start.copy() if into else None
    got = cpu.embedding_backward(dout, (idx, V), dw_out=dw_out)
    assert got.dtype == dtype and (got is dw_out if into else True)
    assert_close("embedding dW", got, want, TOL[dtype])


# ---------------------------------------------------------------------------------------- AdamW

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 17, 3 * tasks.FLAT_CHUNK + 5])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adamw_update_equals_numpy_bit_for_bit(dtype, n, weight_decay):
    rng = np.random.default_rng(n)
    p, g, m = (_normal(rng, n, dtype) for _ in range(3))
    v = rng.random(n).astype(dtype)
    decay = rng.random(n) < 0.5
    want = [a.copy() for a in (p, m, v)]
    for step, scale, zero in ((1, 1.0, False), (2, 0.37, False), (10, 0.81, True)):
        g_ref = g.copy()
        optim.adamw_update(*want[:1], g_ref, *want[1:], decay, 3e-3, 0.9, 0.95, 1e-8, weight_decay, step,
                           scale, zero)
        cpu.adamw_update(p, g, m, v, decay, 3e-3, 0.9, 0.95, 1e-8, weight_decay, step, scale, zero)
        for name, got, ref in zip("pmvg", (p, m, v, g), (*want, g_ref)):
            np.testing.assert_array_equal(got, ref, err_msg=f"{name} after step {step}")
    assert not g.any()                            # zero_grad on the last step


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adamw_grad_scale_equals_scaling_the_gradient_first(dtype):
    """The clip folded into the update: the same numbers as g *= coef, then a plain step."""
    n = 2 * tasks.FLAT_CHUNK + 9
    rng = np.random.default_rng(1)
    p, g, m = (_normal(rng, n, dtype) for _ in range(3))
    v = rng.random(n).astype(dtype)
    decay = rng.random(n) < 0.5
    want = [a.copy() for a in (p, m, v)]
    scaled = g * 0.3
    cpu.adamw_update(want[0], scaled, want[1], want[2], decay, 3e-3, 0.9, 0.95, 1e-8, 0.1, 3)
    cpu.adamw_update(p, g, m, v, decay, 3e-3, 0.9, 0.95, 1e-8, 0.1, 3, 0.3)
    for got, ref in zip((p, m, v), want):
        np.testing.assert_array_equal(got, ref)


def test_adamw_optimizer_on_numba_equals_numpy_bit_for_bit():
    """The whole optimizer (param groups, flat buffers) on both backends: the same numbers."""
    rng = np.random.default_rng(5)
    shapes = [(40, 30), (30,), (3, 2, 7)]
    runs = {}
    for name in ("numpy", "numba"):
        params = [nn.Parameter(np.random.default_rng(i).standard_normal(s).astype(np.float32))
                  for i, s in enumerate(shapes)]
        opt = optim.AdamW([{"params": params[:2], "weight_decay": 0.1}, {"params": params[2:], "lr": 1e-2}],
                          lr=3e-3, betas=(0.9, 0.95))
        grads = np.random.default_rng(6)
        with kernels.backend(name):
            for _ in range(4):
                for p in params:
                    p.grad[...] = grads.standard_normal(p.shape)
                optim.clip_grad_norm(opt, 1.0)
                opt.step()
        runs[name] = [p.data.copy() for p in params]
    del rng
    for a, b in zip(runs["numpy"], runs["numba"]):
        assert_close("AdamW numba vs numpy", a, b, 1e-6)      # clip's norm is summed in another order


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [0, 5, 2 * tasks.FLAT_CHUNK + 3])
def test_sum_squares_equals_numpy(dtype, n):
    a = _normal(np.random.default_rng(n), (n,), dtype)
    assert cpu.sum_squares(a) == pytest.approx(numpy_backend(optim.sum_squares, a), rel=1e-13, abs=0)
    assert cpu.sum_squares(a.reshape(1, -1)[:, ::-1]) == pytest.approx(cpu.sum_squares(a), rel=1e-13)


# ------------------------------------------------------------------------------------ bad input

def _layernorm_cache():
    return norm.layernorm_forward(np.ones((2, 3)), np.ones(3))[1]


def _flat(n=4, dtype=np.float64):
    return np.ones(n, dtype)


# name: (the fused kernel, its arguments, the error, a piece of its message)
BAD_CALLS = {
    "layernorm w dtype": ("layernorm_forward", lambda: (np.ones((2, 3), np.float32), np.ones(3)),
                          ValueError, "w has shape"),
    "layernorm w shape": ("layernorm_forward", lambda: (np.ones((2, 3)), np.ones(4)), ValueError, "w has shape"),
    "layernorm b shape": ("layernorm_forward", lambda: (np.ones((2, 3)), np.ones(3), np.ones(2)), ValueError,
                          "b has shape"),
    "layernorm int x": ("layernorm_forward", lambda: (np.ones((2, 3), int), np.ones(3)), TypeError, "x has dtype"),
    "layernorm list x": ("layernorm_forward", lambda: ([[1.0]], np.ones(1)), TypeError, "x is a list"),
    "layernorm dout": ("layernorm_backward", lambda: (np.ones((2, 4)), _layernorm_cache()), ValueError,
                       "dout has shape"),
    "gelu int": ("gelu_tanh_forward", lambda: (np.ones(3, int),), TypeError, "x has dtype"),
    "gelu dout": ("gelu_tanh_backward", lambda: (np.ones(3, np.float32), activation.gelu_tanh_forward(np.ones(3))[1]),
                  ValueError, "dout has shape"),
    "cross-entropy targets shape": ("cross_entropy_forward", lambda: (np.ones((2, 5)), np.zeros(3, np.int64)),
                                    ValueError, "targets has shape"),
    "cross-entropy targets dtype": ("cross_entropy_forward", lambda: (np.ones((2, 5)), np.zeros(2)), TypeError,
                                    "targets has dtype"),
    "cross-entropy target id": ("cross_entropy_forward", lambda: (np.ones((2, 5)), np.array([0, 5])), ValueError,
                                "targets contains 5"),
    "cross-entropy smoothing": ("cross_entropy_forward", lambda: (np.ones((2, 5)), np.zeros(2, int), -100, 1.0),
                                ValueError, "label_smoothing=1.0"),
    "cross-entropy int logits": ("cross_entropy_forward", lambda: (np.ones((2, 5), int), np.zeros(2, int)),
                                 TypeError, "logits has dtype"),
    "embedding rows": ("embedding_backward", lambda: (np.ones((2, 4)), (np.zeros(3, int), 5)), ValueError,
                       "one row per token"),
    "embedding dw_out": ("embedding_backward", lambda: (np.ones((3, 4)), (np.zeros(3, int), 5), np.ones((5, 3))),
                         ValueError, "dw_out has shape"),
    "embedding strided dw_out": ("embedding_backward", lambda: (np.ones((3, 4)), (np.zeros(3, int), 5),
                                                                np.ones((4, 5)).T), ValueError, "not C-contiguous"),
    "embedding ids": ("embedding_backward", lambda: (np.ones((3, 4)), (np.array([0, 5, 1]), 5)), ValueError,
                      "out of range"),
    "adamw dtypes": ("adamw_update", lambda: (_flat(), _flat(4, np.float32), _flat(), _flat(), np.ones(4, bool),
                                              1e-3, 0.9, 0.99, 1e-8, 0.0, 1), ValueError, "g has shape"),
    "adamw decay": ("adamw_update", lambda: (_flat(), _flat(), _flat(), _flat(), np.ones(3, bool), 1e-3, 0.9,
                                             0.99, 1e-8, 0.0, 1), ValueError, "decay has shape"),
    "adamw strided": ("adamw_update", lambda: (*(np.ones(8)[::2] for _ in range(4)), np.ones(4, bool), 1e-3,
                                               0.9, 0.99, 1e-8, 0.0, 1), ValueError, "not contiguous"),
    "sum_squares int": ("sum_squares", lambda: (np.ones(3, int),), TypeError, "a has dtype"),
}

# The NumPy twins in npgpt/nn: the same checks (one function each, in kernels/reference.py)
TWINS = {"layernorm_forward": norm.layernorm_forward, "layernorm_backward": norm.layernorm_backward,
         "gelu_tanh_forward": activation.gelu_tanh_forward, "gelu_tanh_backward": activation.gelu_tanh_backward,
         "cross_entropy_forward": loss.cross_entropy_forward, "embedding_backward": embedding.embedding_backward}


@pytest.mark.parametrize("name", BAD_CALLS)
def test_bad_input_raises_before_compiled_code(monkeypatch, name):
    def must_not_run(*args):
        raise AssertionError("compiled code ran on bad input")
    kernel, args, error, match = BAD_CALLS[name]
    for module in (elementwise, cpu_loss, optimizer):
        for attr, value in vars(module).items():
            if hasattr(value, "py_func"):                     # a Numba dispatcher: compiled code
                monkeypatch.setattr(module, attr, must_not_run)
    with pytest.raises(error, match=match):
        getattr(cpu, kernel)(*args())


@pytest.mark.parametrize("name", [n for n, (kernel, *_) in BAD_CALLS.items() if kernel in TWINS])
def test_the_numpy_twin_raises_the_same_error(name):
    kernel, args, error, match = BAD_CALLS[name]
    with pytest.raises(error, match=match) as fused:
        getattr(cpu, kernel)(*args())
    with pytest.raises(error) as twin:
        TWINS[kernel](*args())
    assert str(twin.value) == str(fused.value)


def _parameters(fn):
    """(name, default, kind) of each parameter: the signature without its annotations."""
    return [(p.name, p.default, p.kind) for p in inspect.signature(fn).parameters.values()]


def test_fused_kernels_have_their_twins_signatures():
    twins = {**TWINS, "cross_entropy_backward": loss.cross_entropy_backward,
             "cross_entropy_forward_backward": loss.cross_entropy_forward_backward,
             "adamw_update": optim.adamw_update}
    for name, twin in twins.items():
        assert _parameters(getattr(cpu, name)) == _parameters(twin), name


def test_the_registry_serves_the_fused_kernels_only_on_numba():
    names = ("layernorm_forward", "layernorm_backward", "gelu_tanh_forward", "gelu_tanh_backward",
             "cross_entropy_forward", "cross_entropy_backward", "cross_entropy_forward_backward",
             "adamw_update", "sum_squares", "embedding_backward")
    with kernels.backend("numba"):
        assert all(kernels.fused(n) is getattr(cpu, n) for n in names)
    with kernels.backend("numpy"):
        assert all(kernels.fused(n) is None for n in names)


# ------------------------------------------------------------------------------------- matmul_add

@settings(max_examples=20)
@given(M=st.integers(1, 40), K=st.integers(0, 40), N=st.integers(1, 40), dtype=DTYPES,
       layout=st.sampled_from(["nn", "tn", "nt", "tt"]), seed=st.integers(0, 2**16))
def test_matmul_add_equals_reference(M, K, N, dtype, layout, seed):
    """c += a @ b as one BLAS product (gemm's beta = 1), a and b possibly transposed views."""
    rng = np.random.default_rng(seed)
    a, b = matmul_operands(rng, M, K, N, dtype, layout)
    c = _normal(rng, (M, N), dtype)
    want = reference.matmul_add(c.copy(), a, b)
    assert cpu.matmul_add(c, a, b) is c
    assert_close(f"matmul_add {layout}", c, want, TOL[dtype])


def test_matmul_add_uses_one_blas_product_here():
    """numpy's OpenBLAS exports the ILP64 CBLAS on this install: no fallback to c += a @ b."""
    c = np.zeros((3, 2), np.float32)
    cpu.matmul_add(c, np.ones((3, 4), np.float32), np.ones((4, 2), np.float32))
    assert blas._CBLAS.get("s") is not None, "matmul_add fell back to a temporary"
    np.testing.assert_array_equal(c, 4)


def test_matmul_add_falls_back_without_blas(monkeypatch):
    monkeypatch.setitem(blas._CBLAS, "d", None)
    rng = np.random.default_rng(2)
    c, a, b = rng.standard_normal((4, 3)), rng.standard_normal((5, 4)).T, rng.standard_normal((5, 3))
    want = c + a @ b
    assert_close("fallback", cpu.matmul_add(c, a, b), want, 1e-15)


def test_matmul_add_strided_operands_fall_back_correctly():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((6, 8))[::2, ::2]          # neither rows nor columns contiguous
    b, c = rng.standard_normal((4, 5)), rng.standard_normal((3, 5))
    want = c + a @ b
    assert_close("strided", cpu.matmul_add(c, a, b), want, 1e-14)


@pytest.mark.parametrize("c, a, b, error", [
    (np.zeros((2, 3)), np.zeros((2, 4)), np.zeros((5, 3)), ValueError),           # K mismatch
    (np.zeros((2, 2)), np.zeros((2, 4)), np.zeros((4, 3)), ValueError),           # c's shape
    (np.zeros((2, 3), np.float32), np.zeros((2, 4)), np.zeros((4, 3)), TypeError),
    (np.zeros((2, 3)), np.zeros(4), np.zeros((4, 3)), ValueError),                # 1-D
])
def test_matmul_add_bad_input_raises_before_blas(monkeypatch, c, a, b, error):
    monkeypatch.setattr(blas, "_blas_matmul_add", lambda *args: pytest.fail("BLAS ran on bad input"))
    with pytest.raises(error, match="matmul_add"):
        cpu.matmul_add(c, a, b)
    with pytest.raises(error, match="matmul_add"):
        reference.matmul_add(c, a, b)


def test_matmul_of_stacked_rows_is_one_product_and_equals_numpy():
    """(B, T, K) @ (K, N) is flattened to one (B T, K) product; the values are np.matmul's."""
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((3, 5, 7)), rng.standard_normal((7, 2))
    for matmul in (reference.matmul, cpu.matmul):
        got = matmul(a, b)
        assert got.shape == (3, 5, 2)
        assert_close("stacked matmul", got, np.matmul(a, b), 1e-14)
        assert_close("transposed a", matmul(a.transpose(1, 0, 2), b), np.matmul(a.transpose(1, 0, 2), b), 1e-14)


# --------------------------------------------------------------- the Modules on both backends

def _run_module(backend_name, make, inputs, dout):
    """forward, backward and the parameters' gradients of a fresh Module on one backend."""
    module = make()
    with kernels.backend(backend_name):
        out = module.forward(*inputs)
        dx = module.backward(dout)
    return out, dx, [p.grad for p in module.parameters()]


def _module_cases(dtype):
    rng = np.random.default_rng(11)
    x = _normal(rng, (3, 5, 16), dtype, scale=2.0)
    dout = _normal(rng, x.shape, dtype)
    ids = rng.integers(0, 7, (3, 5))
    targets = rng.integers(0, 16, (3, 5))
    targets[0, :2] = -100
    kw = dict(dtype=dtype.__name__)
    return {
        "LayerNorm": (lambda: nn.LayerNorm(16, **kw), (x,), dout),
        "LayerNorm without bias": (lambda: nn.LayerNorm(16, bias=False, **kw), (x,), dout),
        "GELU tanh": (lambda: nn.GELU(approximate="tanh"), (x,), dout),
        "GELU": (lambda: nn.GELU(), (x,), dout),
        "ReLU": (lambda: nn.ReLU(), (x,), dout),
        "CrossEntropyLoss": (lambda: nn.CrossEntropyLoss(label_smoothing=0.1), (x, targets), 0.7),
        "CrossEntropyLoss dloss 1": (lambda: nn.CrossEntropyLoss(), (x, targets), 1.0),    # from the forward
        "Embedding": (lambda: nn.Embedding(7, 16, **kw, rng=np.random.default_rng(1)), (ids,), dout),
    }


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", list(_module_cases(np.float64)))
def test_modules_give_the_same_numbers_on_numpy_and_numba(case, dtype):
    make, inputs, dout = _module_cases(dtype)[case]
    want = _run_module("numpy", make, inputs, dout)
    got = _run_module("numba", make, inputs, dout)
    for what, g, w in zip(("out", "dx", "grads"), got, want):
        for gi, wi in zip(*((g, w) if isinstance(g, list) else ([g], [w]))):
            if wi is None:
                assert gi is None, what
            elif np.isscalar(wi):
                assert gi == pytest.approx(wi, rel=TOL[dtype]), what
            else:
                assert gi.dtype == wi.dtype and gi.shape == wi.shape, what
                assert_close(f"{case} {what}", gi, wi, TOL[dtype])


def test_a_module_chooses_its_kernel_at_each_call():
    """A forward on one backend and the backward on the other: the one cache type makes it work."""
    rng = np.random.default_rng(12)
    x, dout = rng.standard_normal((4, 8)), rng.standard_normal((4, 8))
    grads = []
    for first, second in (("numpy", "numba"), ("numba", "numpy"), ("numpy", "numpy")):
        layer = nn.LayerNorm(8, dtype="float64")
        with kernels.backend(first):
            layer.forward(x)
        with kernels.backend(second):
            grads.append((layer.backward(dout), layer.weight.grad.copy()))
    for dx, dw in grads[:2]:
        assert_close("dx", dx, grads[2][0], 1e-12)
        assert_close("dw", dw, grads[2][1], 1e-12)


def test_cross_entropy_module_writes_the_gradient_in_a_training_forward_only():
    """Training mode on Numba: the forward writes dlogits, backward(1.0) hands it on once; a
    second backward, another dloss or eval mode compute it from the cache: the same numbers."""
    rng = np.random.default_rng(13)
    x, targets = rng.standard_normal((6, 11)).astype(np.float32), rng.integers(0, 11, 6)
    module = nn.CrossEntropyLoss()
    with kernels.backend("numba"):
        module.forward(x, targets)
        assert module._dlogits is not None
        first, second = module.backward(1.0), module.backward(1.0)
        np.testing.assert_array_equal(first, second)
        np.testing.assert_array_equal(module.backward(0.5), cpu.cross_entropy_backward(0.5, module._cache))
        module.eval()
        module.forward(x, targets)
        assert module._dlogits is None
        np.testing.assert_array_equal(module.backward(1.0), first)


# ------------------------------------------------------------ BLAS inside compiled kernels

@njit(cache=True)
def _call_gemm(A, B, C, beta):
    blas._gemm(A, B, C, beta)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("beta", [0.0, 1.0])
@pytest.mark.parametrize("m, k, n", [(5, 3, 8), (64, 64, 64), (1, 7, 1), (0, 3, 4), (3, 0, 4)])
def test_gemm_inside_a_kernel_equals_numpy(dtype, beta, m, k, n):
    """blas._gemm on views with row strides of their own (slices of larger arrays)."""
    rng = np.random.default_rng(m * 100 + k * 10 + n)
    A = rng.standard_normal((m + 2, k + 3)).astype(dtype)
    B = rng.standard_normal((k + 1, n + 5)).astype(dtype)
    C = rng.standard_normal((m + 4, n + 2)).astype(dtype)
    want = C.copy()
    want[1:m + 1, 2:n + 2] = A[2:, 3:] @ B[1:, 5:] + beta * C[1:m + 1, 2:n + 2]
    _call_gemm(A[2:, 3:], B[1:, 5:], C[1:m + 1, 2:n + 2], beta)
    assert_close("_gemm", C, want, TOL[dtype])


@pytest.mark.parametrize("kind, dtype", [("s", np.float32), ("d", np.float64)])
def test_the_loop_nest_behind_gemm_without_a_cblas_equals_numpy(kind, dtype):
    """The compiled loop nest blas.py binds the symbol to where numpy's BLAS has no CBLAS."""
    fallback = blas._loop_gemm(kind)
    ptr = ctypes.POINTER(ctypes.c_float if kind == "s" else ctypes.c_double)
    rng = np.random.default_rng(7)
    a, b, c = (rng.standard_normal(s).astype(dtype) for s in ((4, 6), (5, 9), (4, 8)))
    for beta in (0.0, 1.0):
        want = a[:, :5] @ b[:, :7] + beta * c[:, :7]
        got = c.copy()
        fallback.ctypes(101, 111, 111, 4, 7, 5, 1.0, a.ctypes.data_as(ptr), 6, b.ctypes.data_as(ptr), 9,
                        beta, got.ctypes.data_as(ptr), 8)
        assert_close("loop gemm", got[:, :7], want, TOL[dtype])
        np.testing.assert_array_equal(got[:, 7:], c[:, 7:])
