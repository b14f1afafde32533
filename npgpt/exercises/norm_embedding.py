"""The exercises of the table and the normalisation: LayerNorm and the token embedding.

Each mistake is a wrong backward as people write it, on the template's cache.
"""

from __future__ import annotations

import numpy as np

from .. import nn
from .spec import Exercise, Mistake


# -- LayerNorm -----------------------------------------------------------------------------

def _layernorm(dout, cache, times_w=True, mean_term=True, xhat_term=True, dw_xhat=True):
    """The right gradients, or one of their classic variants (the switches)."""
    x, w, mu, rstd, has_bias = cache
    C = x.shape[-1]
    xhat = (x - mu) * rstd
    g = dout * w if times_w else dout
    dx = g
    if mean_term:
        dx = dx - g.mean(axis=-1, keepdims=True)
    if xhat_term:
        dx = dx - xhat * np.mean(g * xhat, axis=-1, keepdims=True)
    dw = np.sum((dout * xhat if dw_xhat else dout).reshape(-1, C), axis=0)
    return rstd * dx, dw, np.sum(dout.reshape(-1, C), axis=0)


def layernorm_mean_term_dropped(dout, cache):
    return _layernorm(dout, cache, mean_term=False)


def layernorm_variance_term_dropped(dout, cache):
    return _layernorm(dout, cache, xhat_term=False)


def layernorm_dout_not_times_w(dout, cache):
    return _layernorm(dout, cache, times_w=False)


def layernorm_dw_without_xhat(dout, cache):
    return _layernorm(dout, cache, dw_xhat=False)


LAYERNORM = Exercise(
    name="layernorm", title="LayerNorm: y = w * (x - mu) / sqrt(var + eps) + b",
    hints=("dw and db first: y = w * xhat + b acts on every row, so dw = sum over rows of "
           "dout * xhat and db = sum over rows of dout.",
           "Let g = dout * w, the gradient of xhat. Now xhat = (x - mu) * rstd, and both mu and "
           "rstd depend on every x of the row: three paths from x_j to xhat_i.",
           "d mu / dx_j = 1/C;   d rstd / dx_j = -rstd^3 (x_j - mu) / C = -rstd^2 xhat_j / C. "
           "Add the three paths and simplify with xhat.",
           "dx = rstd * (g - mean_C(g) - xhat * mean_C(g * xhat)),   g = dout * w."),
    mistakes=(Mistake("the mean term dropped", "mu depends on every element of the row: its path "
                      "gives the -mean_C(g) term.", layernorm_mean_term_dropped),
              Mistake("the variance term dropped", "rstd depends on every element of the row "
                      "too: its path gives the -xhat * mean_C(g * xhat) term.",
                      layernorm_variance_term_dropped),
              Mistake("dout instead of dout * w", "y = w * xhat + b: the gradient that reaches "
                      "xhat is dout * w.", layernorm_dout_not_times_w),
              Mistake("dw without xhat", "w multiplies xhat: dw = sum over rows of dout * xhat "
                      "(db is the one without).", layernorm_dw_without_xhat)),
    reference=nn.layernorm_backward, sources=(nn.layernorm_forward, nn.layernorm_backward))


# -- embedding -----------------------------------------------------------------------------

def embedding_assignment(dout, cache):
    idx, V = cache
    C = dout.shape[-1]
    dw = np.zeros((V, C))
    dw[idx.ravel()] = dout.reshape(-1, C)
    return dw


def embedding_buffered_add(dout, cache):
    idx, V = cache
    C = dout.shape[-1]
    dw = np.zeros((V, C))
    dw[idx.ravel()] += dout.reshape(-1, C)
    return dw


def embedding_first_sequence_only(dout, cache):
    idx, V = cache
    dw = np.zeros((V, dout.shape[-1]))
    np.add.at(dw, idx[0], dout[0])
    return dw


def embedding_positions_not_ids(dout, cache):
    idx, V = cache
    C = dout.shape[-1]
    dw = np.zeros((V, C))
    np.add.at(dw, np.arange(idx.size), dout.reshape(-1, C))
    return dw


EMBEDDING = Exercise(
    name="embedding", title="embedding: y[b, t] = W[idx[b, t]] (repeated ids)",
    hints=("y[b, t] is a copy of row idx[b, t] of W: that row receives dout[b, t]; rows never "
           "looked up receive 0.",
           "An id that appears twice contributed twice: its row receives the sum of both.",
           "In NumPy, dw[ids] += rows is buffered (a repeated id keeps one of its rows): use "
           "np.add.at(dw, ids, rows), which accumulates.",
           "dW = zeros((V, C)); np.add.at(dW, idx.ravel(), dout.reshape(-1, C))."),
    mistakes=(Mistake("assignment instead of accumulation", "a repeated id must receive the sum of "
                      "its gradients; dw[ids] = rows keeps only the last.", embedding_assignment),
              Mistake("dw[ids] += rows, which NumPy buffers", "fancy-index += does not accumulate "
                      "repeated indices; np.add.at does.", embedding_buffered_add),
              Mistake("only the first sequence of the batch", "every (b, t) looked up a row: "
                      "flatten idx and dout over the batch too.", embedding_first_sequence_only),
              Mistake("scattered by position, not by id", "dout[b, t] goes to row idx[b, t] of W, "
                      "the token's id, not to row t.", embedding_positions_not_ids)),
    reference=nn.embedding_backward, sources=(nn.embedding_forward, nn.embedding_backward))
