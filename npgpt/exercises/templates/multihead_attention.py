"""Exercise: multi-head causal self-attention with its projections (GPT-2's attention layer).

Write multihead_attention_backward, then run `npgpt exercise check multihead_attention`.
"""

from typing import NamedTuple

import numpy as np


class MultiHeadCache(NamedTuple):
    x: np.ndarray        # (B, T, C) the input
    w_attn: np.ndarray   # (C, 3C)
    q: np.ndarray        # (B, H, T, D), and k, v: the heads
    k: np.ndarray
    v: np.ndarray
    att: np.ndarray      # (B, H, T, T) softmax probabilities
    merged: np.ndarray   # (B, T, C) the heads' outputs side by side, the input of c_proj
    w_proj: np.ndarray   # (C, C)


def multihead_attention_forward(x, w_attn, b_attn, w_proj, b_proj, n_head):
    """H heads of causal attention over a width C = H * D, between two projections.

        q, k, v = split(x @ W_attn + b_attn)          (B, T, 3C) -> 3 x (B, T, C)
        q_h, k_h, v_h: the H slices of width D        (B, T, C) -> (B, H, T, D)
        o_h     = softmax(q_h k_h^T / sqrt(D) + mask) v_h
        y       = concat(o_1 .. o_H) @ W_proj + b_proj

    x: (B, T, C)   W_attn: (C, 3C)   b_attn: (3C,)   W_proj: (C, C)   b_proj: (C,)   n_head: H
    ->   y: (B, T, C).   cache: MultiHeadCache (above).
    """
    B, T, C = x.shape
    H, D = n_head, C // n_head
    qkv = x @ w_attn + b_attn                                            # (B, T, 3C)
    q, k, v = (z.reshape(B, T, H, D).transpose(0, 2, 1, 3)               # (B, T, C) -> (B, H, T, D)
               for z in np.split(qkv, 3, axis=-1))
    s = (q @ k.transpose(0, 1, 3, 2)) / np.sqrt(D)                       # (B, H, T, T)
    s = np.where(np.triu(np.ones((T, T), dtype=bool), k=1), -np.inf, s)
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    att = e / e.sum(axis=-1, keepdims=True)
    merged = (att @ v).transpose(0, 2, 1, 3).reshape(B, T, C)            # (B, H, T, D) -> (B, T, C)
    y = merged @ w_proj + b_proj
    return y, MultiHeadCache(x, w_attn, q, k, v, att, merged, w_proj)


def multihead_attention_backward(dout, cache):
    """Gradients of multihead_attention_forward: (dx, dw_attn, db_attn, dw_proj, db_proj, None),
    each the shape of its input (n_head is an integer: None).

    dout: (B, T, C). The forward, read backwards: a Linear (the Linear exercise), the merge of
    the heads (undo its reshape and transpose in the opposite order), attention per head (the
    attention exercise), the split into q, k, v, and the first Linear.
    """
    x, w_attn, q, k, v, att, merged, w_proj = cache
    raise NotImplementedError("write multihead_attention_backward: return dx, dw_attn, db_attn, "
                              "dw_proj, db_proj, None")


def multihead_attention_inputs(rng):
    """x: (2, 4, 6) with H = 2 heads of D = 3; weights a little larger than a model's init
    (std 0.5), so that the softmax is far from uniform."""
    C = 6
    return [rng.standard_normal((2, 4, C)), 0.5 * rng.standard_normal((C, 3 * C)),
            0.5 * rng.standard_normal(3 * C), 0.5 * rng.standard_normal((C, C)),
            rng.standard_normal(C), 2]
