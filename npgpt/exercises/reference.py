"""npgpt's solutions of the exercises whose template keeps a cache of its own.

Most templates keep exactly the cache of npgpt's pure function, and npgpt's backward is the
solution as it stands (npgpt.nn.linear_backward, ...). Where a template's cache is simpler or
holds a whole block, the solution below is npgpt's own backwards, chained in the order the
forward's lines are undone, each under the line it inverts: the way GPT.backward reads.
"""

from __future__ import annotations

import numpy as np

from .. import nn
from ..kernels.reference import AttentionCache, attention_backward
from ..nn.loss import CrossEntropyCache
from ..nn.norm import LayerNormCache


def cross_entropy_backward(dloss, cache):
    """The plain exercise's cache (logits, lse, targets) is npgpt's with every row valid and
    no smoothing: npgpt.nn.cross_entropy_backward, on that cache."""
    logits, lse, targets = cache
    N = logits.shape[0]
    full = CrossEntropyCache(logits, lse, targets, np.ones(N, dtype=bool), N, 0.0, logits.shape)
    return nn.cross_entropy_backward(dloss, full)


def multihead_attention_backward(dout, cache):
    """npgpt.nn.MultiHeadAttention.backward, written with the pure functions."""
    x, w_attn, q, k, v, att, merged, w_proj = cache
    H, D = q.shape[1], q.shape[3]
    # forward: y = merged @ W_proj + b_proj
    dmerged, dw_proj, db_proj = nn.linear_backward(dout, (merged, w_proj, True))
    # forward: merged = merge_heads(o)                    (B, H, T, D) -> (B, T, C)
    do = nn.split_heads(dmerged, H)
    # forward: o = softmax(q k^T / sqrt(D) + mask) v
    dq, dk, dv = attention_backward(do, AttentionCache(q, k, v, att, None, 1.0 / np.sqrt(D)))
    # forward: q, k, v = split_heads of the thirds of qkv -> the three gradients side by side
    dqkv = np.concatenate([nn.merge_heads(d) for d in (dq, dk, dv)], axis=-1)   # (B, T, 3C)
    # forward: qkv = x @ W_attn + b_attn
    dx, dw_attn, db_attn = nn.linear_backward(dqkv, (x, w_attn, True))
    return dx, dw_attn, db_attn, dw_proj, db_proj, None


def residual_backward(dout, cache):
    """npgpt.nn.Block.backward's second half (y = h + mlp(ln_2(h))), with the pure functions."""
    x, ln_w, mu, rstd, h, w_fc, z, t, a, w_proj = cache
    # forward: y = x + a @ W_proj + b_proj
    da, dw_proj, db_proj = nn.linear_backward(dout, (a, w_proj, True))
    # forward: a = gelu_tanh(z)
    dz = nn.gelu_tanh_backward(da, (z, t))
    # forward: z = h @ W_fc + b_fc
    dh, dw_fc, db_fc = nn.linear_backward(dz, (h, w_fc, True))
    # forward: h = LayerNorm(x)
    dx_branch, dln_w, dln_b = nn.layernorm_backward(dh, LayerNormCache(x, ln_w, mu, rstd, True))
    # forward: y = x + branch(x): the stream split, so the two gradients add
    return dout + dx_branch, dln_w, dln_b, dw_fc, db_fc, dw_proj, db_proj


def tied_head_backward(dout, cache):
    """npgpt.models.GPT's head and embedding backwards, with the pure functions."""
    idx, w, x = cache
    # forward: logits = x @ W^T          (a Linear whose weight is W^T: (C, V))
    dx, dw_t, _ = nn.linear_backward(dout, (x, w.T, False))
    # forward: x = W[idx] + pos           W's second use: its gradients add
    dw = dw_t.T + nn.embedding_backward(dx, (idx, w.shape[0]))
    dpos = dx.sum(axis=0)                 # pos was added to every sequence of the batch
    return None, dw, dpos
