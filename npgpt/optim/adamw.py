"""Adam with decoupled weight decay (Loshchilov & Hutter, 2019), as torch.optim.AdamW.

adamw_update is the rule on flat arrays; AdamW applies it to each run of its parameters, or the
backend's fused twin of it: for a flattened model, the whole model in one pass.
"""

from __future__ import annotations

import numpy as np

from .. import kernels
from .flat import BLOCK, chunks
from .groups import check_number
from .optimizer import Optimizer


def adamw_update(p, g, m, v, decay, lr, beta1, beta2, eps, weight_decay, step,
                 grad_scale=1.0, zero_grad=False) -> None:
    """One AdamW step over flat arrays, in place (p, m, v), in torch.optim.AdamW's order:

        g' = grad_scale * g                    (the clip's coefficient; 1: g itself)
        p <- p * (1 - lr * wd)                 where decay (decoupled weight decay)
        m <- m + (1 - beta1) * (g' - m)        (= beta1 m + (1 - beta1) g', torch's lerp)
        v <- beta2 * v + (1 - beta2) * g' * g'
        p <- p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    p, g, m, v: 1-D arrays of one dtype; decay: 1-D bool; step: t, counted from 1.
    g is read, never scaled in place: g' is formed chunk by chunk in a scratch array, so the
    step equals `g *= grad_scale` followed by a step with grad_scale 1, bit for bit, without
    that extra pass. zero_grad: g <- 0 once read (the next backward adds into zeros).
    The arrays are walked in cache-sized chunks with scratch arrays, so the update makes no
    array-sized temporaries. A backend may supply a fused twin (kernels.fused("adamw_update")).
    """
    step_size = lr / (1 - beta1 ** step)
    bc2_sqrt = (1 - beta2 ** step) ** 0.5
    scratch = np.empty((2, min(p.size, BLOCK)), dtype=p.dtype)
    for s, e in chunks(p.size):
        t, gs = scratch[0, :e - s], scratch[1, :e - s]
        np.multiply(g[s:e], grad_scale, out=gs)    # g' = grad_scale * g
        if zero_grad:
            g[s:e] = 0
        if weight_decay != 0:
            np.multiply(p[s:e], 1 - lr * weight_decay, out=p[s:e], where=decay[s:e])
        np.subtract(gs, m[s:e], out=t)             # m += (1 - beta1) * (g' - m)
        t *= 1 - beta1
        m[s:e] += t
        v[s:e] *= beta2                            # v = beta2 v + (1 - beta2) g'^2
        np.multiply(gs, gs, out=t)
        t *= 1 - beta2
        v[s:e] += t
        np.sqrt(v[s:e], out=t)                     # denom = sqrt(v) / sqrt(bc2) + eps
        t /= bc2_sqrt
        t += eps
        np.divide(m[s:e], t, out=t)                # p -= step_size * m / denom
        t *= -step_size
        p[s:e] += t


class AdamW(Optimizer):
    """Adam with decoupled weight decay, as torch.optim.AdamW.

    params: Parameters, or torch-style param groups [{"params": [...], "lr": ..., ...}].
    Weight decay (p <- p * (1 - lr * wd)) applies only where p.decay is True; a group's
    weight_decay is its rate. Frozen parameters (requires_grad False) are left out and never
    changed. m and v are one array per run (see Optimizer), zeros at the start.
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})
        self._m, self._v = self._zeros(), self._zeros()

    def _check_group(self, group: dict, where: str) -> None:
        group["lr"] = check_number(where, "lr", group["lr"], 0)
        betas = group["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"{where}: betas={betas!r}: expected a pair (beta1, beta2)")
        group["betas"] = tuple(check_number(where, f"betas[{k}]", b, 0, 1, hi_open=True)
                               for k, b in enumerate(betas))
        group["eps"] = check_number(where, "eps", group["eps"], 0, lo_open=True)
        group["weight_decay"] = check_number(where, "weight_decay", group["weight_decay"], 0)

    def step(self, grad_scale: float = 1.0, zero_grad: bool = False) -> None:
        """One AdamW step of every trainable parameter: one update call per run.

        grad_scale: the step uses grad_scale * p.grad as the gradient (the clip's coefficient,
        npgpt.optim.clip_coef), without writing it back: p.grad keeps what backward left.
        zero_grad: p.grad is 0 when the step returns (written by the pass that reads it, so the
        next backward needs no zero_grad()). With the defaults, torch's step: p.grad untouched.
        """
        self._prepare_step()
        grad_scale = check_number(type(self).__name__, "grad_scale", grad_scale, 0)
        self.step_count += 1
        update = kernels.fused("adamw_update") or adamw_update
        for run, m, v in zip(self.runs, self._m, self._v):
            group = self.param_groups[run.group]
            beta1, beta2 = group["betas"]
            update(run.data, run.grad, m, v, run.decay, group["lr"], beta1, beta2, group["eps"],
                   group["weight_decay"], self.step_count, grad_scale, bool(zero_grad))

    def state_dict(self) -> dict:
        """{"step", "group_sizes", "lr", "betas", "eps", "weight_decay" (one entry per group),
        "m.{j}", "v.{j}"}: plain values and numpy copies; j indexes `params`."""
        return self._arrays_state(m=self._m, v=self._v)

    def load_state_dict(self, state: dict) -> None:
        """Restore a state_dict() of an AdamW over the same parameters; checks all, then writes."""
        self._load_groups(state, "mv")
        n = len(self._params)
        self._load_state(self._m, state, "m", range(n))
        self._load_state(self._v, state, "v", range(n))
        self.step_count = int(state["step"])
