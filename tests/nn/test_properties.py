"""Invariants that hold for every shape: checked with hypothesis over batch, length, width, heads."""

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from npgpt import nn
from npgpt.kernels import reference

batch = st.integers(1, 4)
length = st.integers(1, 17)
odd_width = st.integers(0, 10).map(lambda i: 2 * i + 1)
heads = st.integers(1, 4)
seeds = st.integers(0, 2**32 - 1)


@given(batch, length, odd_width, seeds)
def test_softmax_rows_sum_to_one(B, T, C, seed):
    x = np.random.default_rng(seed).standard_normal((B, T, C)) * 30    # large logits: stability
    y, _ = nn.softmax_forward(x)
    np.testing.assert_allclose(y.sum(axis=-1), 1.0, rtol=0, atol=1e-12)
    assert (y >= 0).all()


@given(batch, length, st.integers(2, 33), seeds, st.sampled_from(["float32", "float64"]))
def test_layernorm_rows_have_mean_zero_and_variance_one(B, T, C, seed, dtype):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((B, T, C)) * rng.uniform(0.5, 5) + rng.uniform(-3, 3)).astype(dtype)
    y = nn.LayerNorm(C, dtype=dtype).forward(x)
    var_x = x.astype(np.float64).var(axis=-1)
    tol = 1e-4 if dtype == "float32" else 1e-10
    np.testing.assert_allclose(y.mean(axis=-1), 0.0, atol=tol)
    # var(y) = var(x) / (var(x) + eps): 1 up to the eps inside the square root
    np.testing.assert_allclose(y.astype(np.float64).var(axis=-1), var_x / (var_x + 1e-5), rtol=tol, atol=tol)


@given(batch, st.integers(2, 17), heads, st.integers(1, 5), seeds, st.data())
def test_causal_attention_does_not_look_ahead(B, T, H, D, seed, data):
    t = data.draw(st.integers(0, T - 2), label="t")
    rng = np.random.default_rng(seed)
    attn = nn.MultiHeadAttention(H * D, H, causal=True, dtype="float64", rng=rng, std=0.5)
    x = rng.standard_normal((B, T, H * D))
    y = attn.forward(x)
    x2 = x.copy()
    x2[:, t + 1:] = rng.standard_normal(x2[:, t + 1:].shape) * 10     # change only the future
    y2 = attn.forward(x2)
    np.testing.assert_array_equal(y[:, :t + 1], y2[:, :t + 1])
    assert not np.allclose(y[:, t + 1:], y2[:, t + 1:])


@given(batch, st.integers(2, 17), heads, seeds, st.data())
def test_padded_keys_do_not_change_real_outputs(B, T, H, seed, data):
    rng = np.random.default_rng(seed)
    n_real = data.draw(st.integers(1, T - 1), label="n_real")
    pad = np.zeros((B, T), dtype=bool)
    pad[:, n_real:] = True
    attn = nn.MultiHeadAttention(4 * H, H, causal=False, dtype="float64", rng=rng, std=0.5)
    x = rng.standard_normal((B, T, 4 * H))
    y = attn.forward(x, key_pad=pad)
    x2 = x.copy()
    x2[:, n_real:] = rng.standard_normal(x2[:, n_real:].shape)
    np.testing.assert_allclose(attn.forward(x2, key_pad=pad)[:, :n_real], y[:, :n_real], rtol=1e-12, atol=1e-12)


@given(batch, length, st.integers(2, 300), seeds)
def test_cross_entropy_of_a_uniform_prediction_is_log_v(B, T, V, seed):
    targets = np.random.default_rng(seed).integers(0, V, size=(B, T))
    logits = np.full((B, T, V), 3.7)                     # any constant row is uniform
    loss, _ = nn.cross_entropy_forward(logits, targets)
    assert math.isclose(loss, math.log(V), rel_tol=1e-12)


@given(batch, length, st.integers(2, 50), seeds, st.floats(0.0, 0.5))
def test_ignored_positions_get_zero_gradient(B, T, V, seed, smoothing):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((B, T, V))
    targets = rng.integers(0, V, size=(B, T))
    ignored = rng.random((B, T)) < 0.4
    targets[ignored] = -100
    loss, cache = nn.cross_entropy_forward(logits, targets, label_smoothing=smoothing)
    dlogits = nn.cross_entropy_backward(1.0, cache)
    assert (dlogits[ignored] == 0).all()
    if (~ignored).any():
        assert np.abs(dlogits[~ignored]).sum() > 0
        # and the loss is the mean over the real positions only
        real, _ = nn.cross_entropy_forward(logits[~ignored], targets[~ignored], label_smoothing=smoothing)
        assert math.isclose(loss, real, rel_tol=1e-12)


@given(st.integers(1, 40), st.integers(1, 33), st.integers(0, 100))
def test_sinusoidal_encoding_is_the_formula(T, d, offset):
    pe = nn.sinusoidal_encoding(T, d, offset=offset, dtype="float64")
    for pos in (0, T - 1):
        for j in range(d):
            i2 = j - j % 2                                  # 2i for both 2i and 2i + 1
            angle = (offset + pos) / 10000 ** (i2 / d)
            expected = math.sin(angle) if j % 2 == 0 else math.cos(angle)
            assert math.isclose(pe[pos, j], expected, rel_tol=1e-12, abs_tol=1e-12)


@given(batch, st.integers(1, 9), st.integers(1, 17), heads, seeds)
def test_attention_with_fewer_queries_aligns_the_last_query_with_the_last_key(B, Tq, extra, H, seed):
    """Decoding with a KV cache: the last Tq rows of full causal attention equal attention of
    those Tq queries against every key."""
    rng = np.random.default_rng(seed)
    Tk = Tq + extra - 1
    q, k, v = (rng.standard_normal((B, H, Tk, 3)) for _ in range(3))
    full, _ = reference.attention_forward(q, k, v, causal=True)
    tail, _ = reference.attention_forward(q[:, :, -Tq:], k, v, causal=True)
    np.testing.assert_allclose(tail, full[:, :, -Tq:], rtol=1e-12, atol=1e-14)


def test_a_parameter_used_twice_receives_both_gradients():
    """Gradients accumulate: two forwards through one Linear, two backwards, the sum."""
    rng = np.random.default_rng(0)
    lin = nn.Linear(3, 2, dtype="float64", rng=rng)
    x1, x2 = rng.standard_normal((4, 3)), rng.standard_normal((5, 3))
    d1, d2 = rng.standard_normal((4, 2)), rng.standard_normal((5, 2))
    lin.forward(x1)
    lin.backward(d1)
    lin.forward(x2)
    lin.backward(d2)
    np.testing.assert_allclose(lin.weight.grad, x1.T @ d1 + x2.T @ d2, rtol=1e-13)


def test_dropout_is_identity_in_eval_and_scaled_in_training():
    x = np.ones((200, 50))
    drop = nn.Dropout(0.25, np.random.default_rng(0))
    y = drop.forward(x)
    kept = y != 0
    np.testing.assert_allclose(y[kept], 1 / 0.75)
    assert abs(kept.mean() - 0.75) < 0.01
    np.testing.assert_array_equal(drop.backward(x), y)           # same mask backward
    drop.eval()
    assert drop.forward(x) is x


def test_dropout_masks_repeat_with_the_seed():
    x = np.ones((8, 8))
    a = nn.Dropout(0.5, np.random.default_rng(7)).forward(x)
    b = nn.Dropout(0.5, np.random.default_rng(7)).forward(x)
    np.testing.assert_array_equal(a, b)
