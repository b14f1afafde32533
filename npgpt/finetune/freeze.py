"""Freezing: train only some parameters of a model, chosen by parameter-name prefix.

    freeze(model, "wte", "wpe", "h.0")        the embeddings and block 0 stay bit for bit
    freeze_blocks(model, 0, 2)                blocks 0 and 1 (Python's range)
    unfreeze(model)                           everything trains again
    frozen_below(model)                       how many bottom blocks the backward may skip

Frozen means `Parameter.requires_grad = False`: the optimizer leaves the parameter out (so freeze
*before* building the optimizer), Linear and Embedding skip the work that would only produce its
gradient, and `gpt.backward(frozen_below=frozen_below(gpt))` does not even run the backward of
the frozen bottom of the network (below the lowest block that has something to train).
"""

from __future__ import annotations

import numpy as np

from ..models.gpt import GPT
from ..nn import Module


def gpt_of(model) -> tuple[GPT, str]:
    """(the GPT inside `model`, the prefix of its parameter names in `model`): a GPT itself, or
    a model that holds one as .gpt (a GPTClassifier)."""
    if isinstance(model, GPT):
        return model, ""
    if isinstance(getattr(model, "gpt", None), GPT):
        return model.gpt, "gpt."
    raise TypeError(f"model is a {type(model).__name__}: expected a GPT or a GPTClassifier")


def _set_trainable(model: Module, prefixes, flag: bool, where: str) -> int:
    """Set requires_grad = flag on the parameters whose name is a prefix or starts with
    prefix + "." (so "h.1" is block 1, not block 10); no prefix means every parameter.
    Every prefix is checked before anything changes. Returns the trainable count afterwards."""
    named = list(model.named_parameters())
    chosen = []
    for prefix in prefixes:
        if not isinstance(prefix, str) or not prefix.strip("."):
            raise TypeError(f"{where}: prefix {prefix!r}: expected a parameter-name prefix such as "
                            f"'wte' or 'h.0'")
        prefix = prefix.rstrip(".")
        hits = [p for name, p in named if name == prefix or name.startswith(prefix + ".")]
        if not hits:
            tops = list(dict.fromkeys(_top_prefix(name) for name, _ in named))
            raise ValueError(f"{where}: prefix {prefix!r} matches no parameter of this "
                             f"{type(model).__name__}: expected a prefix of its parameter names, "
                             f"such as {tops[:8]}{' ...' if len(tops) > 8 else ''}")
        chosen += hits
    for p in chosen if prefixes else [p for _, p in named]:
        p.requires_grad = flag
    return model.num_parameters(trainable_only=True)


def _top_prefix(name: str) -> str:
    """The short prefix that names a parameter's part of a GPT: "wte", "h.3", "ln_f", "gpt.h.0"."""
    out = []
    for part in name.split(".")[:-1] or [name]:
        out.append(part)
        if part not in ("gpt", "h"):
            break
    return ".".join(out)


def freeze(model: Module, *prefixes: str) -> int:
    """Freeze the parameters whose names start with any of `prefixes` ("wte", "wpe", "h.0",
    "h.3.attn", "ln_f", ...; in a GPTClassifier the GPT's names start with "gpt."), or every
    parameter if none is given. A prefix that matches nothing is an error that names it.

    Frozen parameters are never changed by an optimizer built afterwards, and receive no gradient.
    Returns the number of trainable parameters left.
    """
    return _set_trainable(model, prefixes, False, "freeze")


def unfreeze(model: Module, *prefixes: str) -> int:
    """The inverse of freeze (every parameter if no prefix is given). Build the optimizer after.
    Returns the number of trainable parameters."""
    return _set_trainable(model, prefixes, True, "unfreeze")


def freeze_blocks(model, start: int, stop: int) -> int:
    """Freeze the Transformer blocks start .. stop-1 of a GPT (or of a GPTClassifier's GPT), as
    Python's range(start, stop). Returns the number of trainable parameters left."""
    gpt, prefix = gpt_of(model)
    n = len(gpt.h)
    for name, v in (("start", start), ("stop", stop)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"freeze_blocks: {name}={v!r}: expected an int")
    if not 0 <= start < stop <= n:
        raise ValueError(f"freeze_blocks: blocks {start}..{stop - 1} (start={start}, stop={stop}): "
                         f"expected 0 <= start < stop <= n_layer={n}")
    return freeze(model, *(f"{prefix}h.{i}" for i in range(start, stop)))


def frozen_below(model) -> int:
    """The number of bottom blocks of a GPT (or a GPTClassifier's GPT) that hold nothing
    trainable, with nothing trainable below them either (the embeddings frozen too): what
    GPT.backward(frozen_below=...) may skip. 0 when the embeddings train; n_layer when no block
    does (the backward then stops at ln_f)."""
    gpt, _ = gpt_of(model)
    trains = lambda m: any(p.requires_grad for p in m.parameters())      # noqa: E731
    if trains(gpt.wte) or trains(gpt.wpe):
        return 0
    return next((i for i, block in enumerate(gpt.h) if trains(block)), len(gpt.h))
