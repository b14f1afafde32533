"""Decoding one token at a time: one new query's attention over a KV cache, read in place.

Generating a token reads every weight of the model once and does two FLOPs per weight: it is
bound by how fast memory delivers the weights, not by arithmetic (npgpt/bench/roofline.py). The
products of one row by a weight matrix go to BLAS (kernels/cpu/blas.py: np.matmul streams GPT-2's
weights at about 80% of the machine's triad bandwidth here, a hand-written Numba loop no faster;
docs/speed.md). What this file adds is the attention of the new position:

    attention_decode   one new query per head against the first `length` keys and values of a
                       preallocated cache (nn.attention.KVCache's buffers), read where they lie:
                       the general kernel would first copy them into contiguous arrays
                       (kernels/cpu/attention.py), O(T) per token and layer, O(T^2) over a
                       generation, on top of the O(T^2) of concatenating the cache itself.

It is tested equal to its NumPy definition, reference.attention_decode.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .. import reference
from .attention import attention_forward
from .gemm import _dot
from .intrinsics import _FM, _exp_nonpos
from .tasks import PARALLEL_FROM

@njit(fastmath=_FM, cache=True)
def _attend_one(q, k, v, scale, out):
    """out = softmax(k q * scale) v for one query q (D,), keys and values (L, D)."""
    L, D = k.shape
    dt = q.dtype.type
    s = np.empty(L, dtype=q.dtype)
    m = dt(-np.inf)
    # s_j = q . k_j * scale;  m = max_j s_j
    for j in range(L):
        s[j] = _dot(q, k[j]) * dt(scale)
        m = max(m, s[j])
    # p_j = exp(s_j - m);  total = sum_j p_j
    total = dt(0)
    for j in range(L):
        s[j] = _exp_nonpos(s[j] - m)
        total += s[j]
    # out = sum_j p_j v_j / total
    out[:] = 0
    for j in range(L):
        p, vj = s[j], v[j]
        for d in range(D):
            out[d] += p * vj[d]
    inv = dt(1) / total
    for d in range(D):
        out[d] *= inv


@njit(cache=True)
def _attend_heads(q, k, v, length, scale, out):
    B, H = q.shape[0], q.shape[1]
    # for each (batch, head), on the calling thread: a token's attention is small work
    for t in range(B * H):
        b, h = t // H, t % H
        _attend_one(q[b, h, 0], k[b, h, :length], v[b, h, :length], scale, out[b, h, 0])


@njit(parallel=True, cache=True)
def _attend_heads_parallel(q, k, v, length, scale, out):
    B, H = q.shape[0], q.shape[1]
    # for each (batch, head), in parallel (many sequences, or long ones)
    for t in prange(B * H):
        b, h = t // H, t % H
        _attend_one(q[b, h, 0], k[b, h, :length], v[b, h, :length], scale, out[b, h, 0])


def attention_decode(q, k_cache, v_cache, length: int):
    """reference.attention_decode: new queries against a KV cache's first `length` positions.

    One query per head (the decoding step) reads the buffers in place, on the calling thread
    below PARALLEL_FROM cached numbers (GPT-2 up to 1024 positions: a parallel launch here would
    wait for BLAS's spinning threads), else one (batch, head) per task. More
    queries (a prompt, once) go to the general kernel, which copies the filled part.
    """
    reference.check_attention_decode_args(q, k_cache, v_cache, length)
    B, H, Tq, D = q.shape
    if Tq != 1 or not (k_cache.flags.c_contiguous and v_cache.flags.c_contiguous):
        out, _ = attention_forward(q, k_cache[:, :, :length], v_cache[:, :, :length], causal=True)
        return out
    out = np.empty_like(q)
    attend = _attend_heads_parallel if B * H * length * D >= PARALLEL_FROM else _attend_heads
    attend(np.ascontiguousarray(q), k_cache, v_cache, length, 1.0 / math.sqrt(D), out)
    return out
