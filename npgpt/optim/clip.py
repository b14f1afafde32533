"""Gradient clipping by the global norm, as torch.nn.utils.clip_grad_norm_, and its two halves.

    clip_grad_norm(params, max_norm)   torch's: scales p.grad in place, returns the norm
    grad_norm(params)                  the norm alone; nothing changes
    clip_coef(norm, max_norm)          the factor clip_grad_norm would scale by

A training loop that clips (the Trainer) can fold the scaling into the update:

    norm = grad_norm(opt)
    opt.step(grad_scale=clip_coef(norm, max_norm), zero_grad=True)

which updates exactly as `clip_grad_norm(opt, max_norm); opt.step(); opt.zero_grad()` and walks
the gradients twice instead of four times. What p.grad holds afterwards differs, and says so: the
unclipped gradient (step(grad_scale=...)) or zeros (zero_grad=True), never a half-scaled value.
"""

from __future__ import annotations

import math

import numpy as np

from .. import kernels
from .flat import BLOCK, chunks
from .groups import check_number, unique_params
from .optimizer import Optimizer


def sum_squares(a: np.ndarray) -> float:
    """sum(a^2), each element squared and added in float64, chunk by chunk (no BLAS: its threads
    stall when called many times on small vectors of a busy machine). A backend may supply a
    fused twin (kernels.fused("sum_squares")): one parallel pass, without the float64 scratch."""
    a = a.reshape(-1)
    total, scratch = 0.0, np.empty(min(a.size, BLOCK), dtype=np.float64)
    for s, e in chunks(a.size):
        t = scratch[:e - s]
        np.multiply(a[s:e], a[s:e], out=t, dtype=np.float64)
        total += float(t.sum())
    return total


def grad_norm(params) -> float:
    """The global L2 norm of the gradients, sqrt(sum_p sum_i grad_p[i]^2), summed in float64;
    nothing is changed.

    params: Parameters (frozen ones, requires_grad False, are skipped; shared ones count once),
    or an optimizer, whose runs are then summed one pass each.
    """
    return _norm(_grads("grad_norm", params))


def _grads(where: str, params) -> list[np.ndarray]:
    """The gradient arrays of params: an optimizer's runs, or each trainable Parameter's once."""
    if isinstance(params, Optimizer):
        return [run.grad for run in params.runs]
    items = unique_params(where, params, allow_empty=True)
    return [p.grad for p in items if p.requires_grad]


def _norm(grads: list[np.ndarray]) -> float:
    squares = kernels.fused("sum_squares") or sum_squares
    return math.sqrt(sum(squares(g) for g in grads))


def clip_coef(total_norm: float, max_norm: float) -> float:
    """The factor clip_grad_norm multiplies the gradients by, as torch's clip_grad_norm_:

        min(1, max_norm / (total_norm + 1e-6))       (1.0 if total_norm is inf or nan)

    What a fused step takes instead of clipping first: `opt.step(grad_scale=clip_coef(norm,
    max_norm))` updates as `clip_grad_norm(opt, max_norm); opt.step()` does, bit for bit, with
    one pass over the gradients fewer (and leaves p.grad unscaled).
    """
    check_number("clip_coef", "max_norm", max_norm, 0, lo_open=True)
    coef = float(max_norm) / (total_norm + 1e-6)
    return coef if math.isfinite(total_norm) and coef < 1 else 1.0


def clip_grad_norm(params, max_norm: float) -> float:
    """Scale the gradients so that their global L2 norm is at most max_norm; return the norm
    before clipping, as torch.nn.utils.clip_grad_norm_:

        total = sqrt(sum_p sum_i grad_p[i]^2)      (accumulated in float64: grad_norm)
        coef = max_norm / (total + 1e-6);   if coef < 1: grad_p *= coef for every p

    params: Parameters (frozen ones, requires_grad False, are skipped; shared ones count once),
    or an optimizer, whose runs are then summed and scaled one pass each.
    A non-finite total (inf, nan) is returned as it is and the gradients are left untouched,
    so that the training loop can stop and say so.

    p.grad holds the clipped gradient when this returns (torch's meaning). A training loop that
    only needs the clipped gradient inside the update can skip this scaling pass: see clip_coef
    and the optimizers' step(grad_scale=...).
    """
    check_number("clip_grad_norm", "max_norm", max_norm, 0, lo_open=True)
    grads = _grads("clip_grad_norm", params)
    total = _norm(grads)
    coef = clip_coef(total, max_norm)
    if coef < 1:
        for g in grads:
            g *= coef
    return total
