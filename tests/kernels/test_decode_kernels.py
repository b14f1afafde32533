"""The decoding kernel (kernels/cpu/decode.py) against its NumPy definition: one query's
attention over a KV cache's buffers, on the calling thread and in parallel."""

from __future__ import annotations

import numpy as np
import pytest

from npgpt.kernels import cpu, reference
from tests.helpers import assert_close

TOL = {"float32": 2e-6, "float64": 1e-13}


def _cache(rng, B, H, capacity, D, dtype):
    k, v = (rng.standard_normal((B, H, capacity, D)).astype(dtype) for _ in range(2))
    k[:, :, -1] = v[:, :, -1] = np.nan              # past `length`: never read
    return k, v


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("B, H, length, D, Tq", [(1, 1, 1, 4, 1), (2, 3, 17, 8, 1), (1, 12, 200, 64, 1), (1, 2, 5, 8, 1),
                                                 (4, 8, 600, 64, 1),        # past PARALLEL_FROM: in parallel
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
