"""The exercises, in teaching order: every layer the seed article's models use, then AdamW."""

from __future__ import annotations

from .adamw import ADAMW
from .attention import ATTENTION, MULTIHEAD_ATTENTION
from .layers import DROPOUT, GELU_TANH, LINEAR, RELU, SOFTMAX
from .losses import CROSS_ENTROPY, CROSS_ENTROPY_SMOOTHED
from .model import RESIDUAL, TIED_HEAD
from .norm_embedding import EMBEDDING, LAYERNORM
from .spec import Exercise

EXERCISES: tuple[Exercise, ...] = (
    LINEAR, RELU, GELU_TANH, SOFTMAX, CROSS_ENTROPY, CROSS_ENTROPY_SMOOTHED, LAYERNORM, EMBEDDING,
    DROPOUT, ATTENTION, MULTIHEAD_ATTENTION, RESIDUAL, TIED_HEAD, ADAMW,
)


def names() -> list[str]:
    return [e.name for e in EXERCISES]


def get(name: str) -> Exercise:
    """The exercise called `name`; a ValueError that lists the names otherwise."""
    for e in EXERCISES:
        if e.name == name:
            return e
    raise ValueError(f"no exercise {name!r}: expected one of {', '.join(names())}")


def number(name: str) -> int:
    """1 for the first exercise, ...: the order in which they are taught."""
    return names().index(name) + 1


def mistake_count() -> int:
    return sum(len(e.mistakes) for e in EXERCISES)
