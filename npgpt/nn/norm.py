"""Layer normalisation (Ba et al., 2016), as torch.nn.LayerNorm computes it."""

from __future__ import annotations

import numpy as np

from .. import kernels
from ..kernels.reference import LayerNormCache, check_layernorm_args, check_like
from .module import Module, Parameter, as_dtype
from .validate import check_array


def layernorm_forward(x, w, b=None, eps=1e-5):
    """Normalise each C-vector of x, then scale and shift.

        y = w * (x - mu) * rstd + b,   mu = mean_C(x),   rstd = 1 / sqrt(var_C(x) + eps)

    The variance is the biased one (divide by C) and eps sits inside the square root: the same
    function as torch.nn.LayerNorm. x: (..., C)   w, b: (C,) (b may be None)   ->   y: (..., C)
    cache: LayerNormCache(x, w, mu, rstd, has_bias); xhat is recomputed in the backward.
    """
    check_layernorm_args(x, w, b)
    mu = x.mean(axis=-1, keepdims=True)
    xc = x - mu
    var = np.mean(xc * xc, axis=-1, keepdims=True)
    rstd = 1.0 / np.sqrt(var + x.dtype.type(eps))
    y = xc * rstd * w
    if b is not None:
        y += b
    return y, LayerNormCache(x, w, mu, rstd, b is not None)


def layernorm_backward(dout, cache: LayerNormCache, need_dw: bool = True):
    """Gradients of layernorm_forward: (dx, dw, db); db is None without a bias, and dw, db are
    None with need_dw=False (frozen parameters: their reductions are skipped).

        forward: y = w * xhat + b       ->  dw = sum_rows(dy * xhat),  db = sum_rows(dy)
        forward: xhat = (x - mu) * rstd ->  with g = dy * w (the gradient of xhat):
            dx = rstd * (g - mean_C(g) - xhat * mean_C(g * xhat))
    The two means are the gradient flowing through mu and through rstd (both depend on every
    element of the row); they are why a random dout is needed to check this layer.
    """
    x, w, mu, rstd, has_bias = cache
    check_like("dout", dout, x.shape, x.dtype, "the shape of the LayerNorm's input")
    xhat = (x - mu) * rstd
    g = dout * w
    dx = rstd * (g - g.mean(axis=-1, keepdims=True)
                 - xhat * np.mean(g * xhat, axis=-1, keepdims=True))
    if not need_dw:
        return dx, None, None
    C = x.shape[-1]
    dw = np.sum((dout * xhat).reshape(-1, C), axis=0)
    db = np.sum(dout.reshape(-1, C), axis=0) if has_bias else None
    return dx, dw, db


class LayerNorm(Module):
    """LayerNorm over the last axis of width `n`: weight ones, bias zeros (or no bias).

    forward:
        y = w * (x - mu) * rstd + b,   mu = mean_C(x),   rstd = 1 / sqrt(var_C(x) + eps)
    backward:
        dw += sum_rows(dy * xhat),   db += sum_rows(dy),   xhat = (x - mu) * rstd
        dx = rstd * (g - mean_C(g) - xhat * mean_C(g * xhat)),   g = dy * w

    forward and backward run the backend's fused kernel where it has one (Numba: one pass per
    row), else the NumPy functions above; both give the same numbers (tests/kernels).
    """

    def __init__(self, n: int, eps: float = 1e-5, bias: bool = True, *, dtype="float32"):
        super().__init__()
        dt = as_dtype(dtype)
        self.n, self.eps = n, eps
        self.weight = Parameter(np.ones(n, dtype=dt))
        self.bias = Parameter(np.zeros(n, dtype=dt)) if bias else None
        self._cache = None

    def forward(self, x):
        check_array("x", x, dtype=self.weight.dtype, last_dim=self.n)
        b = self.bias.data if self.bias is not None else None
        forward = kernels.fused("layernorm_forward") or layernorm_forward
        y, self._cache = forward(x, self.weight.data, b, self.eps)
        return y

    def backward(self, dout):
        trainable = self.weight.requires_grad or (self.bias is not None and self.bias.requires_grad)
        backward = kernels.fused("layernorm_backward") or layernorm_backward
        dx, dw, db = backward(dout, self._cache, need_dw=trainable)
        if self.weight.requires_grad:
            self.weight.grad += dw
        if db is not None and self.bias.requires_grad:
            self.bias.grad += db
        return dx

    def extra_repr(self):
        return f"{self.n}, eps={self.eps}, bias={self.bias is not None}"
