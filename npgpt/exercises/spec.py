"""What an exercise is: a template, hints, a reference, and a catalogue of classic mistakes.

Each exercise has a template file (templates/<name>.py: the forward written, the backward left
to write, and <name>_inputs(rng), the inputs it is checked on), copied into the student's
workspace. Everything here is written against the template's cache, so that a wrong backward
from the catalogue and the student's own can be run on the same inputs and compared.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

TEMPLATES = Path(__file__).resolve().parent / "templates"


@dataclass(frozen=True)
class Mistake:
    """A real wrong backward that people write, and the hint that leads out of it."""
    name: str            # what went wrong, in a few words ("dropped the mean term")
    hint: str            # where to look, without the formula
    backward: Callable   # the wrong backward (or update), on the template's cache


@dataclass(frozen=True)
class Exercise:
    """One layer to differentiate (or, kind="update", one optimizer step to write)."""
    name: str                      # the functions are <name>_forward, <name>_backward, <name>_inputs
    title: str                     # one line for the list
    hints: tuple[str, ...]         # in steps, the formula last
    mistakes: tuple[Mistake, ...]  # at least three
    reference: Callable            # npgpt's backward that solves it, on the template's cache
    sources: tuple[Callable, ...]  # what `npgpt exercise solution` prints: npgpt's own code
    npgpt_pair: tuple[Callable, Callable] | None = None   # npgpt's (forward, backward), when the
                                                          # template's cache is not npgpt's
    kind: str = "gradient"         # "gradient": checked against central differences;
                                   # "update": against the reference update, step by step
    kinked: bool = False           # a kink (ReLU): gradcheck.TOLERANCES["kinked"]

    @property
    def template(self) -> Path:
        return TEMPLATES / f"{self.name}.py"

    @property
    def function(self) -> str:
        """The name of the function the student writes."""
        return "adamw_update" if self.kind == "update" else f"{self.name}_backward"
