"""One training step, traced: forward, backward, gradient clipping and the optimizer's update.

    trace = trace_step(model, batch, optimizer, grad_clip=1.0)
    trace.forward, trace.backward      # Records (npgpt.trace.tracer), in execution order
    trace.optimizer                    # {"clip": ..., "hyper": ..., "params": [...]}
    trace.to_dict()                    # JSON-ready; Trace.from_dict reads it back

The step is the one every npgpt training loop takes, driven here in the open, so that what the
trace shows does not depend on any loop's internals:

    loss = loss_fn(model, batch)            default: model.forward(*batch)[1]      traced
    optimizer.zero_grad(); backward_fn(model)    default: model.backward()          traced
    total = clip_grad_norm(optimizer, grad_clip)
    optimizer.step()

The optimizer phase is computed from the optimizer's state before and after its step
(optimizer.state_dict(): AdamW's m and v per parameter, the step t, the hyper-parameters) and
from the parameters' values around it, never by changing the optimizer: per parameter, the
gradient it used (after clipping), m and v, the bias corrections 1 - beta^t, the update
p_after - p_before and the update-to-weight ratio |update| / |p|.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..nn.module import ModuleList
from ..optim import clip_grad_norm
from .stats import summary
from .tracer import Phases, Record, Tracer

FORMAT = "npgpt-trace/1"


@dataclass
class Trace(Phases):
    """What trace_step recorded (see the module docstring)."""

    meta: dict                                   # the model, its config, the batch, dtype, backend, loss
    records: list = field(default_factory=list)  # Records, forward then backward, in call order
    optimizer: dict = field(default_factory=dict)
    compare: dict | None = None                  # --compare torch: the summary of the differences
    arrays: dict | None = field(default=None, repr=False)   # keep=True: {"grads", "weights", "m", "v":
                                                            # {parameter name: array}}, not saved

    def blocks(self, phase: str) -> list[Record]:
        """The records of the model's blocks (the members of its ModuleLists: h.0, encoder.1,
        ...): in the backward, each one's output is the gradient that flows into the residual
        stream below it."""
        names = set(self.meta.get("blocks", ()))
        return [r for r in self.records if r.phase == phase and r.path in names]

    def to_dict(self) -> dict:
        return {"format": FORMAT, "meta": self.meta, "records": [r.to_dict() for r in self.records],
                "optimizer": self.optimizer, "compare": self.compare}

    @classmethod
    def from_dict(cls, d: dict) -> "Trace":
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            found = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise ValueError(f"not an npgpt trace: format is {found!r}, expected {FORMAT!r}")
        return cls(d["meta"], [Record.from_dict(r) for r in d["records"]], d["optimizer"], d.get("compare"))


def block_paths(model) -> list[str]:
    """The paths of the members of every ModuleList of model: its blocks (h.0, h.1, ...)."""
    out = []
    for path, module in model.named_modules():
        if isinstance(module, ModuleList):
            out += [f"{path}.{name}" if path else name for name, _ in module.named_children()]
    return out


def _default_loss(model, batch):
    return model.forward(*batch)[1]


def _default_backward(model) -> None:
    model.backward()


def trace_step(model, batch, optimizer, *, grad_clip: float = 1.0, loss_fn=_default_loss,
               backward_fn=_default_backward, histograms: bool = True, keep: bool = False,
               meta: dict | None = None) -> Trace:
    """Take one training step of model on batch, recording it (see the module docstring).

    grad_clip: the max global gradient norm (0: measure the norm, do not clip), as the Trainer's.
    keep: keep every output array in the records (for a comparison with PyTorch).
    meta: more entries for Trace.meta (how the model and the batch were made).
    """
    tracer = Tracer(model, histograms=histograms, keep=keep)
    with tracer:
        loss = float(loss_fn(model, batch))
        optimizer.zero_grad()
        backward_fn(model)
    info = {"model": type(model).__name__, "loss": loss, "blocks": block_paths(model),
            "batch": [summary(np.asarray(a)) for a in batch if isinstance(a, np.ndarray)],
            "parameters": int(model.num_parameters())}
    if hasattr(model, "config"):
        info["config"] = model.config.to_dict()
    info.update(meta or {})
    names = {id(p): name for name, p in model.named_parameters()}
    grads = {names[id(p)]: p.grad.copy() for p in optimizer.params} if keep else None
    trace = Trace(info, tracer.records, optimizer_phase(model, optimizer, grad_clip))
    if keep:
        state = optimizer.state_dict()
        trace.arrays = {"grads": grads, "weights": {names[id(p)]: p.data.copy() for p in optimizer.params}}
        for key in ("m", "v"):
            trace.arrays[key] = {names[id(p)]: state[f"{key}.{j}"] for j, p in enumerate(optimizer.params)
                                 if f"{key}.{j}" in state}
    return trace


def optimizer_phase(model, optimizer, grad_clip: float) -> dict:
    """Clip the gradients and take optimizer's step; return what each part did (see the module
    docstring): {"clip": {...}, "hyper": {...}, "params": [{...} per trainable parameter]}."""
    names = {id(p): name for name, p in model.named_parameters()}
    params = optimizer.params
    before_clip = [math.sqrt(float(np.dot(p.grad.ravel().astype(np.float64), p.grad.ravel())))
                   for p in params]
    max_norm = grad_clip if grad_clip else float(np.finfo(np.float64).max)
    total = clip_grad_norm(optimizer, max_norm)
    coef = max_norm / (total + 1e-6)
    clip = {"max_norm": grad_clip, "total_norm": total, "scale": coef if math.isfinite(total) and coef < 1 else 1.0}
    grads = [p.grad.copy() for p in params]
    weights = [p.data.copy() for p in params]
    optimizer.step()
    state = optimizer.state_dict()
    hyper = _hyper(state)
    group_of = np.repeat(np.arange(len(state["group_sizes"])), state["group_sizes"])
    rows = []
    for j, p in enumerate(params):
        rows.append(_param_row(names.get(id(p), f"param {j}"), p, j, grads[j], weights[j],
                               before_clip[j], state, {k: v[group_of[j]] for k, v in hyper.items()}))
    t = state["step"]
    return {"type": type(optimizer).__name__, "clip": clip, "step": t,
            "hyper": {k: v[0] if len(set(map(str, v))) == 1 else v for k, v in hyper.items()},
            "params": rows}


def _hyper(state: dict) -> dict:
    """{hyper-parameter: [value per group]} of an optimizer's state_dict."""
    return {k: list(v) for k, v in state.items()
            if isinstance(v, list) and k != "group_sizes" and not k.startswith(("m.", "v."))}


