"""Linear: y = x @ W + b, with W stored (in, out) as GPT-2's Conv1D does."""

from __future__ import annotations

import numpy as np

from .. import kernels
from .module import Module, Parameter, as_dtype
from .validate import check_array


def linear_forward(x, w, b=None):
    """An affine map of the last axis.

        y = x @ W + b

    x: (..., in)   W: (in, out)   b: (out,) or None   ->   y: (..., out)
    cache: (x, w, has_bias)
    """
    y = kernels.get("matmul")(x, w)
    if b is not None:
        y += b
    return y, (x, w, b is not None)


def linear_backward(dout, cache, need_dx=True, need_dw=True, dw_out=None):
    """Gradients of linear_forward: (dx, dw, db); db is None without a bias.

        forward: y = x @ W + b     (rows of x flattened to X: (N, in), dY: (N, out))
        dx = dY @ W^T              (..., in)
        dW = X^T @ dY              (in, out): a sum over every row
        db = sum_rows(dY)          (out,)
    need_dx / need_dw=False skip work whose result nobody uses (the first layer's input, a
    frozen weight); the skipped gradient is returned as None.
    dw_out: an (in, out) array to add dW into, returned as dw (the Module passes its .grad):
    one product dw_out += X^T @ dY, with no dW-sized temporary (kernels' matmul_add).
    """
    x, w, has_bias = cache
    matmul = kernels.get("matmul")
    dx = matmul(dout, w.T) if need_dx else None
    dout2 = dout.reshape(-1, dout.shape[-1])              # (..., out) -> (N, out)
    if need_dw:
        x2 = x.reshape(-1, x.shape[-1])                   # (..., in) -> (N, in)
        if dw_out is None:
            dw = matmul(x2.T, dout2)
        else:
            dw = kernels.get("matmul_add")(dw_out, x2.T, dout2)   # dw_out += X^T @ dY
    else:
        dw = None
    db = dout2.sum(axis=0) if has_bias else None
    return dx, dw, db


class Linear(Module):
    """An affine map of the last axis: weight (in_features, out_features) drawn from N(0, std^2),
    bias 0 (see linear_forward and linear_backward).

    forward:
        y = x @ W + b                               x: (..., in)   W: (in, out)   b: (out,)
    backward:
        dx = dY @ W^T,   dW += X^T @ dY,   db += sum_rows(dY)      X, dY: the rows, flattened
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 dtype="float32", rng: np.random.Generator | None = None, std: float = 0.02):
        super().__init__()
        dt = as_dtype(dtype)
        rng = rng if rng is not None else np.random.default_rng(0)
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter((rng.standard_normal((in_features, out_features)) * std).astype(dt))
        self.bias = Parameter(np.zeros(out_features, dtype=dt)) if bias else None
        self._cache = None

    def forward(self, x):
        check_array("x", x, dtype=self.weight.dtype, last_dim=self.in_features)
        b = self.bias.data if self.bias is not None else None
        y, self._cache = linear_forward(x, self.weight.data, b)
        return y

    def backward(self, dout, need_dx=True):
        dx, _, db = linear_backward(dout, self._cache, need_dx=need_dx,
                                    need_dw=self.weight.requires_grad,
                                    dw_out=self.weight.grad)        # adds dW into .grad
        if db is not None and self.bias.requires_grad:
            self.bias.grad += db
        return dx

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}"
