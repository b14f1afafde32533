"""Exercise: causal scaled dot-product attention, one head (no projections yet).

Write attention_backward, then run `npgpt exercise check attention`.
"""

from typing import NamedTuple

import numpy as np


class AttentionCache(NamedTuple):
    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    att: np.ndarray               # (B, H, T, T) softmax probabilities
    keep: np.ndarray | None       # a dropout mask on att (None here: no dropout)
    scale: float                  # 1 / sqrt(D)


def attention_forward(q, k, v):
    """Causal scaled dot-product attention: each position sees itself and the ones before it.

        s   = q @ k^T / sqrt(D) + mask     (B, H, T, T); mask is -inf above the diagonal
        att = softmax(s) over the keys (the last axis)
        out = att @ v                      (B, H, T, D)

    q, k, v: (B, H, T, D); the heads are independent, a batch axis (H = 1 in this exercise)
    cache: AttentionCache(q, k, v, att, None, 1 / sqrt(D))
    """
    B, H, T, D = q.shape
    scale = 1.0 / np.sqrt(D)
    s = (q @ k.transpose(0, 1, 3, 2)) * scale                          # (B, H, T, T)
    s = np.where(np.triu(np.ones((T, T), dtype=bool), k=1), -np.inf, s)  # hide later keys
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    att = e / e.sum(axis=-1, keepdims=True)
    return att @ v, AttentionCache(q, k, v, att, None, scale)


def attention_backward(dout, cache):
    """Gradients of attention_forward: (dq, dk, dv), each (B, H, T, D).

    dout: (B, H, T, D). Go back through the three lines of the forward, last first: the
    product with v, the softmax (its backward is the softmax exercise's), the scaled product
    q k^T. A masked score has att = 0: what gradient does it pass?
    """
    q, k, v, att, keep, scale = cache
    raise NotImplementedError("write attention_backward: return dq, dk, dv")


def attention_inputs(rng):
    """q, k, v: (2, 1, 4, 3): two sequences of 4 positions, one head of size 3."""
    return [rng.standard_normal((2, 1, 4, 3)) for _ in range(3)]
