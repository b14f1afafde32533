"""Stochastic gradient descent with momentum, as torch.optim.SGD.

sgd_update is the rule on flat arrays; SGD applies it to each run of its parameters.
"""

from __future__ import annotations

import math

import numpy as np

from .flat import BLOCK, chunks
from .groups import check_number
from .optimizer import Optimizer


def sgd_update(p, g, buf, decay, lr, momentum, dampening, nesterov, weight_decay, first,
               grad_scale=1.0, zero_grad=False) -> None:
    """One SGD step over flat arrays, in place (p, buf), as torch.optim.SGD:

        d <- grad_scale * g + wd * p           (wd only where decay; grad_scale: the clip's)
        buf <- d  (first step)   or   buf <- momentum * buf + (1 - dampening) * d
        d <- d + momentum * buf  (nesterov)   or   d <- buf   (momentum > 0)
        p <- p - lr * d

    buf may be None when momentum is 0; first: True on the first step with momentum.
    g is not scaled in place (grad_scale * g is formed per chunk); zero_grad: g <- 0 once read.
    """
    scratch = np.empty((2, min(p.size, BLOCK)), dtype=p.dtype)
    for s, e in chunks(p.size):
        d, t = scratch[0, :e - s], scratch[1, :e - s]
        d.fill(0)
        if weight_decay != 0:
            np.multiply(p[s:e], weight_decay, out=d, where=decay[s:e])
        np.multiply(g[s:e], grad_scale, out=t)
        d += t
        if zero_grad:
            g[s:e] = 0
        if momentum != 0:
            d = _momentum(d, t, buf[s:e], momentum, dampening, nesterov, first)
        np.multiply(d, -lr, out=t)
        p[s:e] += t


def _momentum(d, t, buf, momentum, dampening, nesterov, first):
    """The momentum part of sgd_update on one chunk; returns the direction to step along."""
    if first:
        buf[...] = d
    else:
        buf *= momentum
        np.multiply(d, 1 - dampening, out=t)
        buf += t
    if not nesterov:
        return buf
    np.multiply(buf, momentum, out=t)
    d += t
    return d


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, as torch.optim.SGD (see sgd_update).

    params: Parameters, or torch-style param groups [{"params": [...], "lr": ..., ...}].
    Weight decay is added to the gradient (L2), only for parameters with p.decay True.
    nesterov requires momentum > 0 and dampening 0. Frozen parameters (requires_grad False)
    are left out and never changed.
    """

    def __init__(self, params, lr: float, momentum: float = 0.0, dampening: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "momentum": momentum, "dampening": dampening,
                                  "nesterov": nesterov, "weight_decay": weight_decay})
        self._buf = self._zeros() if any(g["momentum"] for g in self.param_groups) else None
        self._started = [False] * len(self.param_groups)   # momentum buffer holds a value

    def _check_group(self, group: dict, where: str) -> None:
        for key, lo, hi in (("lr", 0, math.inf), ("momentum", 0, math.inf),
                            ("dampening", 0, 1), ("weight_decay", 0, math.inf)):
            group[key] = check_number(where, key, group[key], lo, hi)
        if not isinstance(group["nesterov"], (bool, np.bool_)):
            raise TypeError(f"{where}: nesterov={group['nesterov']!r}: expected True or False")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(f"{where}: nesterov=True with momentum={group['momentum']} and "
                             f"dampening={group['dampening']}: Nesterov momentum requires "
                             f"momentum > 0 and dampening 0")

    def step(self, grad_scale: float = 1.0, zero_grad: bool = False) -> None:
        """p <- p - lr * direction, for every trainable parameter: one sgd_update per run.

        grad_scale and zero_grad as AdamW.step's: the step uses grad_scale * p.grad without
        writing it back; zero_grad leaves p.grad 0.
        """
        self._prepare_step()
        grad_scale = check_number("SGD", "grad_scale", grad_scale, 0)
        if self._buf is None and any(g["momentum"] for g in self.param_groups):
            self._buf = self._zeros()
        for r, run in enumerate(self.runs):
            group = self.param_groups[run.group]
            buf = self._buf[r] if self._buf is not None else None
            sgd_update(run.data, run.grad, buf, run.decay, group["lr"], group["momentum"],
                       group["dampening"], group["nesterov"], group["weight_decay"],
                       first=not self._started[run.group], grad_scale=grad_scale,
                       zero_grad=bool(zero_grad))
        self._started = [started or g["momentum"] != 0
                         for started, g in zip(self._started, self.param_groups)]
        self.step_count += 1

    def state_dict(self) -> dict:
        """{"step", "group_sizes", "lr", "momentum", "dampening", "nesterov" (0/1),
        "weight_decay", "momentum_started" (0/1 per group), "momentum_buffer.{j}"}: plain values
        and numpy copies; j indexes `params`, buffers only for groups whose momentum started."""
        state = self._hyper_state()
        state["momentum_started"] = [int(x) for x in self._started]
        buffers = self._split(self._buf) if self._buf is not None else []
        for j, buf in enumerate(buffers):
            if self._started[self.runs[self._slots[j][0]].group]:
                state[f"momentum_buffer.{j}"] = buf
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore a state_dict() of an SGD over the same parameters; checks all, then writes."""
        if "momentum_started" not in state:
            raise KeyError("SGD.load_state_dict: state is missing keys ['momentum_started']: "
                           "expected the keys of SGD.state_dict()")
        started = [bool(x) for x in state["momentum_started"]]
        if len(started) != len(self.param_groups):
            raise ValueError(f"SGD.load_state_dict: momentum_started={state['momentum_started']!r}: "
                             f"expected one 0/1 per group ({len(self.param_groups)} groups)")
        indices = [j for j, (r, _, _) in enumerate(self._slots) if started[self.runs[r].group]]
        groups = self._check_state(state, [f"momentum_buffer.{j}" for j in indices])
        if indices and self._buf is None:
            self._buf = self._zeros()
        for group, values in zip(self.param_groups, groups):
            group.update(values)
        self._load_state(self._buf, state, "momentum_buffer", indices)
        self._started, self.step_count = started, int(state["step"])
