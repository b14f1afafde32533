"""Exercise: LayerNorm, the normalisation in front of every sublayer of GPT-2.

Write layernorm_backward, then run `npgpt exercise check layernorm`.
"""

from typing import NamedTuple

import numpy as np


class LayerNormCache(NamedTuple):
    x: np.ndarray
    w: np.ndarray
    mu: np.ndarray      # (..., 1) mean of each row
    rstd: np.ndarray    # (..., 1) 1 / sqrt(var + eps)
    has_bias: bool


def layernorm_forward(x, w, b=None, eps=1e-5):
    """Normalise each C-vector of x, then scale and shift.

        y = w * (x - mu) * rstd + b,   mu = mean_C(x),   rstd = 1 / sqrt(var_C(x) + eps)

    The variance is the biased one (divide by C) and eps sits inside the square root: the same
    function as torch.nn.LayerNorm. x: (..., C)   w, b: (C,) (b may be None)   ->   y: (..., C)
    cache: LayerNormCache(x, w, mu, rstd, has_bias); xhat = (x - mu) * rstd is cheap to recompute.
    """
    mu = x.mean(axis=-1, keepdims=True)
    xc = x - mu
    var = np.mean(xc * xc, axis=-1, keepdims=True)
    rstd = 1.0 / np.sqrt(var + eps)
    y = xc * rstd * w
    if b is not None:
        y = y + b
    return y, LayerNormCache(x, w, mu, rstd, b is not None)


def layernorm_backward(dout, cache):
    """Gradients of layernorm_forward: (dx, dw, db), each the shape of its input (db is None
    without a bias).

    dout: (..., C). dw and db are the easy part (w and b act on every row). For dx: mu and rstd
    depend on every element of the row, so the gradient of xhat reaches x by three paths:
    directly, through mu, and through rstd.
    """
    x, w, mu, rstd, has_bias = cache
    raise NotImplementedError("write layernorm_backward: return dx, dw, db")


def layernorm_inputs(rng):
    """x: (2, 3, 5); w and b random, not ones and zeros (with w = 1 a forgotten `* w` passes)."""
    return [rng.standard_normal((2, 3, 5)), 1.0 + rng.standard_normal(5), rng.standard_normal(5)]
