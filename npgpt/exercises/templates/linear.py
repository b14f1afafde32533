"""Exercise: Linear, the affine map behind every projection of a Transformer.

Write linear_backward, then run `npgpt exercise check linear`. The forward and the inputs are
given; this file is yours (NumPy only), and `npgpt exercise hint linear` helps step by step.
"""

import numpy as np


def linear_forward(x, w, b):
    """An affine map of the last axis.

        y = x @ W + b

    x: (..., in)   W: (in, out)   b: (out,) or None   ->   y: (..., out)
    cache: (x, w, has_bias)
    """
    y = x @ w
    if b is not None:
        y = y + b
    return y, (x, w, b is not None)


def linear_backward(dout, cache):
    """Gradients of linear_forward: (dx, dw, db), each the shape of its input (db is None
    without a bias).

    dout: (..., out), the gradient of the loss with respect to y.
    Derive dx (..., in), dW (in, out) and db (out,). Every row of x (each position of each
    sequence) went through the same W and b.
    """
    x, w, has_bias = cache
    raise NotImplementedError("write linear_backward: return dx, dw, db")


def linear_inputs(rng):
    """x: (2, 3, 4), a batch of sequences; W: (4, 4), square, so that a forgotten transpose
    computes something wrong instead of failing on shapes; b: (4,)."""
    return [rng.standard_normal((2, 3, 4)), rng.standard_normal((4, 4)), rng.standard_normal(4)]
