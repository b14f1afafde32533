"""Saying why a check failed: which gradient, where its worst elements are, what the pattern
looks like (a constant factor, zeros), and which catalogued mistake it is, if any.

A mistake is recognised by running its wrong backward on the same inputs and the same upstream
gradient as the student's, and finding the student's gradient equal to it.
"""

from __future__ import annotations

import textwrap

import numpy as np

from .. import gradcheck
from .checker import Result, Tensor, per_input

MATCH = 1e-6        # the student's gradient "is" a mistake's when they agree this closely


def worst_elements(t: Tensor, k: int = 3) -> list[str]:
    """The k elements with the largest element-wise error: index, yours, numerical."""
    errs = gradcheck.elementwise_errors(t.analytic, t.numeric)
    lines = []
    for flat in np.argsort(errs, axis=None)[::-1][:k]:
        at = np.unravel_index(flat, errs.shape)
        index = "[" + ", ".join(str(int(i)) for i in at) + "]"
        lines.append(f"    {index:<12} yours {t.analytic[at]: .6f}   {t.against} {t.numeric[at]: .6f}")
    return lines


def pattern(t: Tensor) -> str | None:
    """A plain-words description of how the two gradients differ, when there is a simple one."""
    if t.analytic.ndim == 2 and t.analytic.shape[0] == t.analytic.shape[1] \
            and gradcheck.rel_error(t.analytic, t.numeric.T) <= 1e-6:
        return f"yours is the {t.against} one transposed"
    a, b = t.analytic.ravel(), t.numeric.ravel()
    big = np.abs(b) > 1e-3 * np.abs(b).max(initial=0.0)
    if not big.any():
        return None
    ratio = a[big] / b[big]
    if np.ptp(ratio) <= 1e-6 * max(1.0, abs(ratio.mean())):
        c = float(ratio.mean())
        if abs(c) < 1e-12:
            return f"yours is 0 everywhere the {t.against} one is not"
        return f"yours is {c:.6g} times the {t.against} one, everywhere: a factor missing or extra"
    zeros = int(np.sum((a == 0) & big))
    if zeros:
        return f"yours is 0 at {zeros} of the {int(big.sum())} elements where the {t.against} one is not"
    return None


def explain(t: Tensor) -> list[str]:
    """The lines that say what is wrong with one failed tensor."""
    if t.problem:
        return [t.problem]
    r = t.row
    lines = [f"{t.label} is wrong: rel. error {r['error']:.2e} (norm-wise), elem. error "
             f"{r['element_error']:.2e} (worst element); the worst elements:"]
    lines += worst_elements(t)
    said = pattern(t)
    if said:
        lines.append(f"  {said}")
    return lines


def matching_mistakes(result: Result, outputs) -> dict[str, list]:
    """{failed tensor name: [Mistake]} for the catalogued mistakes that compute the student's
    gradient. outputs(mistake) -> {tensor key: array} runs the mistake on the same inputs."""
    failed = [t for t in result.tensors if not t.row["passed"] and t.analytic is not None]
    found = {t.name: [] for t in failed}
    for mistake, theirs in outputs:
        for t in failed:
            g = theirs.get(t.key)
            if isinstance(g, np.ndarray) and g.shape == t.analytic.shape and np.all(np.isfinite(g)) \
                    and gradcheck.rel_error(t.analytic, g) <= MATCH:
                found[t.name].append(mistake)
    return {name: ms for name, ms in found.items() if ms}


def gradient_outputs(mistakes, forward, result: Result):
    """(mistake, {input position: gradient}) for each mistake that runs on these inputs."""
    _, cache = forward(*result.fresh_inputs())
    for mistake in mistakes:
        try:
            grads = per_input(mistake.backward(result.dout, cache), result.inputs, mistake.name, "")
        except Exception:          # a mistake that cannot run on these inputs explains nothing
            continue
        yield mistake, dict(enumerate(grads))


def report(result: Result, matches: dict | None = None, catalogued: int | None = None) -> list[str]:
    """Everything to say about a failed result: each wrong tensor, then the known mistakes that
    compute it (catalogued: how many the exercise has, to say when none matched)."""
    lines = []
    for t in result.tensors:
        if not t.row["passed"]:
            lines += [""] + explain(t)
    matches = matches or {}
    named = {}
    for name, mistakes in matches.items():
        for m in mistakes:
            named.setdefault(m, []).append(name)
    by_name = {t.name: t for t in result.tensors}
    for m, tensors in named.items():
        which = ", ".join(by_name[n].label for n in tensors)
        lines += ["", f"This is a known mistake ({which}): {m.name}.",
                  textwrap.fill(f"Hint: {m.hint}", 100, initial_indent="  ", subsequent_indent="        ")]
    unexplained = [t.label for t in result.tensors if not t.row["passed"] and t.name not in matches]
    if catalogued and unexplained:
        lines += ["", f"{', '.join(unexplained)}: none of the {catalogued} catalogued mistakes of "
                      f"this exercise computes this."]
    return lines
