"""The cost of Module's one hook point (npgpt.nn.module.observing) when no tracer is active.

    python benchmarks/bench_trace_hook.py                  # baby GPT step, 40 rounds of 5 steps
    python benchmarks/bench_trace_hook.py --rounds 10 --steps 3

Every forward and backward a Module subclass defines is wrapped once, at class creation, so
that a call first reads the module-level slot `_observer`; with no tracer it is None and the
wrapper calls the method at once. This script times a baby training step (4 layers, 128 wide,
B=12, T=64, float32: forward with targets, zero_grad, backward, clip, AdamW) with the wrappers
("hooked", the code as it is) and with every class's original methods put back for the
duration of a round ("bare": the code before the hook existed), in the same process,
alternating round by round so that the machine's load hits both alike. It reports the median
step of each and the median of the rounds' ratios; then, since on a loaded machine that ratio is
noise, the cost of one call measured directly (the cheapest module call, hooked and bare, best
of several runs) times the wrapped calls per step.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
import timeit
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # a checkout runs this uninstalled

from npgpt import GPT, GPTConfig, kernels, nn  # noqa: E402
from npgpt.optim import AdamW, clip_grad_norm  # noqa: E402


def _classes():
    out, todo = [], [nn.Module]
    while todo:
        for sub in todo.pop().__subclasses__():
            todo.append(sub)
            out.append(sub)
    return out


@contextlib.contextmanager
def bare():
    """Every subclass's own forward/backward replaced by the method it wraps, then restored."""
    saved = []
    for cls in _classes():
        for phase in ("forward", "backward"):
            wrapped = cls.__dict__.get(phase)
            if hasattr(wrapped, "__wrapped__"):
                saved.append((cls, phase, wrapped))
                setattr(cls, phase, wrapped.__wrapped__)
    try:
        yield len(saved)
    finally:
        for cls, phase, wrapped in saved:
            setattr(cls, phase, wrapped)


def steps(model, opt, batch, n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        model.forward(*batch)
        opt.zero_grad()
        model.backward()
        clip_grad_norm(opt, 1.0)
        opt.step()
        times.append(time.perf_counter() - t0)
    return times


def count_calls(model, batch) -> int:
    """Wrapped calls in one step (forward and backward), counted by an observer."""
    class Counter:
        n = 0

        def call(self, module, phase, method, args, kwargs):
            Counter.n += 1
            return method(module, *args, **kwargs)
    with nn.module.observing(Counter()):
        model.forward(*batch)
        model.backward()
    return Counter.n


def per_call_ns(repeat: int = 7, number: int = 200_000) -> tuple[float, float]:
    """(hooked, bare) ns per call of the cheapest module call there is, an identity Dropout's
    forward: the best of `repeat` runs of `number` calls, so that load on the machine cancels."""
    drop, x = nn.Dropout(0.0), np.zeros(1)
    best = {}
    for kind in ("hooked", "bare"):
        with (bare() if kind == "bare" else contextlib.nullcontext()):
            best[kind] = min(timeit.repeat(lambda: drop.forward(x), repeat=repeat, number=number)) / number
    return best["hooked"] * 1e9, best["bare"] * 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()
    model = GPT(GPTConfig.preset("baby"), seed=0)
    opt = AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 65, (12, 64))
    batch = (idx, np.roll(idx, -1, axis=1))
    steps(model, opt, batch, 3)                                   # compile / load the kernels
    hooked, plain, ratios = [], [], []
    for r in range(args.rounds):
        order = ("hooked", "bare") if r % 2 == 0 else ("bare", "hooked")
        got = {}
        for kind in order:
            with (bare() if kind == "bare" else contextlib.nullcontext()):
                got[kind] = statistics.median(steps(model, opt, batch, args.steps))
        hooked.append(got["hooked"])
        plain.append(got["bare"])
        ratios.append(got["hooked"] / got["bare"])
    with bare() as n_wrapped:
        pass
    print(f"baby GPT step (B=12, T=64, float32, backend {kernels.current_backend()}), {args.rounds} rounds "
          f"of {args.steps} steps, alternating; {n_wrapped} wrapped methods")
    print(f"  hooked (no tracer active): median step {statistics.median(hooked) * 1e3:.2f} ms")
    print(f"  bare (methods unwrapped):  median step {statistics.median(plain) * 1e3:.2f} ms")
    q = statistics.quantiles(ratios, n=4)
    print(f"  hooked / bare, median of the rounds' ratios: {statistics.median(ratios):.4f} "
          f"(quartiles {q[0]:.4f} .. {q[2]:.4f})")
    h, b = per_call_ns()
    calls = count_calls(model, batch)
    print(f"  one call, best of 7 x 200,000: hooked {h:.0f} ns, bare {b:.0f} ns: the hook adds {h - b:.0f} ns "
          f"a call, {calls * (h - b) / 1e3:.1f} us a step = {calls * (h - b) * 1e-9 / statistics.median(plain):.2e} "
          f"of the bare median step")


if __name__ == "__main__":
    main()
