"""Trace one training step: every module's call, its shapes, its equation, its gradient.

    from npgpt.trace import Tracer, trace_step, render_terminal, write_html
    with Tracer(model) as t:                 # any forward/backward of any npgpt Module
        logits, loss = model.forward(idx, targets)
        model.backward()
    t.records                                # Records, in the order the calls began

    trace = trace_step(model, batch, optimizer, grad_clip=1.0)   # forward, backward, clip, step
    print(render_terminal(trace, depth=2))   # tables per phase; also write_html, trace.to_dict()

One subject per file:

    tracer.py       Tracer, Record: the calls, through Module's one hook point (nn.module.observing)
    equations.py    the rule that reads a call's equation from its Module's docstring
    stats.py        summary statistics, histograms, saturation
    step.py         trace_step, Trace: one training step and the optimizer phase from AdamW's state
    terminal.py     the tables;  html.py: the self-contained page
    torch_twin.py   the PyTorch twin;  compare.py: compare_with_torch, tensor by tensor
    health.py       Health: training health in log.jsonl (npgpt train --health-every N)
    plot.py         plot_run: `npgpt plot RUN` (matplotlib)

What `npgpt trace` traces (a new model, or a checkpoint's run and its next batch) is a run:
npgpt.runs.trace.
"""

from .compare import compare_with_torch
from .equations import equation
from .health import Health
from .html import render_html, write_html
from .step import Trace, trace_step
from .terminal import render_terminal
from .tracer import Record, Tracer

__all__ = ["Record", "Tracer", "Trace", "trace_step", "equation", "render_terminal", "render_html",
           "write_html", "compare_with_torch", "Health"]
