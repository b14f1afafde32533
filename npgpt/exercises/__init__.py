"""Gradient-checking exercises: derive a backward, check it, learn from the mistake.

One exercise per layer of the models, in teaching order (catalog.EXERCISES), each a template
file for the student's workspace (templates/), hints in steps, npgpt's own code as the
reference, and a catalogue of classic mistakes that a failed check is diagnosed against.
The same checker runs any user's file (`npgpt gradcheck --file`, filecheck.py).

    catalog      the exercises in order; spec: what an exercise and a mistake are
    layers, losses, norm_embedding, attention, model, adamw    the exercises and their mistakes
    reference    npgpt's solutions where a template keeps a cache of its own
    userfile     loading a user's file and calling it, errors told in the user's terms
    checker      a backward against central differences; update: an optimizer step
    diagnose     worst elements, patterns, the catalogued mistake it is
    practice     checking an exercise; workspace: files and progress; command: the CLI
"""

from .catalog import EXERCISES, get, mistake_count
from .spec import Exercise, Mistake

__all__ = ["EXERCISES", "Exercise", "Mistake", "get", "mistake_count"]
