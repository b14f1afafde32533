"""The decoding kernels (kernels/cpu/decode.py) against their NumPy definitions: a row times a
matrix, and one query's attention over a KV cache's buffers."""

from __future__ import annotations

import numpy as np
import pytest

from npgpt.kernels import cpu, reference
from npgpt.kernels.cpu import decode
from tests.helpers import assert_close

TOL = {"float32": 2e-6, "float64": 1e-13}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("K, N", [(1, 1), (7, 5), (64, 2048 + 3), (130, 333), (3 * 64, 40), (9, 4 * 256 + 7)])
def test_row_times_matrix_equals_matmul_in_both_layouts(dtype, K, N):
    rng = np.random.default_rng(K * N)
    x = rng.standard_normal((1, K)).astype(dtype)
    w = rng.standard_normal((K, N)).astype(dtype)
    assert_close("x @ W", decode.row_times_matrix(x, w), x @ w, TOL[dtype])
    e = np.ascontiguousarray(w.T)                               # the tied head: x @ E^T
    assert_close("x @ E^T", decode.row_times_matrix(x, e.T), x @ w, TOL[dtype])
    if N > 2:                                                   # neither layout: BLAS's turn
        assert decode.row_times_matrix(x, w[:, ::2]) is None


def test_matmul_of_one_row_is_the_reference_s():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((1, 1, 96)).astype(np.float32)
    b = rng.standard_normal((96, 200)).astype(np.float32)
    for bb in (b, np.asfortranarray(b), b[:, ::2]):
        assert_close("matmul", cpu.matmul(a, bb), reference.matmul(a, bb), 2e-6)


def _cache(rng, B, H, capacity, D, dtype):
    k, v = (rng.standard_normal((B, H, capacity, D)).astype(dtype) for _ in range(2))
    k[:, :, -1] = v[:, :, -1] = np.nan              # past `length`: never read
    return k, v


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("B, H, length, D, Tq", [(1, 1, 1, 4, 1), (2, 3, 17, 8, 1), (1, 12, 200, 64, 1), (1, 2, 5, 8, 1),
                                                 (4, 8, 600, 64, 1),        # past ATTEND_PARALLEL_FROM: in parallel
                                                 (2, 2, 9, 8, 4)])          # a prompt: the general kernel
def test_attention_decode_equals_the_reference(dtype, B, H, length, D, Tq):
    rng = np.random.default_rng(length)
    k, v = _cache(rng, B, H, length + 3, D, dtype)
    q = rng.standard_normal((B, H, Tq, D)).astype(dtype)
    want = reference.attention_decode(q, k, v, length)
    full, _ = reference.attention_forward(q, k[:, :, :length], v[:, :, :length], causal=True)
    np.testing.assert_array_equal(want, full)
    assert_close("attention_decode", cpu.attention_decode(q, k, v, length), want, 10 * TOL[dtype])


@pytest.mark.parametrize("length", [0, 2, 9, True])
def test_attention_decode_rejects_a_length_outside_the_cache(length):
    rng = np.random.default_rng(0)
    k, v = _cache(rng, 1, 2, 8, 4, "float32")
    q = rng.standard_normal((1, 2, 2 if length == 0 else 3, 4)).astype(np.float32)
    for kernel in (reference.attention_decode, cpu.attention_decode):
        with pytest.raises(ValueError, match=f"length={length!r}: expected an int in"):
            kernel(q, k, v, length)
