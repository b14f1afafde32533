"""Gradient checking: the student's tool, and the oracle for every backward in npgpt.

The numerical gradient of a scalar L(x) by central differences:

    dL/dx_i ~= (L(x + h e_i) - L(x - h e_i)) / (2 h)           error O(h^2)

A layer's output is not a scalar, so we check the scalar L = sum(f(x) * dout) for a *random*
upstream gradient dout: its gradient is exactly what the layer's backward(dout) must return.
Never use dout = ones: for a normalisation layer the terms that depend on dout cancel against
the ones that do not, and a wrong backward can pass.

Everything runs in float64: with h = 1e-5 the truncation error is ~h^2 = 1e-10 and the rounding
error ~eps/h = 1e-11, so a correct backward agrees to ~1e-9 or better.

    rel_error(a, b) = max|a - b| / max(max(|a| + |b|), tiny)

(a norm-wise relative error: one number per tensor that does not blow up where an element is
close to zero.)
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from .nn.module import Module

TINY = 1e-30

# How close a float64 backward must be to the numerical gradient to pass, and why that size.
TOLERANCES = {
    # smooth layers: truncation O(h^2) ~ 1e-10 plus rounding ~ 1e-11 / |grad|: 1e-7 leaves room
    "smooth": 1e-7,
    # ReLU (and anything with a kink): a difference that straddles x = 0 is wrong by O(1) at that
    # coordinate; inputs are drawn away from 0, so the same bound holds, but say it separately
    "kinked": 1e-7,
}


def rel_error(a, b) -> float:
    """max|a - b| / max(max(|a| + |b|), tiny): 0 for equal arrays, 1 for unrelated ones."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"rel_error: a has shape {a.shape} and b {b.shape}: expected one shape")
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(a) + np.abs(b))), TINY))


def numerical_gradient(f: Callable[[], np.ndarray], x: np.ndarray, dout: np.ndarray,
                       h: float = 1e-5, index: Sequence[tuple] | None = None) -> np.ndarray:
    """Central differences of sum(f() * dout) with respect to x, which f reads and this perturbs
    in place (and restores).

    f: a function of no arguments that recomputes the output from the current x.
    index: if given, only these coordinates are computed (the rest of the result is 0); for large
    tensors, check a sample.
    """
    if x.dtype != np.float64:
        raise TypeError(f"numerical_gradient: x has dtype {x.dtype}: expected float64 "
                        f"(float32 differences are dominated by rounding)")
    grad = np.zeros_like(x)
    coords = np.ndindex(x.shape) if index is None else index
    for i in coords:
        old = x[i]
        x[i] = old + h
        plus = np.sum(f() * dout)
        x[i] = old - h
        minus = np.sum(f() * dout)
        x[i] = old
        grad[i] = (plus - minus) / (2 * h)
    return grad


def _upstream_rng(seed: int) -> np.random.Generator:
    """The Generator of the random upstream gradient: a stream of its own, so that a test whose
    inputs come from default_rng(seed) does not draw dout equal to its x (for LayerNorm, that
    dout is nearly orthogonal to the gradient, which then vanishes and hides errors)."""
    return np.random.default_rng([seed, 0x67726164])


def sample_index(shape, n: int | None, rng: np.random.Generator):
    """All coordinates of `shape`, or n of them drawn without replacement."""
    size = int(np.prod(shape))
    if n is None or n >= size:
        return None
    flat = rng.choice(size, size=n, replace=False)
    return [np.unravel_index(i, shape) for i in flat]


def _compare(analytic, numeric, index):
    if index is None:
        return rel_error(analytic, numeric)
    pick = tuple(np.array(ix) for ix in zip(*index))
    return rel_error(analytic[pick], numeric[pick])


def check_layer(forward: Callable, backward: Callable, inputs: Sequence, seed: int = 0,
                samples: int | None = None, h: float = 1e-5) -> dict[str, float]:
    """Check a pure forward/backward pair: {"d0": rel_error, "d1": ...} per float input.

    forward(*inputs) -> (out, cache);  backward(dout, cache) -> one gradient per input
    (a tuple, or a single array for a one-input layer). Inputs that are not float arrays
    (token ids, masks) and gradients returned as None are skipped.
    """
    rng = _upstream_rng(seed)
    inputs = list(inputs)
    out, cache = forward(*inputs)
    dout = rng.standard_normal(np.shape(out))
    grads = backward(dout, cache)
    if not isinstance(grads, tuple):
        grads = (grads,)
    errors = {}
    for i, (x, g) in enumerate(zip(inputs, grads)):
        if g is None or not isinstance(x, np.ndarray) or x.dtype != np.float64:
            continue
        index = sample_index(x.shape, samples, rng)
        num = numerical_gradient(lambda: forward(*inputs)[0], x, dout, h=h, index=index)
        errors[f"d{i}"] = _compare(g, num, index)
    return errors


def check_module(module: Module, inputs: Sequence, seed: int = 0, samples: int | None = None,
                 h: float = 1e-5, input_names: Sequence[str] | None = None) -> dict[str, float]:
    """Check a Module's input gradients and every parameter gradient in one call.

    The module must be float64 and deterministic (dropout 0, or in eval mode). Its backward(dout)
    returns the gradient of its float inputs (a single array, or a tuple in input order).
    Returns {input name or "input{i}": err, parameter name: err}.
    """
    rng = _upstream_rng(seed)
    inputs = list(inputs)
    out = module.forward(*inputs)
    dout = rng.standard_normal(np.shape(out))
    module.zero_grad()
    grads = module.backward(dout)
    if not isinstance(grads, tuple):
        grads = (grads,)
    float_inputs = [i for i, x in enumerate(inputs) if isinstance(x, np.ndarray) and x.dtype == np.float64]
    names = input_names or [f"input{i}" for i in range(len(inputs))]
    errors = {}
    f = lambda: module.forward(*inputs)    # noqa: E731 -- reads the perturbed arrays
    for i, g in zip(float_inputs, grads):
        if g is None:
            continue
        index = sample_index(inputs[i].shape, samples, rng)
        errors[names[i]] = _compare(g, numerical_gradient(f, inputs[i], dout, h=h, index=index), index)
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        if p.dtype != np.float64:
            raise TypeError(f"check_module: parameter {name} has dtype {p.dtype}: expected float64")
        index = sample_index(p.shape, samples, rng)
        errors[name] = _compare(p.grad, numerical_gradient(f, p.data, dout, h=h, index=index), index)
    return errors