def _norm(a) -> float:
    a = np.asarray(a, dtype=np.float64).ravel()
    return math.sqrt(float(np.dot(a, a)))


def _param_row(name, p, j, grad, weight, grad_norm_before_clip, state, hyper) -> dict:
    """What the optimizer did to parameter j (see optimizer_phase)."""
    update = p.data.astype(np.float64) - weight
    w_norm = _norm(weight)
    row = {"name": name, "shape": list(p.shape), "decay": bool(p.decay),
           "grad_norm_before_clip": grad_norm_before_clip, "grad": summary(grad),
           "weight_norm": w_norm, "update": summary(update),
           "ratio": _norm(update) / w_norm if w_norm > 0 else None}
    if f"m.{j}" in state and "betas" in hyper:
        t, (beta1, beta2) = state["step"], hyper["betas"]
        m, v = np.asarray(state[f"m.{j}"], np.float64), np.asarray(state[f"v.{j}"], np.float64)
        bc1, bc2 = 1 - beta1 ** t, 1 - beta2 ** t
        m_hat, v_hat = m / bc1, v / bc2
        row.update(m=summary(m), v=summary(v), bc1=bc1, bc2=bc2, m_hat_norm=_norm(m_hat),
                   sqrt_v_hat_mean=float(np.sqrt(v_hat).mean()),
                   direction=summary(m_hat / (np.sqrt(v_hat) + hyper.get("eps", 0.0))))
    return row
