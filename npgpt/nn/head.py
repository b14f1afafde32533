"""The tied output layer: logits read off the embedding table itself (weight tying).

Press & Wolf (2017): the matrix that turns a token into a vector can turn a vector back into a
score per token. GPT-2 does it (no bias), and the Transformer of Vaswani et al. does it when its
vocabulary is shared (with a bias of its own).

    logits = x @ E^T + b          x: (..., C)   E: (V, C), the embedding's table   b: (V,) or none

E is ONE Parameter used twice, as the lookup table and as this layer's weight, so its gradient
is the sum of both uses: the embedding scatters its rows, this layer adds a dense (V, C) matrix.
"""

from __future__ import annotations

import numpy as np

from .. import kernels
from .embedding import Embedding
from .module import Module, Parameter
from .validate import check_array


def tied_head_forward(x, e, b=None):
    """Scores of every token of the table e for each vector of x.

        y = x @ E^T + b

    x: (..., C)   E: (V, C)   b: (V,) or None   ->   y: (..., V)
    cache: (x, e, has_bias)
    """
    y = kernels.get("matmul")(x, e.T)
    if b is not None:
        y += b
    return y, (x, e, b is not None)


def tied_head_backward(dout, cache, need_dx=True, need_dw=True, dw_out=None):
    """Gradients of tied_head_forward: (dx, dE, db); db is None without a bias.

        forward: y = x @ E^T + b   (rows flattened: X: (N, C), dY: (N, V))
        dx = dY @ E                (..., C)
        dE = dY^T @ X              (V, C): the table's layout, so it adds to the lookup's gradient
        db = sum_rows(dY)          (V,)
    need_dx / need_dw=False skip work whose result nobody uses; the skipped gradient is None.
    dw_out: a (V, C) array to add dE into, returned as dE (the Module passes the table's .grad):
    one product dw_out += dY^T @ X, with no (V, C) temporary (GPT-2: 154 MB).
    """
    x, e, has_bias = cache
    dout2 = dout.reshape(-1, dout.shape[-1])                 # (..., V) -> (N, V)
    dx = kernels.get("matmul")(dout, e) if need_dx else None
    dw = None
    if need_dw:
        x2 = x.reshape(-1, x.shape[-1])                      # (..., C) -> (N, C)
        if dw_out is None:
            dw = kernels.get("matmul")(dout2.T, x2)
        else:
            dw = kernels.get("matmul_add")(dw_out, dout2.T, x2)     # dw_out += dY^T @ X
    db = dout2.sum(axis=0) if has_bias else None
    return dx, dw, db


class TiedHead(Module):
    """logits = x @ E^T (+ b), E the `embedding`'s table (see tied_head_forward).

    forward:
        y = x @ E^T + b                             x: (..., C)   E: (V, C)   b: (V,) or none
    backward:
        dx = dY @ E,   dE += dY^T @ X,   db += sum_rows(dY)       X, dY: the rows, flattened

    `weight` is the embedding's Parameter itself: a model lists it once, under the embedding's
    name (wte.weight, src_embed.weight), and its .grad receives both uses. bias=True adds a
    bias of the head's own, zeros at the start.
    """

    def __init__(self, embedding: Embedding, bias: bool = False):
        super().__init__()
        self.weight = embedding.weight
        V = embedding.num_embeddings
        self.bias = Parameter(np.zeros(V, dtype=self.weight.dtype)) if bias else None
        self._cache = None

    def forward(self, x):
        check_array("x", x, dtype=self.weight.dtype, last_dim=self.weight.shape[1])
        b = self.bias.data if self.bias is not None else None
        y, self._cache = tied_head_forward(x, self.weight.data, b)
        return y

    def backward(self, dout, need_dx=True):
        dx, _, db = tied_head_backward(dout, self._cache, need_dx=need_dx,
                                       need_dw=self.weight.requires_grad,
                                       dw_out=self.weight.grad)     # adds dE into the table's .grad
        if db is not None and self.bias.requires_grad:
            self.bias.grad += db
        return dx

    def extra_repr(self):
        V, C = self.weight.shape
        return f"{C}, {V}, tied to the embedding, bias={self.bias is not None}"
