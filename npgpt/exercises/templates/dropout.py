"""Exercise: dropout, inverted (scaled at training time, the identity at eval).

Write dropout_backward, then run `npgpt exercise check dropout`.
"""

import numpy as np


def dropout_forward(x, p, rng, train=True):
    """Zero each element with probability p and scale the survivors by 1 / (1 - p).

        y = x * keep / (1 - p),   keep ~ Bernoulli(1 - p), drawn from rng

    so E[y] = x and nothing needs rescaling at eval time. With train=False or p == 0 it is the
    identity. x: any shape   p: a probability in [0, 1)   rng: np.random.Generator
    cache: the scaled mask keep / (1 - p) (the shape of x), or None for the identity
    """
    if not train or p == 0.0:
        return x, None
    mask = (rng.random(x.shape) >= p).astype(x.dtype) / (1.0 - p)
    return x * mask, mask


def dropout_backward(dout, cache):
    """Gradient of dropout_forward with respect to x: dx, the shape of x.

    dout: the gradient of the loss with respect to y. Which elements of x reached y, and by
    what factor? (p, rng and train have no gradient.)
    """
    mask = cache
    raise NotImplementedError("write dropout_backward: return dx")


def dropout_inputs(rng):
    """x: (4, 5); p = 0.3; a Generator (the checker resets it before every call, so every
    forward draws the same mask and the function can be differentiated)."""
    return [rng.standard_normal((4, 5)), 0.3, np.random.default_rng(int(rng.integers(1 << 30))), True]
