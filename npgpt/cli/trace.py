"""`npgpt trace`: one training step of a small GPT or Transformer, every tensor, its shape, its
equation and its gradient (npgpt.trace); its flags are TraceConfig's fields."""

from __future__ import annotations

import json
import os
import sys

from ..files import write_atomic
from ..trace.html import write_html
from ..runs.trace import TraceConfig, run as run_trace
from ..trace.terminal import render_terminal
from .flags import add_config_flags, config_flags


def add(sub) -> None:
    p = sub.add_parser("trace", help="trace one training step: every tensor, its shape, its equation, "
                                     "its gradient",
                       description="Run one training step (forward, backward, gradient clipping, AdamW) "
                                   "of a small GPT on the built-in corpus (or of the encoder-decoder "
                                   "Transformer, or of a checkpoint) and show every module call in the "
                                   "order it ran: shapes, statistics, the equation from the layer's "
                                   "docstring, the gradients, and what AdamW did to each weight. As "
                                   "tables (--depth folds sub-modules), an HTML page (--html) or JSON "
                                   "(--json); --compare torch runs the same step in PyTorch.")
    add_config_flags(p, TraceConfig)
    p.set_defaults(run=run)


def run(args) -> int:
    try:
        cfg = TraceConfig(**config_flags(args, TraceConfig))
        trace = run_trace(cfg)
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] != "torch":       # not PyTorch: a real bug, shown in full
            raise
        print("npgpt trace: error: --compare torch needs PyTorch, which is not installed: pip install torch",
              file=sys.stderr)
        return 2
    except (ValueError, TypeError, OSError, RuntimeError, KeyError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"npgpt trace: error: {message}", file=sys.stderr)
        return 2
    text = json.dumps(trace.to_dict())
    done = sys.stderr if cfg.json == "-" else sys.stdout
    try:
        print(text if cfg.json == "-" else render_terminal(trace, cfg.depth), flush=True)
    except BrokenPipeError:                    # `npgpt trace | head`: the reader has had enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    try:
        if cfg.json not in (None, "-"):
            write_atomic(cfg.json, (text + "\n").encode("utf-8"))
            print(f"\nwrote the trace as JSON to {cfg.json}", file=done)
        if cfg.html is not None:
            write_html(trace, cfg.html)
            print(f"wrote the trace as an HTML page to {cfg.html}", file=done)
    except OSError as e:
        print(f"npgpt trace: error: {e}", file=sys.stderr)
        return 2
    return 0
