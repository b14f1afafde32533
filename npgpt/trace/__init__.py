"""Trace one training step: every module's call, its shapes, its equation, its gradient.

    from npgpt.trace import Tracer
    with Tracer(model) as t:                 # any forward/backward of any npgpt Module
        logits, loss = model.forward(idx, targets)
        model.backward()
    t.records                                # Records, in the order the calls began

    trace = trace_step(model, batch, optimizer, grad_clip=1.0)   # forward, backward, clip, step
    print(render_terminal(trace, depth=2))   # tables per phase; also write_html, trace.to_dict()

`npgpt trace` (npgpt/cli/trace.py) runs this on a small GPT or Transformer and prints it;
`npgpt train --health-every N` logs its summary numbers during training (health.py), and
`npgpt plot RUN` draws them (plot.py).
"""

from .equations import equation
from .tracer import Record, Tracer

__all__ = ["Record", "Tracer", "equation"]
