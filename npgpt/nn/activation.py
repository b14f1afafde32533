"""Element-wise non-linearities (GELU in both forms, ReLU) and the softmax."""

from __future__ import annotations

import math

import numpy as np

from .. import kernels
from ..kernels.reference import check_float_array, check_like
from .module import Module

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
GELU_TANH_C = 0.044715


def gelu_tanh_forward(x):
    """GELU, the tanh approximation (GPT-2's; torch's approximate="tanh").

        y = 0.5 x (1 + tanh(u)),   u = sqrt(2/pi) (x + 0.044715 x^3)

    cache: (x, tanh(u)): the tanh is the costly part, so it is kept.
    """
    check_float_array("x", x)
    c = x.dtype.type
    t = np.tanh(c(SQRT_2_OVER_PI) * (x + c(GELU_TANH_C) * x * x * x))
    y = c(0.5) * x * (c(1) + t)
    return y, (x, t)


def gelu_tanh_backward(dout, cache):
    """Gradient of gelu_tanh_forward.

        dy/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2),   t = tanh(u)
    """
    x, t = cache
    check_like("dout", dout, x.shape, x.dtype, "the shape of the GELU's input")
    c = x.dtype.type
    du = c(SQRT_2_OVER_PI) * (c(1) + c(3 * GELU_TANH_C) * x * x)
    return dout * (c(0.5) * (c(1) + t) + c(0.5) * x * (c(1) - t * t) * du)


def gelu_forward(x):
    """GELU, the exact form (Hendrycks & Gimpel; torch's default).

        y = x Phi(x),   Phi(x) = 0.5 (1 + erf(x / sqrt(2)))   (the standard normal CDF)

    cache: (x, Phi(x)).
    """
    c = x.dtype.type
    phi_cdf = c(0.5) * (c(1) + kernels.get("erf")(x * c(1 / math.sqrt(2.0))))
    return x * phi_cdf, (x, phi_cdf)


def gelu_backward(dout, cache):
    """Gradient of gelu_forward.

        dy/dx = Phi(x) + x phi(x),   phi(x) = exp(-x^2 / 2) / sqrt(2 pi)   (the normal density)
    """
    x, phi_cdf = cache
    c = x.dtype.type
    pdf = np.exp(c(-0.5) * x * x) * c(1 / math.sqrt(2 * math.pi))
    return dout * (phi_cdf + x * pdf)


def relu_forward(x):
    """y = max(x, 0). cache: the mask x > 0 (a bool per element)."""
    mask = x > 0
    return x * mask, mask


def relu_backward(dout, cache):
    """forward: y = max(x, 0)  ->  dx = dy where x > 0, else 0 (the kink at 0 gets 0, as torch)."""
    return dout * cache


def softmax_forward(x, axis=-1):
    """Numerically stable softmax: y = exp(x - max(x)) / sum(exp(x - max(x))) along `axis`.

    Subtracting the max changes nothing mathematically and keeps exp from overflowing.
    cache: (y, axis).
    """
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    y = e / e.sum(axis=axis, keepdims=True)
    return y, (y, axis)


def softmax_backward(dout, cache):
    """Gradient of softmax_forward: dy_i/dx_j = y_i (delta_ij - y_j), so

        dx = y * (dy - sum(dy * y))       (the sum along the softmax axis)
    """
    y, axis = cache
    return y * (dout - np.sum(dout * y, axis=axis, keepdims=True))


ACTIVATIONS = {
    "gelu_tanh": (gelu_tanh_forward, gelu_tanh_backward),
    "gelu": (gelu_forward, gelu_backward),
    "relu": (relu_forward, relu_backward),
}


def activation_functions(name: str):
    """(forward, backward) for "gelu_tanh" | "gelu" | "relu": the NumPy functions above."""
    if name not in ACTIVATIONS:
        raise ValueError(f"activation={name!r} is unknown: expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class Activation(Module):
    """An element-wise non-linearity by name ("gelu_tanh" | "gelu" | "relu"); no parameters.

    forward (name="gelu_tanh"):
        y = 0.5 x (1 + tanh(u)),   u = sqrt(2/pi) (x + 0.044715 x^3)
    backward (name="gelu_tanh"):
        dx = dy * (0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)),   t = tanh(u)
    forward (name="gelu"):
        y = x Phi(x),   Phi(x) = 0.5 (1 + erf(x / sqrt(2)))   (the standard normal CDF)
    backward (name="gelu"):
        dx = dy * (Phi(x) + x phi(x)),   phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
    forward (name="relu"):
        y = max(x, 0)
    backward (name="relu"):
        dx = dy where x > 0, else 0

    forward and backward run the backend's fused kernel for the name where it has one (Numba:
    "gelu_tanh_forward", one pass with a vectorised tanh), else the NumPy functions above.
    """

    def __init__(self, name: str):
        super().__init__()
        self._forward, self._backward = activation_functions(name)
        self.name = name
        self._cache = None

    def forward(self, x):
        forward = kernels.fused(f"{self.name}_forward") or self._forward
        y, self._cache = forward(x)
        return y

    def backward(self, dout):
        backward = kernels.fused(f"{self.name}_backward") or self._backward
        return backward(dout, self._cache)

    def extra_repr(self):
        return repr(self.name)


class GELU(Activation):
    """GELU with torch's spelling: GELU() is the exact erf form, GELU(approximate="tanh") the
    tanh approximation (GPT-2's)."""

    def __init__(self, approximate: str = "none"):
        if approximate not in ("none", "tanh"):
            raise ValueError(f"approximate={approximate!r}: expected 'none' or 'tanh'")
        super().__init__("gelu_tanh" if approximate == "tanh" else "gelu")
        self.approximate = approximate

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class ReLU(Activation):
    """ReLU: y = max(x, 0)."""

    def __init__(self):
        super().__init__("relu")

    def extra_repr(self):
        return ""


class Softmax(Module):
    """Softmax along `axis`; no parameters.

    forward:
        y = exp(x - max(x)) / sum(exp(x - max(x)))       along axis
    backward:
        dx = y * (dy - sum(dy * y))                       the sum along axis
    """

    def __init__(self, axis: int = -1):
        super().__init__()
        self.axis = axis
        self._cache = None

    def forward(self, x):
        y, self._cache = softmax_forward(x, self.axis)
        return y

    def backward(self, dout):
        return softmax_backward(dout, self._cache)
