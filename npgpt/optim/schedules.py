"""Learning-rate schedules: callables of the step number, counted from 1.

A schedule is called with the number of the step about to be taken:

    for it in range(max_iters):
        opt.lr = schedule(it + 1)
        ...forward, backward...
        opt.step()
"""

from __future__ import annotations

import math
import operator

from .groups import check_number


def _check_step(name: str, step) -> int:
    try:
        step = operator.index(step)
    except TypeError:
        raise TypeError(f"{name}: step={step!r} is a {type(step).__name__}: expected an int") from None
    if step < 1:
        raise ValueError(f"{name}: step={step}: expected step >= 1 (schedules count steps from 1: "
                         f"call schedule(it + 1) before the step of 0-based iteration it)")
    return step


class Constant:
    """lr(step) = lr for every step >= 1."""

    def __init__(self, lr: float):
        self.lr = check_number("Constant", "lr", lr, 0)

    def __call__(self, step: int) -> float:
        _check_step("Constant", step)
        return self.lr

    def __repr__(self) -> str:
        return f"Constant(lr={self.lr})"


class WarmupCosine:
    """Linear warmup, then cosine decay (nanoGPT's get_lr), for steps t = 1, 2, ...:

        t <= W:        lr = max_lr * t / W                              (max_lr / W at t = 1)
        W < t < T:     r = (t - W) / (T - W)
                       lr = min_lr + 0.5 * (1 + cos(pi * r)) * (max_lr - min_lr)
        t >= T:        lr = min_lr

    W = warmup_steps (0: no warmup), T = total_steps. max_lr is reached at t = W, the middle
    (max_lr + min_lr) / 2 at t = (W + T) / 2, and min_lr at t = T and after.
    """

    def __init__(self, max_lr: float, warmup_steps: int, total_steps: int, min_lr: float = 0.0):
        self.max_lr = check_number("WarmupCosine", "max_lr", max_lr, 0)
        self.min_lr = check_number("WarmupCosine", "min_lr", min_lr, 0, self.max_lr)
        self.warmup_steps = int(check_number("WarmupCosine", "warmup_steps", warmup_steps, 0))
        self.total_steps = int(check_number("WarmupCosine", "total_steps", total_steps,
                                            max(self.warmup_steps, 1)))
        if self.warmup_steps != warmup_steps or self.total_steps != total_steps:
            raise TypeError(f"WarmupCosine: warmup_steps={warmup_steps!r}, total_steps={total_steps!r}: "
                            f"expected whole numbers")

    def __call__(self, step: int) -> float:
        t = _check_step("WarmupCosine", step)
        if t <= self.warmup_steps:
            return self.max_lr * t / self.warmup_steps
        if t >= self.total_steps:
            return self.min_lr
        r = (t - self.warmup_steps) / (self.total_steps - self.warmup_steps)
        return self.min_lr + 0.5 * (1.0 + math.cos(math.pi * r)) * (self.max_lr - self.min_lr)

    def __repr__(self) -> str:
        return (f"WarmupCosine(max_lr={self.max_lr}, warmup_steps={self.warmup_steps}, "
                f"total_steps={self.total_steps}, min_lr={self.min_lr})")


class Noam:
    """The Transformer paper's schedule (Vaswani et al., 2017, section 5.3), steps t = 1, 2, ...:

        lr = factor * d_model^-0.5 * min(t^-0.5, t * W^-1.5)

    linear growth for t <= W = warmup_steps, then decay as t^-0.5; the peak, at t = W, is
    factor * (d_model * W)^-0.5.
    """

    def __init__(self, d_model: int, warmup_steps: int, factor: float = 1.0):
        self.d_model = int(check_number("Noam", "d_model", d_model, 1))
        self.warmup_steps = int(check_number("Noam", "warmup_steps", warmup_steps, 1))
        self.factor = check_number("Noam", "factor", factor, 0)

    def __call__(self, step: int) -> float:
        t = _check_step("Noam", step)
        return self.factor * self.d_model ** -0.5 * min(t ** -0.5, t * self.warmup_steps ** -1.5)

    def __repr__(self) -> str:
        return f"Noam(d_model={self.d_model}, warmup_steps={self.warmup_steps}, factor={self.factor})"
