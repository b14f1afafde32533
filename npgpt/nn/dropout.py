"""Dropout (Srivastava et al., 2014), inverted: scaled at training time, the identity at eval."""

from __future__ import annotations

import numpy as np

from .module import Module


def dropout_forward(x, p: float, rng: np.random.Generator | None, train: bool = True):
    """Zero each element with probability p and scale the survivors by 1 / (1 - p).

        y = x * keep / (1 - p),   keep ~ Bernoulli(1 - p), drawn from rng

    so E[y] = x and nothing needs rescaling at eval time. With train=False or p == 0 it is the
    identity (and draws nothing from rng). cache: the scaled mask keep / (1 - p), or None.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout: p={p!r}, expected a probability in [0, 1)")
    if not train or p == 0.0:
        return x, None
    if rng is None:
        raise ValueError("dropout: rng is None: expected a np.random.Generator when training with p > 0")
    scale = x.dtype.type(1.0 / (1.0 - p))
    mask = (rng.random(x.shape) >= p).astype(x.dtype) * scale
    return x * mask, mask


def dropout_backward(dout, cache):
    """forward: y = x * mask  ->  dx = dy * mask (the same elements dropped, the same scale)."""
    return dout if cache is None else dout * cache


class Dropout(Module):
    """Dropout with its own Generator (seeded by the model, so runs repeat bit for bit).

    forward:
        y = x * keep / (1 - p),   keep ~ Bernoulli(1 - p)       the identity at eval or p = 0
    backward:
        dx = dy * keep / (1 - p)                                the same mask
    """

    def __init__(self, p: float = 0.0, rng: np.random.Generator | None = None):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout: p={p!r}, expected a probability in [0, 1)")
        self.p = p
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self._cache = None

    def forward(self, x):
        y, self._cache = dropout_forward(x, self.p, self.rng, self.training)
        return y

    def backward(self, dout):
        return dropout_backward(dout, self._cache)

    def extra_repr(self):
        return f"p={self.p}"
