"""Gradient clipping by the global norm, as torch.nn.utils.clip_grad_norm_."""

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


def clip_grad_norm(params, max_norm: float) -> float:
    """Scale the gradients so that their global L2 norm is at most max_norm; return the norm
    before clipping, as torch.nn.utils.clip_grad_norm_:

        total = sqrt(sum_p sum_i grad_p[i]^2)      (accumulated in float64)
        coef = max_norm / (total + 1e-6);   if coef < 1: grad_p *= coef for every p

    params: Parameters (frozen ones, requires_grad False, are skipped; shared ones count once),
    or an optimizer, whose runs are then summed and scaled one pass each.
    A non-finite total (inf, nan) is returned as it is and the gradients are left untouched,
    so that the training loop can stop and say so.
    """
    check_number("clip_grad_norm", "max_norm", max_norm, 0, lo_open=True)
    if isinstance(params, Optimizer):
        grads = [run.grad for run in params.runs]
    else:
        items = unique_params("clip_grad_norm", params, allow_empty=True)
        grads = [p.grad for p in items if p.requires_grad]
    squares = kernels.fused("sum_squares") or sum_squares
    total = math.sqrt(sum(squares(g) for g in grads))
    coef = float(max_norm) / (total + 1e-6)
    if math.isfinite(total) and coef < 1:
        for g in grads:
            g *= coef
    return total
