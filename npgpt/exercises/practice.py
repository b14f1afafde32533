"""Checking an exercise: the student's file against the numerical gradient (or, for AdamW, the
reference update), then the diagnosis against the exercise's catalogue of mistakes.

The inputs are drawn by the pristine template's <name>_inputs (the copy in the workspace may be
edited, the check is not), and the student's forward must still compute the template's function.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import gradcheck
from . import diagnose
from .catalog import EXERCISES, get, number
from .checker import Result, check_function
from .spec import Exercise
from .update import check_update, update_outputs
from .userfile import NotWritten, Unusable, call, load

# exit statuses of `npgpt exercise check`
EXIT = {"pass": 0, "fail": 1, "todo": 1, "error": 2}


@dataclass
class Outcome:
    exercise: Exercise
    status: str                                # "pass", "fail", "todo" (not written), "error"
    lines: list[str] = field(default_factory=list)
    result: Result | None = None
    matches: dict = field(default_factory=dict)

    @property
    def exit_status(self) -> int:
        return EXIT[self.status]


@functools.lru_cache(maxsize=None)
def template_module(name: str):
    """The pristine template, run once: its forward and inputs are the exercise's definition."""
    return load(get(name).template)


def _function(module, name: str, path: Path, ex: Exercise):
    fn = getattr(module, name, None)
    if not callable(fn):
        raise Unusable(f"{path} defines no {name}: expected the function the exercise asks for "
                       f"(a fresh copy: `npgpt exercise start {ex.name} --dir another-folder`)")
    return fn


def _same_forward(ex: Exercise, forward, path: Path) -> str | None:
    """None if the student's forward still computes the template's function on its inputs."""
    pristine = template_module(ex.name)
    draw = getattr(pristine, f"{ex.name}_inputs")
    want = getattr(pristine, f"{ex.name}_forward")(*draw(np.random.default_rng(0)))[0]
    inputs = draw(np.random.default_rng(0))
    got = call(forward, f"{ex.name}_forward", path, *inputs)
    got = got[0] if isinstance(got, tuple) and len(got) == 2 else got
    if np.shape(got) == np.shape(want) and gradcheck.rel_error(got, want) <= 1e-12:
        return None
    return (f"{ex.name}_forward no longer computes the exercise's function (its output differs "
            f"from the template's): the check differentiates your forward, so restore it")


def run_check(ex: Exercise, path: Path, seed: int = 0) -> Outcome:
    """Check the student's file for exercise `ex`; the outcome holds what to print."""
    try:
        module = load(path)
        forward = None if ex.kind == "update" else _function(module, f"{ex.name}_forward", path, ex)
        written = _function(module, ex.function, path, ex)
    except Unusable as e:
        return Outcome(ex, "error", [str(e)])
    return check_with(ex, forward, written, path, seed)


def check_with(ex: Exercise, forward, written, path, seed: int = 0) -> Outcome:
    """Check `written` (the backward, or the update) with `forward` (None for an update) on the
    exercise's inputs, and diagnose a failure against the catalogue."""
    pristine = template_module(ex.name)
    inputs_fn = getattr(pristine, f"{ex.name}_inputs")
    try:
        if ex.kind == "update":
            result = check_update(ex.name, written, inputs_fn, ex.reference, path, seed)
            outputs = update_outputs(ex.mistakes, result.inputs[0])
        else:
            changed = _same_forward(ex, forward, path)
            if changed:
                return Outcome(ex, "fail", [changed])
            tol = gradcheck.TOLERANCES["kinked" if ex.kinked else "smooth"]
            result = check_function(ex.name, forward, written, inputs_fn, path, seed, tol)
            outputs = diagnose.gradient_outputs(ex.mistakes, getattr(pristine, f"{ex.name}_forward"), result)
    except NotWritten as e:
        return Outcome(ex, "todo", [f"{e}: write its body in {path}, then check again. "
                                    f"`npgpt exercise hint {ex.name}` gives a first step."])
    except Unusable as e:
        return Outcome(ex, "error", [str(e)])
    if result.passed:
        return Outcome(ex, "pass", [], result)
    matches = diagnose.matching_mistakes(result, outputs)
    return Outcome(ex, "fail", diagnose.report(result, matches, len(ex.mistakes)), result, matches)


def format_outcome(outcome: Outcome, path: Path, next_ex: Exercise | None) -> str:
    """The text `npgpt exercise check` prints."""
    ex = outcome.exercise
    lines = [f"Exercise {number(ex.name)}/{len(EXERCISES)}: {ex.name} -- {ex.title}   ({path})", ""]
    if outcome.result is not None:
        lines.append(gradcheck.format_table(outcome.result.rows))
        lines += [f"note: {n}" for n in outcome.result.notes]
    lines += outcome.lines
    lines.append("")
    if outcome.status == "pass":
        what = "the reference update" if ex.kind == "update" else "the numerical gradient"
        lines.append(f"PASS: {ex.function} agrees with {what}.")
        lines.append(f"Next: npgpt exercise start {next_ex.name}" if next_ex else
                     "That was the last exercise: every one passes.")
    elif outcome.status == "fail":
        wrong = sum(not r["passed"] for r in outcome.result.rows) if outcome.result else 0
        total = len(outcome.result.rows) if outcome.result else 0
        lines.append(f"FAIL: {wrong} of {total} tensors wrong. `npgpt exercise hint {ex.name}` gives a hint."
                     if total else f"FAIL. `npgpt exercise hint {ex.name}` gives a hint.")
    elif outcome.status == "error":
        lines.append("ERROR: the file could not be checked (above: where, and what was expected).")
    return "\n".join(lines)
