"""Checking an optimizer update: there is no gradient to differentiate, so the student's update
and the reference one run the same steps from the same start, and their states are compared.
"""

from __future__ import annotations

import numpy as np

from .. import gradcheck
from .checker import Result, Tensor
from .userfile import Unusable, call, line_of

STATE = ("p", "m", "v")
TOLERANCE = 1e-10       # the same arithmetic in another order: ~1e-15 apart


def run_steps(update, inputs: dict, what: str = "", path=None) -> dict:
    """{p, m, v} after len(inputs["grads"]) steps of update(p, g, m, v, decay, lr, beta1, beta2,
    eps, weight_decay, step), from p = inputs["p"] and m = v = 0; steps count from 1."""
    p = np.array(inputs["p"], dtype=np.float64)
    m, v = np.zeros_like(p), np.zeros_like(p)
    hyper = [inputs[k] for k in ("lr", "beta1", "beta2", "eps", "weight_decay")]
    for step, g in enumerate(inputs["grads"], start=1):
        args = (p, np.array(g, dtype=np.float64), m, v, np.array(inputs["decay"]), *hyper, step)
        returned = update(*args) if path is None else call(update, what, path, *args, backward=True)
        if returned is not None:
            raise Unusable(f"{what} returned {type(returned).__name__}: expected None, with p, m "
                           f"and v updated in place (p -= ..., m[...] = ...)")
    return dict(p=p, m=m, v=v)


def check_update(name: str, update, inputs_fn, reference, path, seed: int = 0) -> Result:
    """The student's update against the reference, state by state (p, m, v after the steps)."""
    inputs = call(inputs_fn, f"{name}_inputs", path, np.random.default_rng(seed))
    missing = {"p", "grads", "decay", "lr", "beta1", "beta2", "eps", "weight_decay"} - set(inputs)
    if missing:
        raise Unusable(f"{name}_inputs returned no {', '.join(sorted(missing))}: expected a dict with them")
    what = f"{update.__name__} (line {line_of(update)})"
    theirs = run_steps(update, inputs, what, path)
    ours = run_steps(reference, inputs)
    result = Result(name, inputs=[inputs])
    result.tensors = [_compare_state(name, key, theirs[key], ours[key]) for key in STATE]
    return result


def _compare_state(name: str, key: str, theirs, ours) -> Tensor:
    row = dict(layer=name, tensor=key, shape=ours.shape, tolerance=TOLERANCE)
    if theirs.shape != ours.shape or not np.all(np.isfinite(theirs)):
        row.update(error=None, element_error=None, passed=False)
        return Tensor(key, key, theirs, ours, row, f"{key} has shape {theirs.shape} or holds NaN: "
                                                    f"expected finite values of shape {ours.shape}",
                      label=key, against="reference")
    row.update(gradcheck.compare(theirs, ours, TOLERANCE))
    return Tensor(key, key, theirs, ours, row, label=key, against="reference")


def update_outputs(mistakes, inputs: dict):
    """(mistake, {p, m, v}) for each mistake's update run the same steps."""
    for mistake in mistakes:
        try:
            yield mistake, run_steps(mistake.backward, inputs)
        except Exception:
            continue
