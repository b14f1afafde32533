"""Training health over a run: every N steps, each layer's activation std, gradient norm and
update-to-weight ratio, written into that step's record of log.jsonl.

    trainer = Trainer(model, optimizer, batch_fn, ..., around_step=Health(every=50))
    # npgpt train --health-every 50 does this; npgpt plot RUN draws the numbers

On a health step the Trainer's whole step (forward, backward, clip, optimizer step) runs inside
a Tracer without histograms (npgpt.trace.tracer), and the step's record gains

    "health": {"act_std":      {layer: std of its forward output},
               "grad_norm":    {layer: |g| of its parameters' gradients, as the optimizer used them
                                (after clipping)},
               "update_ratio": {layer: |p_after - p_before| / |p_before| over its parameters}}

A layer is a part of the model called by the model itself (wte, h.0, ..., ln_f, lm_head; a
part called twice, like the Transformer's positions, as pos and pos#1 for the second call);
its parameters are those named under it (h.0.attn.c_attn.weight is h.0's). Tracing never changes
a number, so a run with --health-every equals one without it, bit for bit.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np

from ..trainer import StepWatch
from .tracer import Tracer


def layer_of(name: str) -> str:
    """The layer a parameter belongs to: h.0.attn.c_attn.weight -> h.0; wte.weight -> wte."""
    parts = name.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 and parts[1].isdigit() else parts[0]


def _norm(a) -> float:
    a = np.asarray(a, dtype=np.float64).ravel()
    return float(np.dot(a, a))


def health_record(records, named_params, weights_before: dict, grad_squares: dict) -> dict:
    """The "health" entry of a step (see the module docstring) from its trace records, the
    model's named parameters after the step, their values before it, and the squared norms of
    their gradients as the update used them (HealthWatch.before_update)."""
    act = {}
    for r in records:
        out = next((o for o in r.outputs if o is not None), None)
        if r.phase == "forward" and r.depth == 1 and out and out.get("shape") and "std" in out:
            act[r.path + (f"#{r.call}" if r.call else "")] = out["std"]
    grad, delta, weight = {}, {}, {}
    for name, p in named_params:
        if name not in weights_before:
            continue
        layer = layer_of(name)
        grad[layer] = grad.get(layer, 0.0) + grad_squares[name]
        delta[layer] = delta.get(layer, 0.0) + _norm(p.data.astype(np.float64) - weights_before[name])
        weight[layer] = weight.get(layer, 0.0) + _norm(weights_before[name])
    return {"act_std": act, "grad_norm": {k: math.sqrt(v) for k, v in grad.items()},
            "update_ratio": {k: math.sqrt(delta[k] / weight[k]) if weight[k] > 0 else None for k in delta}}


class Health:
    """The Trainer's around_step hook that logs training health every `every` steps."""

    def __init__(self, every: int):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"Health: every={every!r}: expected a positive integer (steps between records)")
        self.every = every

    def __call__(self, trainer, step: int):
        """The context to run step `step` of trainer in; it yields the step's StepWatch."""
        if step % self.every:
            return contextlib.nullcontext(StepWatch())
        return self._observe(trainer.model)

    @contextlib.contextmanager
    def _observe(self, model):
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        before = {n: p.data.copy() for n, p in named}
        watch = HealthWatch(named)
        tracer = Tracer(model, histograms=False)
        with tracer:
            yield watch
        watch.record["health"] = health_record(tracer.records, named, before, watch.grad_squares)


class HealthWatch(StepWatch):
    """Keeps |grad_scale * g|^2 of every parameter just before the update (which zeroes g)."""

    def __init__(self, named_params):
        super().__init__()
        self.named, self.grad_squares = named_params, {}

    def before_update(self, optimizer, grad_scale: float) -> None:
        self.grad_squares = {n: grad_scale ** 2 * _norm(p.grad) for n, p in self.named}
