"""The attention exercises: one causal head, then multi-head attention with its projections.

Each mistake is a wrong backward as people write it, on the template's cache.
"""

from __future__ import annotations

import numpy as np

from .. import nn
from ..kernels import reference as kref
from . import reference
from .spec import Exercise, Mistake


def _t(a):
    """Swap the last two axes: (B, H, T, D) -> (B, H, D, T)."""
    return a.swapaxes(-1, -2)


def _attention(dout, q, k, v, att, scale, sum_term=True, scales=1, att_t=True, ds_t=True):
    """The right gradients of causal attention, or one of their classic variants (the switches)."""
    dv = (_t(att) if att_t else att) @ dout
    datt = dout @ _t(v)
    ds = att * (datt - (datt * att).sum(axis=-1, keepdims=True)) if sum_term else att * datt
    ds = ds * scale ** scales
    return ds @ k, (_t(ds) if ds_t else ds) @ q, dv


# -- one head ------------------------------------------------------------------------------

def attention_softmax_no_sum(dout, cache):
    q, k, v, att, keep, scale = cache
    return _attention(dout, q, k, v, att, scale, sum_term=False)


def attention_scale_twice(dout, cache):
    q, k, v, att, keep, scale = cache
    return _attention(dout, q, k, v, att, scale, scales=2)


def attention_scale_forgotten(dout, cache):
    q, k, v, att, keep, scale = cache
    return _attention(dout, q, k, v, att, scale, scales=0)


def attention_dv_not_transposed(dout, cache):
    q, k, v, att, keep, scale = cache
    return _attention(dout, q, k, v, att, scale, att_t=False)


def attention_dk_not_transposed(dout, cache):
    q, k, v, att, keep, scale = cache
    return _attention(dout, q, k, v, att, scale, ds_t=False)


ATTENTION = Exercise(
    name="attention", title="causal attention, one head: softmax(q k^T / sqrt(D) + mask) v",
    hints=("Three lines to undo, last first: out = att @ v gives dv and datt, like a Linear "
           "with two inputs (mind which is transposed: the shapes tell).",
           "att = softmax(s) row by row: ds is the softmax exercise's backward, applied to datt. "
           "Masked entries have att = 0, so they pass nothing: no special case is needed.",
           "s = q @ k^T * scale: dq and dk, each times the scale once.",
           "dv = att^T @ dout;  datt = dout @ v^T;  ds = att * (datt - sum_k(datt * att));  "
           "dq = ds @ k * scale;  dk = ds^T @ q * scale."),
    mistakes=(Mistake("the softmax backward without its sum term", "att_ij depends on every score "
                      "of row i: the softmax's backward subtracts sum_k(datt * att).",
                      attention_softmax_no_sum),
              Mistake("the scale applied twice", "s = q k^T * scale: the scale enters dq and dk "
                      "once each; applying it to ds and again to dq, dk counts it twice.",
                      attention_scale_twice),
              Mistake("the scale 1/sqrt(D) forgotten", "the scores were multiplied by 1/sqrt(D): "
                      "so are their gradients.", attention_scale_forgotten),
              Mistake("att not transposed in dv", "out_i = sum_j att_ij v_j: dv_j = sum_i att_ij "
                      "dout_i, a product with att^T.", attention_dv_not_transposed),
              Mistake("ds not transposed in dk", "s_ij = q_i . k_j: dk_j = sum_i ds_ij q_i, a "
                      "product with ds^T.", attention_dk_not_transposed)),
    reference=kref.attention_backward, sources=(kref.attention_forward, kref.attention_backward))


# -- multi-head, with the projections ------------------------------------------------------

def _multihead(dout, cache, heads_transposed=True, scales=1, proj_t=True, order=(0, 1, 2)):
    """The right gradients, or one of their classic variants (the switches)."""
    x, w_attn, q, k, v, att, merged, w_proj = cache
    B, H, T, D = q.shape
    dmerged = dout @ (w_proj.T if proj_t else w_proj)
    if heads_transposed:
        do = dmerged.reshape(B, T, H, D).transpose(0, 2, 1, 3)      # (B, T, C) -> (B, H, T, D)
    else:
        do = dmerged.reshape(B, H, T, D)
    grads = _attention(do, q, k, v, att, 1 / np.sqrt(D), scales=scales)
    dqkv = np.concatenate([grads[i].transpose(0, 2, 1, 3).reshape(B, T, H * D) for i in order], -1)
    rows = lambda a: a.reshape(-1, a.shape[-1])                      # noqa: E731
    return (dqkv @ w_attn.T, rows(x).T @ rows(dqkv), rows(dqkv).sum(0),
            rows(merged).T @ rows(dout), rows(dout).sum(0), None)


def mha_heads_without_transpose(dout, cache):
    return _multihead(dout, cache, heads_transposed=False)


def mha_scale_twice(dout, cache):
    return _multihead(dout, cache, scales=2)


def mha_proj_not_transposed(dout, cache):
    return _multihead(dout, cache, proj_t=False)


def mha_dq_dk_swapped(dout, cache):
    return _multihead(dout, cache, order=(1, 0, 2))


MULTIHEAD_ATTENTION = Exercise(
    name="multihead_attention", title="multi-head causal attention with its projections",
    hints=("Undo the forward line by line, last first: the output projection is a Linear (your "
           "Linear exercise): it gives dmerged, dW_proj, db_proj.",
           "The merge was transpose(0, 2, 1, 3) then reshape: undo it in reverse, reshape to "
           "(B, T, H, D) then transpose(0, 2, 1, 3). A reshape to (B, H, T, D) alone mixes heads.",
           "Per head, attention's backward (your attention exercise) gives dq, dk, dv; merge each "
           "back to (B, T, C) and put them side by side, in the order q, k, v were split.",
           "dmerged = dout @ W_proj^T;  do = split_heads(dmerged);  dq, dk, dv = attention "
           "backward;  dqkv = [merge(dq), merge(dk), merge(dv)];  then the first Linear's backward."),
    mistakes=(Mistake("heads split without the transpose", "the heads were merged by "
                      "transpose(0, 2, 1, 3) then reshape: to split the gradient, reshape to "
                      "(B, T, H, D) then transpose back.", mha_heads_without_transpose),
              Mistake("the scale applied twice", "1/sqrt(D) enters dq and dk once each.",
                      mha_scale_twice),
              Mistake("W_proj's transpose forgotten", "y = merged @ W_proj: dmerged = dout @ "
                      "W_proj^T (the shapes agree only because W_proj is square).",
                      mha_proj_not_transposed),
              Mistake("dq and dk swapped in dqkv", "qkv was split in the order q, k, v: the "
                      "gradients go back side by side in that order.", mha_dq_dk_swapped)),
    reference=reference.multihead_attention_backward,
    sources=(reference.multihead_attention_backward, nn.linear_backward, nn.split_heads,
             kref.attention_backward, nn.merge_heads))
