"""The reshapes around attention: split_qkv_heads / merge_qkv_heads against split_heads /
merge_heads of each third (the readable forms they stand for)."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from npgpt.nn.attention import merge_heads, merge_qkv_heads, split_heads, split_qkv_heads


@given(st.integers(1, 3), st.integers(1, 9), st.integers(1, 4), st.integers(1, 5), st.integers(0, 2**16))
def test_qkv_heads_split_and_merge_like_each_third(B, T, H, D, seed):
    qkv = np.random.default_rng(seed).standard_normal((B, T, 3 * H * D))
    q, k, v = split_qkv_heads(qkv, H)
    for got, third in zip((q, k, v), np.split(qkv, 3, axis=-1)):
        assert got.flags.c_contiguous
        np.testing.assert_array_equal(got, split_heads(third, H))
    merged = merge_qkv_heads(q, k, v)
    np.testing.assert_array_equal(merged, np.concatenate([merge_heads(t) for t in (q, k, v)], axis=-1))
    np.testing.assert_array_equal(merged, qkv)
