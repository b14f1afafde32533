"""`--compare torch`: the traced step and its PyTorch twin agree on every recorded tensor, by
module path and parameter name: below 1e-5 in float32 and 1e-10 in float64."""

from __future__ import annotations

import numpy as np
import pytest

from npgpt.optim import AdamW
from npgpt.trace.compare import compare_with_torch
from npgpt.trace.step import trace_step

from .test_trace import MODELS

pytest.importorskip("torch")

TOLERANCE = {"float32": 1e-5, "float64": 1e-10}     # the issue's bounds, absolute


def compared(name, dtype, steps=1):
    """A traced step (after steps - 1 plain ones: AdamW then starts from m, v, t > 0) and its comparison."""
    model, batch = MODELS[name](dtype=dtype)
    opt = AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1)
    for _ in range(steps - 1):
        trace_step(model, batch, opt, grad_clip=0.5)
    weights, state = model.state_dict(), opt.state_dict()
    trace = trace_step(model, batch, opt, grad_clip=0.5, keep=True, meta={"dtype": dtype})
    compare_with_torch(trace, model, batch, opt, weights, state, grad_clip=0.5)
    return trace


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", list(MODELS))
def test_every_tensor_matches_pytorch(name, dtype):
    trace = compared(name, dtype)
    c = trace.compare
    # every forward and backward output that is an array was compared, and every parameter
    for r in trace.records:
        if any(isinstance(a, np.ndarray) and a.dtype.kind == "f" for a in r.arrays):
            assert r.diff and all(d is not None for d in r.diff), f"{r.phase} {r.name}: not compared"
    for row in trace.optimizer["params"]:
        assert None not in row["diff"].values(), row["name"]
    assert c["tensors"] > len(trace.records)
    assert c["max_diff"] < TOLERANCE[dtype], f"largest difference {c['max_diff']:.3g} at {c['where']}"


def test_a_later_step_starts_torch_from_the_same_adamw_state():
    trace = compared("gpt", "float64", steps=3)
    assert trace.optimizer["step"] == 3
    assert trace.compare["weights"] < 1e-10
