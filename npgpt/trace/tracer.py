"""Tracer: a record of every module call, forward and backward, in execution order.

    with Tracer(model) as t:
        logits, loss = model.forward(idx, targets)
        model.backward()
    for r in t.forward:          # then t.backward, in the order the calls began
        print(r.path, r.kind, r.inputs[0]["shape"], "->", r.outputs[0]["shape"], r.equation)

The Tracer sees the calls through Module's one hook point (npgpt.nn.module.observing): inside
the with-block every forward and backward of a module of `model` is recorded, a parent's call to
its child's forward included; outside it nothing is observed and nothing is left behind, also
when the block raises. Only the thread that entered the block is traced.

A record (Record) holds the module's path in the model (`h.0.attn`; "" for the model itself),
its class, how deep the call was nested, the shapes, dtypes and statistics of what went in and
what came out (npgpt.trace.stats), the equation its docstring states for this phase
(npgpt.trace.equations) and, for a backward, the gradient each of its own parameters received
from this call. Tracing reads and never writes: the traced step's numbers equal an untraced
step's bit for bit (tests/test_trace.py).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

from ..nn.module import observing
from .equations import equation
from .stats import describe, saturation, summary


@dataclass
class Record:
    """One call of one module's forward or backward."""

    phase: str              # "forward" | "backward"
    path: str               # the module's name in the model: "h.0.attn"; "" for the model itself
    kind: str               # its class: "MultiHeadAttention"
    depth: int              # 0 for an outermost call, 1 for a call made inside it, ...
    call: int               # how many calls of this module in this phase came before this one
    index: int              # the order in which the calls began (forward and backward together)
    end: int = -1           # the order in which they returned
    inputs: list = field(default_factory=list)    # per argument: stats.summary or stats.describe
    outputs: list = field(default_factory=list)   # per returned value (tuples flattened): summary or None
    equation: list = field(default_factory=list)  # the docstring's lines for this phase
    params: dict = field(default_factory=dict)    # forward: {name: value summary}; backward:
                                                  # {name: summary of the gradient this call added}
    saturation: dict = field(default_factory=dict)   # {statistic: fraction}, see stats.saturation
    seconds: float = 0.0    # wall time of the call, the tracing of its sub-calls left out
    error: str | None = None                      # the exception the call raised, if it did
    diff: list | None = None                      # --compare torch: per output, max |npgpt - torch|
    arrays: list | None = field(default=None, repr=False, compare=False)   # keep=True: the outputs

    @property
    def name(self) -> str:
        """The path, or the class name for the model itself."""
        return self.path or self.kind

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "arrays"}

    @classmethod
    def from_dict(cls, d: dict) -> "Record":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def flatten(value) -> list:
    """The values of a (nested) tuple or list, in order; anything else is one value."""
    if isinstance(value, (tuple, list)):
        return [v for item in value for v in flatten(item)]
    return [value]


def _summary_of(value, hist: bool):
    if value is None:
        return None
    if isinstance(value, (np.ndarray, float, np.floating)):
        s = summary(value)
        if not hist:
            s.pop("hist", None)
        return s
    return describe(value)


class Phases:
    """The records of each phase, in the order the calls began: `forward`, and `backward` (the
    forward's order, reversed). For a holder of `records` (a Tracer, a Trace)."""

    records: list[Record]

    @property
    def forward(self) -> list[Record]:
        return [r for r in self.records if r.phase == "forward"]

    @property
    def backward(self) -> list[Record]:
        return [r for r in self.records if r.phase == "backward"]


class Tracer(Phases):
    """Records every forward and backward call of `model`'s modules inside a with-block.

    model: any npgpt Module; its named_modules give the paths (a module reached under two
        names keeps the first). Calls of modules that are not part of it run untraced, inside
        their caller's record.
    histograms: keep a histogram of every output (and backward parameter gradient); False
        keeps only the summary numbers (cheaper, for training-health logging).
    keep: also keep a copy of every output array (Record.arrays), e.g. to compare with PyTorch.
    """

    def __init__(self, model, *, histograms: bool = True, keep: bool = False):
        self.model = model
        self.histograms, self.keep = histograms, keep
        self.paths = {}
        for path, module in model.named_modules():
            self.paths.setdefault(id(module), path)
        self.param_names = {id(p): name for name, p in model.named_parameters()}
        self.records: list[Record] = []
        self._stack: list = []
        self._counts: dict = {}
        self._ends = 0
        self._thread = None
        self._context = None
        self._overhead = 0.0

    # -- the with-block ------------------------------------------------------------------------

    def __enter__(self) -> "Tracer":
        if self._context is not None:
            raise RuntimeError("Tracer: already tracing: a Tracer's with-block cannot be nested in itself")
        self._thread = threading.get_ident()
        self._context = observing(self)
        self._context.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        context, self._context = self._context, None
        self._stack.clear()
        context.__exit__(*exc)

    # -- the observer protocol (npgpt.nn.module.observing) ---------------------------------------

    def call(self, module, phase: str, method, args: tuple, kwargs: dict):
        """Run method(module, *args, **kwargs) once and return its result, recording the call."""
        path = self.paths.get(id(module))
        top = self._stack[-1] if self._stack else None
        if (path is None or threading.get_ident() != self._thread
                or (top is not None and top[0] is module and top[1] == phase)):   # a super() call
            return method(module, *args, **kwargs)
        start = time.perf_counter()
        rec = self._open(module, phase, path, args, kwargs)
        before = self._grads(module) if phase == "backward" else {}
        self._stack.append((module, phase))
        t0 = time.perf_counter()
        self._overhead += t0 - start
        overhead0 = self._overhead                  # the sub-calls' tracing adds to it
        try:
            result = method(module, *args, **kwargs)
        except BaseException as e:
            rec.error = f"{type(e).__name__}: {e}"
            raise
        finally:
            t1 = time.perf_counter()
            self._stack.pop()
            rec.seconds = (t1 - t0) - (self._overhead - overhead0)
            rec.end, self._ends = self._ends, self._ends + 1
        self._close(rec, module, args, result, before)
        self._overhead += time.perf_counter() - t1
        return result

    def _open(self, module, phase, path, args, kwargs) -> Record:
        key = (path, phase)
        call = self._counts.get(key, 0)
        self._counts[key] = call + 1
        rec = Record(phase=phase, path=path, kind=type(module).__name__, depth=len(self._stack),
                     call=call, index=len(self.records), equation=equation(module, phase))
        rec.inputs = [_summary_of(a, hist=False) for a in (*args, *kwargs.values())]
        self.records.append(rec)
        return rec

    def _grads(self, module) -> dict:
        """Copies of the gradients of module's own trainable parameters, before its backward."""
        return {id(p): p.grad.copy() for p in _own_parameters(module) if p.requires_grad}

    def _close(self, rec: Record, module, args, result, before: dict) -> None:
        values = flatten(result)
        rec.outputs = [_summary_of(v, self.histograms) for v in values]
        if self.keep:
            rec.arrays = [None if v is None else np.array(v, copy=True) for v in values]
        rec.saturation = saturation(module, rec.phase, args, result)
        for p in _own_parameters(module):
            if id(p) not in self.param_names:
                continue
            name = self.param_names[id(p)]
            if rec.phase == "forward":
                rec.params[name] = _summary_of(p.data, hist=False)
            elif id(p) in before:
                rec.params[name] = _summary_of(p.grad - before[id(p)], self.histograms)


def _own_parameters(module) -> list:
    """The Parameters set on module itself (its children's are theirs)."""
    return [p for p in module._parameters.values() if p is not None]
