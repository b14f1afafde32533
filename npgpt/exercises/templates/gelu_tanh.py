"""Exercise: GELU, the tanh approximation (GPT-2's activation).

Write gelu_tanh_backward, then run `npgpt exercise check gelu_tanh`.
"""

import numpy as np

SQRT_2_OVER_PI = np.sqrt(2.0 / np.pi)
GELU_TANH_C = 0.044715


def gelu_tanh_forward(x):
    """GELU, the tanh approximation (torch's approximate="tanh").

        y = 0.5 x (1 + tanh(u)),   u = sqrt(2/pi) (x + 0.044715 x^3)

    x: any shape   ->   y: the same shape
    cache: (x, t) with t = tanh(u): the tanh is the costly part, so it is kept
    """
    t = np.tanh(SQRT_2_OVER_PI * (x + GELU_TANH_C * x ** 3))
    return 0.5 * x * (1 + t), (x, t)


def gelu_tanh_backward(dout, cache):
    """Gradient of gelu_tanh_forward: dx, the shape of x.

    dout: the gradient of the loss with respect to y.
    Derive dy/dx: y is a product of two factors of x, and the second holds tanh(u(x)).
    """
    x, t = cache
    raise NotImplementedError("write gelu_tanh_backward: return dx")


def gelu_tanh_inputs(rng):
    """x: (3, 5), spread wide enough (std 1.5) that both tails of the curve are checked."""
    return [1.5 * rng.standard_normal((3, 5))]
