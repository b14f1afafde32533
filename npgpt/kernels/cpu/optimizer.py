"""The optimizer's kernels: the AdamW update and the sum of squares, over flat buffers.

The twins of npgpt.optim's adamw_update and of the sum of squares inside clip_grad_norm, tested
equal to them (AdamW bit for bit). The optimizer chooses them with
`kernels.fused(name) or <the NumPy function>`.

Why faster: the NumPy update walks each chunk of the buffers nine times (one ufunc per
operation, each with its temporary); this one reads p, g, m, v and the decay mask once and
writes p, m, v once, so the update is bound by memory bandwidth. From PARALLEL_FROM elements
on, chunks of FLAT_CHUNK run on all cores (tasks.py).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .. import reference
from .intrinsics import _FM
from .tasks import FLAT_CHUNK, flat_tasks


@njit(error_model="numpy", cache=True)
def _adamw_span(p, g, m, v, decay, i0, i1, wd_factor, one_minus_beta1, beta2, one_minus_beta2,
                bc2_sqrt, eps, neg_step_size, grad_scale, zero_grad):
    """Elements i0 .. i1-1 of the AdamW step, each operation in npgpt.optim.adamw_update's order
    and dtype (no fastmath: no fused multiply-add, so the same roundings, bit for bit)."""
    ps, gs, ms, vs, ds = p[i0:i1], g[i0:i1], m[i0:i1], v[i0:i1], decay[i0:i1]
    for i in range(ps.shape[0]):
        pi = ps[i] * wd_factor if ds[i] else ps[i]          # p <- p (1 - lr wd)   where decay
        gi = gs[i] * grad_scale                               # g' = grad_scale g (the clip)
        if zero_grad:
            gs[i] = 0                                         # read: the next backward adds into 0
        mi = ms[i] + (gi - ms[i]) * one_minus_beta1           # m <- m + (1 - beta1) (g - m)
        vi = vs[i] * beta2 + (gi * gi) * one_minus_beta2      # v <- beta2 v + (1 - beta2) g^2
        denom = np.sqrt(vi) / bc2_sqrt + eps                  # sqrt(v) / sqrt(1 - beta2^t) + eps
        ps[i] = pi + (mi / denom) * neg_step_size             # p <- p - lr / (1 - beta1^t) m / denom
        ms[i] = mi
        vs[i] = vi


@njit(parallel=True, cache=True)
def _adamw_tasks(p, g, m, v, decay, wd_factor, one_minus_beta1, beta2, one_minus_beta2, bc2_sqrt,
                 eps, neg_step_size, grad_scale, zero_grad, n_tasks):
    n = p.shape[0]
    # for each chunk of FLAT_CHUNK elements, in parallel
    for t in prange(n_tasks):
        _adamw_span(p, g, m, v, decay, t * FLAT_CHUNK, min(t * FLAT_CHUNK + FLAT_CHUNK, n),
                    wd_factor, one_minus_beta1, beta2, one_minus_beta2, bc2_sqrt, eps, neg_step_size,
                    grad_scale, zero_grad)


def adamw_update(p, g, m, v, decay, lr, beta1, beta2, eps, weight_decay, step,
                 grad_scale=1.0, zero_grad=False) -> None:
    """npgpt.optim.adamw_update as one parallel pass over the flat buffers, in place (p, m, v).

    The NumPy form walks each 64 K chunk nine times (one ufunc per operation); this reads
    p, g, m, v, decay once and writes p, m, v once: the update is bound by memory bandwidth.
    Every operation is the NumPy form's, in its order, with its constants rounded to the dtype
    as NumPy rounds them (a Python float meets a float32 array as a float32): equal bit for bit.

    The clip and the zeroing ride along: grad_scale multiplies each gradient as it is read
    (a separate `g *= coef` pass would read and write all of g once more), and zero_grad writes
    the 0 into a cache line that is already in L1 (a separate fill walks all of g again).
    On GPT-2 124M, 2 cores: results/step.md.
    """
    if not isinstance(p, np.ndarray) or p.ndim != 1 or p.dtype not in (np.float32, np.float64):
        raise TypeError(f"p has dtype {getattr(p, 'dtype', None)} and shape {getattr(p, 'shape', None)}: "
                        f"expected a 1-D float32 or float64 array")
    for name, a in (("g", g), ("m", m), ("v", v)):
        reference.check_like(name, a, p.shape, p.dtype, "the shape and dtype of p")
    if not isinstance(decay, np.ndarray) or decay.shape != p.shape or decay.dtype != np.bool_:
        raise ValueError(f"decay has shape {getattr(decay, 'shape', None)} and dtype "
                         f"{getattr(decay, 'dtype', None)}: expected a bool array of shape {p.shape}")
    for name, a in (("p", p), ("g", g), ("m", m), ("v", v)):
        if not a.flags.c_contiguous:
            raise ValueError(f"{name} is not contiguous: expected a slice of a flat buffer")
    dt = p.dtype.type
    consts = (dt(1 - lr * weight_decay) if weight_decay != 0 else dt(1), dt(1 - beta1), dt(beta2),
              dt(1 - beta2), dt((1 - beta2 ** step) ** 0.5), dt(eps), dt(-(lr / (1 - beta1 ** step))),
              dt(grad_scale), bool(zero_grad))
    n_tasks = flat_tasks(p.size)
    if n_tasks:
        _adamw_tasks(p, g, m, v, decay, *consts, n_tasks)
    elif p.size:
        _adamw_span(p, g, m, v, decay, 0, p.size, *consts)


@njit(fastmath=_FM, cache=True)
def _sum_squares_span(a, i0, i1):
    """sum(a[i0:i1]^2), each element squared and added in float64 (16 float64 partial sums)."""
    s = 0.0
    xs = a[i0:i1]
    for i in range(xs.shape[0]):
        x = np.float64(xs[i])
        s += x * x
    return s


@njit(parallel=True, cache=True)
def _sum_squares_tasks(a, parts):
    n = a.shape[0]
    # for each chunk of FLAT_CHUNK elements, in parallel: its own partial sum
    for t in prange(parts.shape[0]):
        parts[t] = _sum_squares_span(a, t * FLAT_CHUNK, min(t * FLAT_CHUNK + FLAT_CHUNK, n))


def sum_squares(a: np.ndarray) -> float:
    """sum(a^2) in float64 (npgpt.optim's clip_grad_norm's), one parallel pass: each chunk of
    FLAT_CHUNK elements summed on its own, then the chunks' sums in order."""
    if not isinstance(a, np.ndarray) or a.dtype not in (np.float32, np.float64):
        raise TypeError(f"a has dtype {getattr(a, 'dtype', type(a).__name__)}: expected a float32 "
                        f"or float64 array")
    flat = np.ascontiguousarray(a).reshape(-1)
    n_tasks = flat_tasks(flat.size)
    if not n_tasks:
        return float(_sum_squares_span(flat, 0, flat.size)) if flat.size else 0.0
    parts = np.empty(n_tasks, dtype=np.float64)
    _sum_squares_tasks(flat, parts)
    return float(parts.sum())
