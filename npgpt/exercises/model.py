"""The exercises that put layers together: the residual block and the tied head.

Each mistake is a wrong backward as people write it, on the template's cache.
"""

from __future__ import annotations

import numpy as np

from .. import nn
from ..nn.norm import LayerNormCache
from . import reference
from .spec import Exercise, Mistake


def _rows(a):
    return a.reshape(-1, a.shape[-1])


# -- the residual block --------------------------------------------------------------------

def _residual(dout, cache, residual=True, branch=True, through_ln=True, through_gelu=True):
    """reference.residual_backward, or one of its classic variants (the switches)."""
    x, ln_w, mu, rstd, h, w_fc, z, t, a, w_proj = cache
    da, dw_proj, db_proj = nn.linear_backward(dout, (a, w_proj, True))          # y = x + a @ W_proj + b
    dz = nn.gelu_tanh_backward(da, (z, t)) if through_gelu else da             # a = gelu_tanh(z)
    dh, dw_fc, db_fc = nn.linear_backward(dz, (h, w_fc, True))                 # z = h @ W_fc + b_fc
    dln, dln_w, dln_b = nn.layernorm_backward(dh, LayerNormCache(x, ln_w, mu, rstd, True))   # h = LN(x)
    dx_branch = dln if through_ln else dh
    dx = (dout if residual else 0) + (dx_branch if branch else 0)
    return dx, dln_w, dln_b, dw_fc, db_fc, dw_proj, db_proj


def residual_path_forgotten(dout, cache):
    return _residual(dout, cache, residual=False)


def residual_branch_forgotten(dout, cache):
    return _residual(dout, cache, branch=False)


def residual_layernorm_skipped(dout, cache):
    return _residual(dout, cache, through_ln=False)


def residual_gelu_skipped(dout, cache):
    return _residual(dout, cache, through_gelu=False)


RESIDUAL = Exercise(
    name="residual", title="residual block, pre-LN: y = x + MLP(LayerNorm(x))",
    hints=("Go back through the branch, last line first: the projection (a Linear), GELU, the "
           "first Linear, then the LayerNorm: your earlier backwards, in reverse order.",
           "Each parameter's gradient comes out of the backward of the line that used it.",
           "x was used twice: once around the branch (y = x + ...), once into the LayerNorm. "
           "Where a value is used twice, its gradients add.",
           "da, dW_proj, db_proj = linear_bwd(dout);  dz = gelu_bwd(da);  dh, dW_fc, db_fc = "
           "linear_bwd(dz);  dx_b, dln_w, dln_b = layernorm_bwd(dh);  dx = dout + dx_b."),
    mistakes=(Mistake("the residual path forgotten", "y = x + branch(x): x reaches y directly as "
                      "well, which contributes dout itself to dx.", residual_path_forgotten),
              Mistake("the branch's gradient forgotten in dx", "x also enters the LayerNorm: the "
                      "gradient that comes back through the branch adds to dout.",
                      residual_branch_forgotten),
              Mistake("the LayerNorm's backward skipped", "h = LayerNorm(x): the gradient of h "
                      "goes through LayerNorm's backward before it reaches x.",
                      residual_layernorm_skipped),
              Mistake("GELU's backward skipped", "a = gelu_tanh(z): da is multiplied by GELU's "
                      "slope before it reaches z.", residual_gelu_skipped)),
    reference=reference.residual_backward,
    sources=(reference.residual_backward, nn.linear_backward, nn.gelu_tanh_backward, nn.layernorm_backward))


# -- the tied head -------------------------------------------------------------------------

def _tied(dout, cache, head=True, embedding=True, accumulate=True, pos_sum=True):
    """The right gradients, or one of their classic variants (the switches)."""
    idx, w, x = cache
    dx = dout @ w                                              # forward: logits = x @ W^T
    dw = _rows(dout).T @ _rows(x) if head else np.zeros_like(w)
    if embedding:                                              # forward: x = W[idx] + pos
        if accumulate:
            np.add.at(dw, idx.ravel(), _rows(dx))
        else:
            dw[idx.ravel()] += _rows(dx)
    dpos = dx.sum(axis=0) if pos_sum else dx.mean(axis=0)
    return None, dw, dpos


def tied_head_only(dout, cache):
    return _tied(dout, cache, embedding=False)


def tied_embedding_only(dout, cache):
    return _tied(dout, cache, head=False)


def tied_buffered_add(dout, cache):
    return _tied(dout, cache, accumulate=False)


def tied_pos_mean(dout, cache):
    return _tied(dout, cache, pos_sum=False)


TIED_HEAD = Exercise(
    name="tied_head", title="the tied head: logits = (W[idx] + pos) @ W^T",
    hints=("logits = x @ W^T is a Linear whose weight is W^T: dx = dout @ W and the head's dW "
           "is (X^T @ dY)^T = dY^T @ X, shape (V, C).",
           "x = W[idx] + pos: the embedding exercise's scatter-add gives the table's dW from dx "
           "(np.add.at for the repeated ids); pos receives dx summed over the batch.",
           "W is used twice, as the head and as the table: its two gradients add.",
           "dx = dout @ W;  dW = dY^T @ X + scatter_add(idx, dx);  dpos = dx.sum(axis=0)."),
    mistakes=(Mistake("only the head's gradient", "W is also the embedding table: the gradient "
                      "of x scatters into its rows too.", tied_head_only),
              Mistake("only the embedding's gradient", "W is also the head: logits = x @ W^T "
                      "gives W a gradient dY^T @ X of its own.", tied_embedding_only),
              Mistake("dw[ids] += rows for the table's part", "NumPy buffers fancy-index +=: a "
                      "repeated id keeps one row; np.add.at accumulates.", tied_buffered_add),
              Mistake("pos's gradient averaged over the batch", "pos was added to every sequence "
                      "of the batch: its gradient is the sum over the batch.", tied_pos_mean)),
    reference=reference.tied_head_backward,
    sources=(reference.tied_head_backward, nn.linear_backward, nn.embedding_backward))
