"""Exercise: ReLU, the simplest non-linearity (the encoder-decoder's MLPs use it).

Write relu_backward, then run `npgpt exercise check relu`.
"""

import numpy as np


def relu_forward(x):
    """y = max(x, 0), element by element.

    x: any shape   ->   y: the same shape
    cache: the mask x > 0 (a bool per element)
    """
    mask = x > 0
    return x * mask, mask


def relu_backward(dout, cache):
    """Gradient of relu_forward: dx, the shape of x.

    dout: the gradient of the loss with respect to y (the shape of x).
    Derive dy/dx for x > 0 and for x < 0 (at x = 0 take 0, as PyTorch does).
    """
    mask = cache
    raise NotImplementedError("write relu_backward: return dx")


def relu_inputs(rng):
    """x: (3, 5), every value at least 0.1 away from the kink at 0 (a central difference that
    straddles 0 measures neither slope)."""
    v = rng.standard_normal((3, 5))
    return [np.sign(v) * (0.1 + np.abs(v))]
