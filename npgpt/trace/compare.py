"""Compare a traced step with its PyTorch twin (npgpt.trace.torch_twin), tensor by tensor.

    before = model.state_dict(), optimizer.state_dict()      # taken before the step
    trace = trace_step(model, batch, optimizer, grad_clip=1.0, keep=True)
    compare_with_torch(trace, model, batch, optimizer, *before, grad_clip=1.0)
    trace.compare        # {"max_diff": ..., "forward": ..., "where": ...}; each Record.diff and
                         # each optimizer row's "diff" hold the differences beside the numbers

Every difference is the largest absolute one, max |npgpt - torch|, computed in float64:
forward outputs (per call, matched by module path and call number), backward outputs (the
gradient each call sent to its inputs), parameter gradients (by parameter name, before
clipping); then the optimizer phase: torch.nn.utils.clip_grad_norm_ and one torch.optim.AdamW
step with the same hyper-parameters (weight decay on the same parameters, the same m, v and
step to start from), compared by the total norm, the updated weights and AdamW's m and v.

The optimizer phase starts from npgpt's gradients, not torch's: each phase is compared on the
same inputs. Otherwise a gradient that is only rounding noise would decide the result: the key
projection's bias has a true gradient of exactly 0 (adding q . b_k to every score of a row
changes no softmax), both libraries compute ~1e-10 of noise for it, and AdamW's first step,
lr * g / (|g| + eps), turns two different noises into updates that differ by ~lr * |g| / eps
(1e-4 in float32), a difference that says nothing about either implementation.
"""

from __future__ import annotations

import numpy as np

from .step import Trace
from .tracer import flatten
from .torch_twin import TorchTwin


def max_diff(a, b) -> float | None:
    """max |a - b| in float64; None when either is missing or they differ in shape."""
    if a is None or b is None:
        return None
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return None
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def _numpy(x):
    return None if x is None else x.detach().numpy().copy()     # a copy: torch may change x in place


def _record_diffs(trace: Trace, twin: TorchTwin) -> None:
    """Record.diff of every record, from the twin's outputs and its inputs' gradients."""
    torch = twin.torch
    for rec in trace.records:
        calls = twin.outputs.get(rec.path, [])
        if rec.arrays is None or not calls:
            continue
        if rec.phase == "forward":
            theirs = [_numpy(x) if isinstance(x, torch.Tensor) else x for x in flatten(calls[rec.call])]
            ours = rec.arrays
        else:
            inputs = twin.inputs[rec.path][len(calls) - 1 - rec.call]
            theirs = [_numpy(x.grad) for x in inputs
                      if isinstance(x, torch.Tensor) and x.is_floating_point() and x.requires_grad]
            ours = [a for a in rec.arrays if a is not None]
        rec.diff = [max_diff(a, b) for a, b in zip(ours, theirs)] if len(ours) == len(theirs) else None


def _torch_optimizer(torch, twin: TorchTwin, optimizer, opt_state: dict):
    """torch.optim.AdamW over the twin's leaves, grouped as npgpt's (decay where p.decay), with
    the state npgpt's optimizer started the step from."""
    groups = []
    for group in optimizer.param_groups:
        trainable = [p for p in group["params"] if p.requires_grad]
        for decay in (True, False):
            leaves = [twin.w(p) for p in trainable if p.decay == decay]
            if leaves:
                groups.append({"params": leaves, "lr": group["lr"], "betas": tuple(group["betas"]),
                               "eps": group["eps"], "weight_decay": group["weight_decay"] if decay else 0.0})
    opt = torch.optim.AdamW(groups)
    if opt_state.get("step", 0):
        for j, p in enumerate(optimizer.params):
            opt.state[twin.w(p)] = {"step": torch.tensor(float(opt_state["step"])),
                                    "exp_avg": torch.tensor(np.array(opt_state[f"m.{j}"])),
                                    "exp_avg_sq": torch.tensor(np.array(opt_state[f"v.{j}"]))}
    return opt


def compare_with_torch(trace: Trace, model, batch, optimizer, weights: dict, opt_state: dict,
                       grad_clip: float) -> dict:
    """Run the step of `trace` (made with keep=True) in PyTorch from `weights` and `opt_state`
    (the model's and the optimizer's state_dict() before the step) and fill in the differences
    (see the module docstring). Returns trace.compare."""
    import torch  # optional heavy dependency: only --compare torch needs it
    if trace.arrays is None:
        raise ValueError("compare_with_torch: the trace kept no arrays: make it with trace_step(..., keep=True)")
    if type(optimizer).__name__ != "AdamW":
        raise ValueError(f"compare_with_torch: the optimizer is a {type(optimizer).__name__}: expected AdamW")
    twin = TorchTwin(torch, model, weights)
    _, loss = twin.call(model, *batch)
    loss.backward()
    _record_diffs(trace, twin)
    arrays = trace.arrays
    grads = {}
    for p in optimizer.params:                  # compare torch's gradients, then step from npgpt's
        name, leaf = twin.names[id(p)], twin.w(p)
        grads[name] = _numpy(leaf.grad)
        leaf.grad = torch.tensor(np.array(arrays["grads"][name]))
    max_norm = grad_clip if grad_clip else float(np.finfo(np.float64).max)
    total = float(torch.nn.utils.clip_grad_norm_([twin.w(p) for p in optimizer.params], max_norm))
    trace.optimizer["clip"]["diff"] = abs(total - trace.optimizer["clip"]["total_norm"])
    opt = _torch_optimizer(torch, twin, optimizer, opt_state)
    opt.step()
    for row in trace.optimizer["params"]:
        name, leaf = row["name"], twin.leaves[row["name"]]
        state = opt.state[leaf]
        row["diff"] = {"grad": max_diff(arrays["grads"][name], grads[name]),
                       "weight": max_diff(arrays["weights"][name], _numpy(leaf)),
                       "m": max_diff(arrays["m"].get(name), _numpy(state["exp_avg"])),
                       "v": max_diff(arrays["v"].get(name), _numpy(state["exp_avg_sq"]))}
    trace.compare = summarize(trace, torch.__version__)
    return trace.compare


def summarize(trace: Trace, version: str) -> dict:
    """The largest difference of each kind, the count of compared tensors and the worst one."""
    found = []                                           # (difference, kind, where)
    for rec in trace.records:
        for i, d in enumerate(rec.diff or []):
            if d is not None:
                found.append((d, rec.phase, f"{rec.phase} {rec.name} output {i}"))
    for row in trace.optimizer["params"]:
        for kind, d in (row.get("diff") or {}).items():
            if d is not None:
                found.append((d, "grads" if kind == "grad" else "weights", f"{kind} of {row['name']}"))
    clip = trace.optimizer["clip"].get("diff")
    if clip is not None:
        found.append((clip, "weights", "total gradient norm"))
    worst = max(found, default=(0.0, "", "nothing compared"))
    by_kind = {k: max([d for d, kind, _ in found if kind == k], default=0.0)
               for k in ("forward", "backward", "grads", "weights")}     # "weights": the optimizer phase
    return {"torch": version, "dtype": trace.meta.get("dtype"), "tensors": len(found),
            "max_diff": worst[0], "where": worst[2], **by_kind}
