"""Fine-tuning a pretrained GPT: freezing, LoRA adapters, a classification head, data, evaluation.

Three ways to adapt a language model to a new task, which combine:

    freeze(model, "wte", "wpe", "h.0")        train only some parameters (continue pre-training
                                              the top of the network; the rest stays bit for bit)
    add_lora(model, rank=8, alpha=16)         train a low-rank update of every attention and MLP
                                              weight instead of the weight itself (Hu et al., 2021)
    GPTClassifier(model, n_classes=2)         read a class off the last token's hidden state
                                              (Radford et al., 2018: GPT-1's fine-tuning)

Frozen means `Parameter.requires_grad = False`: the optimizer leaves the parameter out of its flat
buffer (so freeze, or add LoRA, *before* building the optimizer), Linear and Embedding skip the
work that would only produce its gradient, and GPT.backward_hidden stops at the lowest block that
still has something to train.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import tempfile
import types
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .. import kernels
from ..models.gpt import GPT
from ..nn import CrossEntropyLoss, Linear, Module, Parameter
from ..nn.dropout import dropout_backward, dropout_forward
from ..nn.validate import check_array, check_ids

__all__ = ["freeze", "unfreeze", "freeze_blocks", "LoRALinear", "lora_forward", "lora_backward",
           "add_lora", "merge_lora", "lora_state_dict", "load_lora_state_dict", "save_lora",
           "load_lora", "GPTClassifier", "last_token_index", "next_token_targets",
           "ClassificationData", "load_classification_file", "shuffled_words_task",
           "encode_texts", "classification_batches", "classification_report", "format_report",
           "evaluate"]


def _gpt_of(model) -> tuple[GPT, str]:
    """(the GPT inside `model`, the prefix of its parameter names in `model`)."""
    if isinstance(model, GPT):
        return model, ""
    if isinstance(model, GPTClassifier):
        return model.gpt, "gpt."
    raise TypeError(f"model is a {type(model).__name__}: expected a GPT or a GPTClassifier")


# ---------------------------------------------------------------------------------------------
# Freezing
# ---------------------------------------------------------------------------------------------


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
    gpt, prefix = _gpt_of(model)
    n = len(gpt.h)
    for name, v in (("start", start), ("stop", stop)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"freeze_blocks: {name}={v!r}: expected an int")
    if not 0 <= start < stop <= n:
        raise ValueError(f"freeze_blocks: blocks {start}..{stop - 1} (start={start}, stop={stop}): "
                         f"expected 0 <= start < stop <= n_layer={n}")
    return freeze(model, *(f"{prefix}h.{i}" for i in range(start, stop)))


# ---------------------------------------------------------------------------------------------
# LoRA: a trainable low-rank update beside a frozen Linear
# ---------------------------------------------------------------------------------------------


class LoRACache(NamedTuple):
    u: np.ndarray                # dropout(x): (..., in); x itself without dropout
    mask: np.ndarray | None      # the scaled dropout mask, None without dropout
    z: np.ndarray                # u @ A: (..., r)
    a: np.ndarray                # A: (in, r)
    b: np.ndarray                # B: (r, out)
    scale: float                 # alpha / r


def lora_forward(x, a, b, scale: float, p: float = 0.0, rng=None, train: bool = True):
    """The low-rank update that LoRA adds to a frozen Linear's output (Hu et al., 2021).

        u = dropout(x)             (..., in)     dropout on the adapter's input only
        z = u @ A                  (..., r)      A: (in, r)
        y = scale * (z @ B)        (..., out)    B: (r, out),  scale = alpha / r

    so the layer computes x W + b + scale * dropout(x) A B, a rank-r change of W that costs
    r (in + out) parameters instead of in * out. Dividing by r keeps the size of the update
    about the same when r changes, so alpha need not be re-tuned.
    cache: LoRACache(u, mask, z, a, b, scale).
    """
    u, mask = dropout_forward(x, p, rng, train)
    matmul = kernels.get("matmul")
    z = matmul(u, a)
    y = matmul(z, b)
    y *= y.dtype.type(scale)
    return y, LoRACache(u, mask, z, a, b, scale)


def lora_backward(dout, cache: LoRACache, need_dx: bool = True):
    """Gradients of lora_forward: (dx, dA, dB); dx is None when need_dx is False.

        (rows flattened: U: (N, in), Z: (N, r), dY: (N, out))
        forward: y = s * z @ B     ->  dB = s * Z^T @ dY     (r, out)
                                       dz = s * dY @ B^T     (..., r)
        forward: z = u @ A         ->  dA = U^T @ dZ         (in, r)
                                       du = dz @ A^T         (..., in)
        forward: u = dropout(x)    ->  dx = du * mask
    With B = 0 (LoRA's initialisation) dz and so dA are 0: only B moves on the first step.
    """
    u, mask, z, a, b, scale = cache
    matmul = kernels.get("matmul")
    s = dout.dtype.type(scale)
    dout2 = dout.reshape(-1, dout.shape[-1])                    # (..., out) -> (N, out)
    z2 = z.reshape(-1, z.shape[-1])                             # (..., r) -> (N, r)
    db = matmul(z2.T, dout2)
    db *= s
    dz = matmul(dout2, b.T)                                     # (N, r)
    dz *= s
    da = matmul(u.reshape(-1, u.shape[-1]).T, dz)               # (in, N) @ (N, r)
    if not need_dx:
        return None, da, db
    du = matmul(dz, a.T).reshape(u.shape)                       # (N, in) -> (..., in)
    return dropout_backward(du, mask), da, db


def _check_rank(rank, base: Linear, where: str) -> int:
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 1:
        raise ValueError(f"{where}: rank={rank!r}: expected a positive int")
    limit = min(base.in_features, base.out_features)
    if rank > limit:
        raise ValueError(f"{where}: rank={rank} is larger than the layer ({base.in_features} -> "
                         f"{base.out_features}): expected 1 <= rank <= min(in, out) = {limit}")
    return int(rank)


def _check_lora_args(alpha, dropout, where: str) -> None:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.number)) \
            or not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"{where}: alpha={alpha!r}: expected a finite number > 0")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float, np.number)) \
            or not 0.0 <= dropout < 1.0:
        raise ValueError(f"{where}: dropout={dropout!r}: expected a probability in [0, 1)")


class LoRALinear(Module):
    """A frozen Linear plus a trainable low-rank update (see lora_forward):

        y = x @ W + b + (alpha / r) * dropout(x) @ A @ B

    A: (in, r) ~ U(-1/sqrt(in), 1/sqrt(in)) (torch's and PEFT's Kaiming-uniform with a = sqrt(5));
    B: (r, out) = 0, so the wrapped layer starts as the Linear it wraps, exactly.

    The wrapper holds the base Linear's own `weight` and `bias` Parameters (the same objects, now
    frozen) under the same names, so a model's parameter names only gain `lora_A` and `lora_B`:
    h.0.attn.c_attn.weight stays h.0.attn.c_attn.weight. `merge()` folds the update into W and
    returns the plain Linear.
    """

    def __init__(self, base: Linear, rank: int, alpha: float = 16.0, dropout: float = 0.0,
                 rng: np.random.Generator | None = None):
        super().__init__()
        if not isinstance(base, Linear):
            raise TypeError(f"LoRALinear: base is a {type(base).__name__}: expected an npgpt.nn.Linear")
        self.rank = _check_rank(rank, base, "LoRALinear")
        _check_lora_args(alpha, dropout, "LoRALinear")
        rng = rng if rng is not None else np.random.default_rng(0)
        object.__setattr__(self, "base", base)        # not a child: its Parameters are ours below
        self.in_features, self.out_features = base.in_features, base.out_features
        self.alpha, self.dropout, self.scale = float(alpha), float(dropout), float(alpha) / self.rank
        self.weight, self.bias = base.weight, base.bias
        for p in (base.weight, base.bias):
            if p is not None:
                p.requires_grad = False
        dt = base.weight.dtype
        bound = 1.0 / math.sqrt(self.in_features)
        self.lora_A = Parameter(rng.uniform(-bound, bound, (self.in_features, self.rank)).astype(dt))
        self.lora_B = Parameter(np.zeros((self.rank, self.out_features), dtype=dt))
        self.rng = rng.spawn(1)[0]                    # the adapter dropout's masks
        self._cache = None

    def forward(self, x):
        y = self.base.forward(x)                                      # x W + b (checks x)
        delta, self._cache = lora_forward(x, self.lora_A.data, self.lora_B.data, self.scale,
                                          self.dropout, self.rng, self.training)
        y += delta
        return y

    def backward(self, dout, need_dx: bool = True):
        dx = self.base.backward(dout, need_dx=need_dx)                # frozen W: dx only
        dx_lora, da, db = lora_backward(dout, self._cache, need_dx)
        if self.lora_A.requires_grad:
            self.lora_A.grad += da
        if self.lora_B.requires_grad:
            self.lora_B.grad += db
        if not need_dx:
            return None
        dx += dx_lora                       # the input feeds both paths: the gradients add
        return dx

    def merge(self) -> Linear:
        """W <- W + (alpha / r) A B, in place; returns the base Linear (which now computes what
        this wrapper computed, without dropout)."""
        matmul = kernels.get("matmul")
        self.weight.data += self.weight.dtype.type(self.scale) * matmul(self.lora_A.data, self.lora_B.data)
        return self.base

    def extra_repr(self):
        return (f"{self.in_features}, {self.out_features}, rank={self.rank}, alpha={self.alpha:g}, "
                f"dropout={self.dropout:g}")


# The Linears of a GPT block that add_lora can wrap, by target name.
LORA_TARGETS = {"attn": ("attn.c_attn", "attn.c_proj"), "mlp": ("mlp.c_fc", "mlp.c_proj")}


def _lora_paths(targets) -> list[str]:
    """("attn", "mlp.c_fc") -> ["attn.c_attn", "attn.c_proj", "mlp.c_fc"]: block-relative paths."""
    if isinstance(targets, str):
        targets = (targets,)
    known = [*LORA_TARGETS, *(p for paths in LORA_TARGETS.values() for p in paths)]
    paths = []
    for t in targets:
        if t not in known:
            raise ValueError(f"add_lora: target {t!r} is unknown: expected some of {known}")
        for p in LORA_TARGETS.get(t, (t,)):
            if p not in paths:
                paths.append(p)
    if not paths:
        raise ValueError("add_lora: targets is empty: expected some of ('attn', 'mlp')")
    return paths


def _lora_layers(gpt: GPT) -> list[tuple[str, LoRALinear]]:
    return [(name, m) for name, m in gpt.named_modules() if isinstance(m, LoRALinear)]


def _parent(root: Module, path: str) -> tuple[Module, str]:
    *parents, attr = path.split(".")
    for name in parents:
        root = getattr(root, name)
    return root, attr


def _replace_child(root: Module, path: str, new: Module) -> None:
    """Put `new` where the child at `path` was, keeping the order of the parent's children (so
    named_parameters and state_dict keep their order)."""
    parent, attr = _parent(root, path)
    order = list(parent._modules)
    setattr(parent, attr, new)
    for name in order:
        parent._modules.move_to_end(name)


def add_lora(model, rank: int = 8, alpha: float = 16.0, dropout: float = 0.0,
             targets=("attn", "mlp"), seed: int = 0) -> int:
    """Wrap the attention (c_attn, c_proj) and/or MLP (c_fc, c_proj) Linears of every block in a
    LoRALinear, and freeze every other parameter of the GPT: afterwards only the adapters train
    (and, for a GPTClassifier, its new head). Binds `model.merge_lora()`.

    targets: "attn", "mlp", or single layers "attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj".
    seed: the adapters' A initialisation and dropout masks.
    Every layer's rank limit is checked before anything changes. Returns the number of trainable
    parameters of `model`: r (in + out) per wrapped layer, plus the head if there is one.
    """
    gpt, _ = _gpt_of(model)
    if _lora_layers(gpt):
        raise ValueError("add_lora: the model already has LoRA adapters: expected a model without "
                         "them (merge_lora(model) first to stack a new set)")
    paths = _lora_paths(targets)
    _check_lora_args(alpha, dropout, "add_lora")
    sites = [(block, path) for block in gpt.h for path in paths]
    for i, (block, path) in enumerate(sites):
        parent, attr = _parent(block, path)
        _check_rank(rank, getattr(parent, attr), f"add_lora: layer h.{i // len(paths)}.{path}")
    freeze(gpt)
    rng = np.random.default_rng(seed)
    for (block, path), layer_rng in zip(sites, rng.spawn(len(sites))):
        parent, attr = _parent(block, path)
        _replace_child(block, path, LoRALinear(getattr(parent, attr), rank, alpha, dropout, layer_rng))
    settings = {"rank": int(rank), "alpha": float(alpha), "dropout": float(dropout), "targets": paths}
    object.__setattr__(gpt, "lora_config", settings)
    for m in {id(gpt): gpt, id(model): model}.values():
        object.__setattr__(m, "merge_lora", types.MethodType(merge_lora, m))
    return model.num_parameters(trainable_only=True)


def merge_lora(model) -> int:
    """Fold every adapter into its weight (W <- W + (alpha / r) A B) and put the plain Linears
    back: the model computes the same function (without adapter dropout) with no extra cost.
    The merged weights keep requires_grad as they were (frozen by add_lora): unfreeze(model) to
    train them. Returns the number of layers merged."""
    gpt, _ = _gpt_of(model)
    layers = _lora_layers(gpt)
    if not layers:
        raise ValueError("merge_lora: the model has no LoRA adapters: expected add_lora(model) first")
    for name, layer in layers:
        _replace_child(gpt, name, layer.merge())
    for m in (gpt, model):
        m.__dict__.pop("merge_lora", None)
        m.__dict__.pop("lora_config", None)
    return len(layers)


def _adapter_names(model) -> list[str]:
    """The parameters LoRA fine-tuning produces: every lora_A / lora_B, and a classifier's head."""
    return [name for name, _ in model.named_parameters()
            if name.endswith((".lora_A", ".lora_B")) or
            (isinstance(model, GPTClassifier) and name.startswith("head."))]


def lora_state_dict(model) -> "OrderedDict[str, np.ndarray]":
    """{name: copy} of the adapters (and a GPTClassifier's head): what a LoRA fine-tune changed,
    a small fraction of the model. The frozen base weights are not in it."""
    gpt, _ = _gpt_of(model)
    if not _lora_layers(gpt):
        raise ValueError("lora_state_dict: the model has no LoRA adapters: expected add_lora(model) first")
    params = dict(model.named_parameters())
    return OrderedDict((name, params[name].data.copy()) for name in _adapter_names(model))


def load_lora_state_dict(model, state: dict) -> None:
    """Copy a lora_state_dict() into a model that has the same adapters (add_lora with the same
    rank and targets). Every key and shape is checked before anything is written."""
    gpt, _ = _gpt_of(model)
    if not _lora_layers(gpt):
        raise ValueError("load_lora_state_dict: the model has no LoRA adapters: expected "
                         "add_lora(model, rank=...) first (or load_lora(model, path), which reads "
                         "the settings from the file)")
    params = dict(model.named_parameters())
    names = _adapter_names(model)
    missing = [k for k in names if k not in state]
    unexpected = [k for k in state if k not in names]
    if missing or unexpected:
        raise KeyError(f"load_lora_state_dict: missing keys {missing or 'none'}; unexpected keys "
                       f"{unexpected or 'none'} (a different rank, targets or n_layer?)")
    for name in names:
        if tuple(np.shape(state[name])) != params[name].shape:
            raise ValueError(f"load_lora_state_dict: {name!r} has shape {tuple(np.shape(state[name]))}: "
                             f"expected {params[name].shape} (a different rank?)")
    for name in names:
        params[name].data[...] = np.asarray(state[name], dtype=params[name].dtype)


LORA_FORMAT = "npgpt-lora"


def save_lora(model, path) -> int:
    """Write the adapters (lora_state_dict) and their settings to a safetensors file, atomically
    (a temporary file in the same folder, then a rename). Returns the file's size in bytes."""
    from safetensors.numpy import save_file

    gpt, _ = _gpt_of(model)
    tensors = {k: np.ascontiguousarray(v) for k, v in lora_state_dict(model).items()}
    metadata = {"format": LORA_FORMAT, "lora_config": json.dumps(gpt.lora_config)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path.stat().st_size


def load_lora(model, path) -> None:
    """Load a save_lora() file into a model. A model without adapters gets them first, with the
    file's rank, alpha, dropout and targets; a model with adapters must have the same settings."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"load_lora: path {str(path)!r} does not exist: expected a file "
                                f"written by save_lora")
    with safe_open(str(path), framework="np") as f:
        metadata = f.metadata() or {}
        state = {k: f.get_tensor(k) for k in f.keys()}
    if metadata.get("format") != LORA_FORMAT or "lora_config" not in metadata:
        raise ValueError(f"load_lora: {str(path)!r} has metadata format={metadata.get('format')!r}: "
                         f"expected {LORA_FORMAT!r} (a file written by save_lora)")
    settings = json.loads(metadata["lora_config"])
    gpt, _ = _gpt_of(model)
    if not _lora_layers(gpt):
        add_lora(model, settings["rank"], settings["alpha"], settings["dropout"], settings["targets"])
    elif {k: gpt.lora_config[k] for k in settings} != settings:
        raise ValueError(f"load_lora: the file's adapters are {settings}: expected the model's "
                         f"{gpt.lora_config}")
    load_lora_state_dict(model, state)


# ---------------------------------------------------------------------------------------------
# Classification head (GPT-1 style)
# ---------------------------------------------------------------------------------------------


def last_token_index(pad, shape) -> np.ndarray:
    """The position of the last real token of each sequence: (B,) int64.

    pad: bool (B, T), True at padded positions, right padding only (every pad after every real
    token), or None for no padding (every row ends at T - 1). A row of all padding, or a real
    token after a pad, is an error that names the row.
    """
    B, T = shape
    if T < 1:
        raise ValueError(f"idx has shape {tuple(shape)}: expected at least one position per sequence")
    if pad is None:
        return np.full(B, T - 1, dtype=np.int64)
    check_array("pad", pad, shape=(B, T))
    if pad.dtype != np.bool_:
        raise TypeError(f"pad has dtype {pad.dtype}: expected bool (True at padded positions)")
    empty = np.flatnonzero(pad[:, 0])
    if empty.size:
        raise ValueError(f"pad row {int(empty[0])} is all padding: expected at least one real token "
                         f"per sequence (rows {empty[:8].tolist()})")
    left = np.argwhere(pad[:, :-1] & ~pad[:, 1:])              # a pad followed by a real token
    if left.size:
        b, t = left[0]
        raise ValueError(f"pad row {b} has a real token at position {t + 1} after padding at {t}: "
                         f"expected right padding (the real tokens first)")
    return (T - pad.sum(axis=1) - 1).astype(np.int64)


def next_token_targets(idx, pad=None, ignore_index: int = -100) -> np.ndarray:
    """The language-modelling targets of the text itself: targets[b, t] = idx[b, t + 1], ignored
    (ignore_index) at the last position and wherever the next token is padding."""
    targets = np.full(idx.shape, ignore_index, dtype=np.int64)
    targets[:, :-1] = idx[:, 1:]
    if pad is not None:
        targets[:, :-1][pad[:, 1:]] = ignore_index
    return targets


class GPTClassifier(Module):
    """A GPT with a classification head on the hidden state of each sequence's last real token.

        h      = gpt.forward_hidden(idx)               (B, T, C)   after ln_f
        f_b    = h[b, last_b]                          (B, C)      last_b: before the first pad
        logits = f @ W_cls + b_cls                     (B, K)
        loss   = CE(logits, labels) + aux_lm_weight * CE_lm(h @ W_te^T, next tokens)

    The causal mask means the last real token has seen the whole text and no padding, so padded
    rows need no attention mask. The auxiliary language-modelling loss on the same text (GPT-1
    used 0.5) keeps the model a language model while it learns the task; it ignores padding.
    The head (W_cls ~ N(0, 0.02^2), b_cls = 0, drawn from `seed`) is named head.weight, head.bias;
    the GPT's parameters are gpt.wte.weight, ...
    """

    def __init__(self, model: GPT, n_classes: int, aux_lm_weight: float = 0.0, seed: int = 0):
        super().__init__()
        if not isinstance(model, GPT):
            raise TypeError(f"GPTClassifier: model is a {type(model).__name__}: expected a GPT")
        if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 2:
            raise ValueError(f"GPTClassifier: n_classes={n_classes!r}: expected an int >= 2")
        if isinstance(aux_lm_weight, bool) or not isinstance(aux_lm_weight, (int, float, np.number)) \
                or not (math.isfinite(aux_lm_weight) and aux_lm_weight >= 0):
            raise ValueError(f"GPTClassifier: aux_lm_weight={aux_lm_weight!r}: expected a finite number >= 0")
        cfg = model.config
        self.gpt = model
        self.n_classes, self.aux_lm_weight = int(n_classes), float(aux_lm_weight)
        self.head = Linear(cfg.n_embd, self.n_classes, dtype=cfg.dtype, rng=np.random.default_rng(seed))
        self.loss_fn = CrossEntropyLoss()
        self.lm_loss_fn = CrossEntropyLoss()
        self.losses = {}          # the parts of the last forward's loss: {"cls": ..., "lm": ...}
        self._state = None        # (h.shape, last, aux used) of the last forward

    def forward(self, idx, labels=None, pad=None):
        """idx: int (B, T); labels: int (B,) in [0, n_classes) or None; pad: bool (B, T) or None.
        Returns (logits (B, n_classes), loss or None)."""
        idx = check_ids("idx", idx, self.gpt.config.vocab_size, ndim=2)
        B, T = idx.shape
        last = last_token_index(pad, (B, T))
        h = self.gpt.forward_hidden(idx)                                # (B, T, C)
        logits = self.head.forward(h[np.arange(B), last])               # (B, C) -> (B, K)
        aux = labels is not None and self.aux_lm_weight > 0
        self._state = (h.shape, last, aux)
        if labels is None:
            self.losses = {}
            return logits, None
        labels = _check_labels(labels, B, self.n_classes)
        loss = self.loss_fn.forward(logits, labels)
        self.losses = {"cls": loss}
        if aux:
            lm_logits = self.gpt._head(h)                               # (B, T, V), the LM head
            self.losses["lm"] = self.lm_loss_fn.forward(lm_logits, next_token_targets(idx, pad))
            loss = loss + self.aux_lm_weight * self.losses["lm"]
        return logits, loss

    def backward(self, dlogits=None):
        """The chain rule from the loss of the last forward (which must have had labels), or from
        an upstream gradient dlogits (B, n_classes) of the class logits alone. Returns None."""
        if self._state is None:
            raise RuntimeError("GPTClassifier.backward: no forward to differentiate")
        shape, last, aux = self._state
        if dlogits is None:
            if "cls" not in self.losses:
                raise RuntimeError("GPTClassifier.backward() without dlogits needs a forward with labels")
            dlogits = self.loss_fn.backward(1.0)                        # (B, K), mean over B
        else:
            check_array("dlogits", dlogits, dtype=self.head.weight.dtype, shape=(shape[0], self.n_classes))
            aux = False
        dfeat = self.head.backward(dlogits)                             # (B, C)
        dh = np.zeros(shape, dtype=dfeat.dtype)
        dh[np.arange(shape[0]), last] = dfeat         # forward: f_b = h[b, last_b], a gather
        if aux:
            dlm = self.lm_loss_fn.backward(self.aux_lm_weight)          # d(w * CE_lm)/d lm_logits
            dh += self.gpt._head_backward(dlm)                          # and the tied table's grad
        self.gpt.backward_hidden(dh)
        return None

    def predict(self, idx, pad=None) -> np.ndarray:
        """The most likely class of each sequence: int64 (B,)."""
        logits, _ = self.forward(idx, pad=pad)
        return logits.argmax(axis=-1)

    def extra_repr(self):
        return f"n_classes={self.n_classes}, aux_lm_weight={self.aux_lm_weight:g}"


def _check_labels(labels, B: int, n_classes: int) -> np.ndarray:
    if not isinstance(labels, np.ndarray) or not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"labels is a {type(labels).__name__} of dtype {getattr(labels, 'dtype', None)}: "
                        f"expected an integer array of class ids")
    if labels.shape != (B,):
        raise ValueError(f"labels has shape {labels.shape}: expected ({B},), one class id per sequence")
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        bad = int(labels.min()) if labels.min() < 0 else int(labels.max())
        raise ValueError(f"labels contains {bad}: expected class ids in [0, {n_classes})")
    return labels.astype(np.int64, copy=False)


# ---------------------------------------------------------------------------------------------
# Classification data
# ---------------------------------------------------------------------------------------------


@dataclass
class ClassificationData:
    """Texts and their classes: labels[i] indexes classes (the class names, in a stable order)."""

    texts: list
    labels: np.ndarray
    classes: list

    def __len__(self) -> int:
        return len(self.texts)


def _class_order(names) -> list[str]:
    """Numeric order when every label is an integer ("2" before "10"), else sorted as text."""
    names = sorted(set(names))
    if all(re.fullmatch(r"-?\d+", n) for n in names):
        return sorted(names, key=int)
    return names


def _label_name(value, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"{where}: label {value!r} is a {type(value).__name__}: expected a string or an int")
    value = str(value).strip()
    if not value:
        raise ValueError(f"{where}: the label is empty: expected a class name")
    return value


def _read_jsonl(path: Path, text_field: str, label_field: str):
    rows = []
    with open(path, encoding="utf-8-sig") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}: line {n}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where} is not JSON ({e.msg} at column {e.colno}): expected one "
                                 f"object per line") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{where} is a JSON {type(obj).__name__}: expected an object with "
                                 f"fields {text_field!r} and {label_field!r}")
            for field in (text_field, label_field):
                if field not in obj:
                    raise ValueError(f"{where} has no field {field!r} (its fields: {sorted(obj)}): "
                                     f"expected {text_field!r} and {label_field!r}")
            rows.append((where, obj[text_field], obj[label_field]))
    return rows


def _read_csv(path: Path, text_field: str, label_field: str, delimiter: str):
    rows = []
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        header = reader.fieldnames or []
        for field in (text_field, label_field):
            if field not in header:
                raise ValueError(f"{path}: row 1 (the header) has no column {field!r} (its columns: "
                                 f"{header}): expected {text_field!r} and {label_field!r}")
        for row in reader:
            where = f"{path}: row {reader.line_num}"
            if row[text_field] is None or row[label_field] is None:
                raise ValueError(f"{where} has {len([v for v in row.values() if v is not None])} "
                                 f"fields: expected {len(header)}, as the header")
            rows.append((where, row[text_field], row[label_field]))
    return rows


def load_classification_file(path, text_field: str = "text", label_field: str = "label",
                             classes=None) -> ClassificationData:
    """Read (text, label) examples from a JSONL file (.jsonl, .json: one object per line) or a
    CSV/TSV file (.csv, .tsv: a header row naming the columns).

    Labels are strings or ints, mapped to ids by `classes` if given (a label outside them is an
    error: the held-out file of a trained classifier), else by their sorted order (numeric when
    every label is an integer). A missing field or column is an error that names it and the line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path {str(path)!r} does not exist: expected a .jsonl or .csv file")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        rows = _read_jsonl(path, text_field, label_field)
    elif suffix in (".csv", ".tsv"):
        rows = _read_csv(path, text_field, label_field, "\t" if suffix == ".tsv" else ",")
    else:
        raise ValueError(f"path {str(path)!r} has suffix {suffix!r}: expected .jsonl, .json, .csv or .tsv")
    if not rows:
        raise ValueError(f"path {str(path)!r} has no examples: expected at least one (text, label)")
    texts, names = [], []
    for where, text, label in rows:
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{where}: text {text!r} is empty or not a string: expected some text")
        texts.append(text)
        names.append(_label_name(label, where))
    order = _class_order(names) if classes is None else [str(c) for c in classes]
    ids = {c: i for i, c in enumerate(order)}
    for (where, _, _), name in zip(rows, names):
        if name not in ids:
            raise ValueError(f"{where}: label {name!r} is unknown: expected one of the classes {order}")
    return ClassificationData(texts, np.array([ids[n] for n in names], dtype=np.int64), order)


def _sentences(text: str, min_words: int, max_words: int) -> list[str]:
    """The prose sentences of text, min_words..max_words words each, lowercased, without their
    final period: the paragraphs are joined, split after . ! ? before a capital, and kept when
    they are made of words (letters, digits, quotes, brackets, hyphens; , ; : attached)."""
    word = r"[A-Za-z0-9\"'()*\-]+[,;:]?"
    out = set()
    for para in re.split(r"\n\s*\n", text):
        para = re.sub(r"\s+", " ", para).strip()
        for s in re.split(r"(?<=[.!?])\s+(?=[A-Z])", para):
            if re.fullmatch(rf"[A-Z]\S*(?: {word})+\.", s) and ".." not in s \
                    and min_words <= len(s.split()) <= max_words:
                out.add(s[:-1].lower())
    return sorted(out)


def shuffled_words_task(seed: int = 0, test_fraction: float = 0.2, min_words: int = 5,
                        max_words: int = 16, text: str | None = None):
    """A built-in classification task: tell a sentence from the same words in a shuffled order.

    The sentences come from the built-in corpus (npgpt.data.default_corpus(), or `text`):
    lowercased and without their final period, so that only the word order tells the classes
    apart. The sentences are split (seeded) into train and test first, and each one gives one
    example of each class, so both splits are balanced and no test sentence was seen in training.
    Returns (train, test) ClassificationData with classes ["original", "shuffled"].
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction={test_fraction!r}: expected a number in (0, 1)")
    if not 2 <= min_words <= max_words:
        raise ValueError(f"min_words={min_words!r}, max_words={max_words!r}: expected "
                         f"2 <= min_words <= max_words")
    if text is None:
        from ..data import default_corpus
        text = default_corpus()
    rng = np.random.default_rng(seed)
    sents = [s for s in _sentences(text, min_words, max_words) if len(set(s.split())) > 1]
    if len(sents) < 2:
        raise ValueError(f"the text has {len(sents)} sentences of {min_words}..{max_words} words: "
                         f"expected at least 2")
    sents = [sents[i] for i in rng.permutation(len(sents))]
    n_test = max(1, int(round(len(sents) * test_fraction)))

    def make(part):
        examples = []
        for s in part:
            words = s.split()
            shuffled = words
            while shuffled == words:                           # a different order, always
                shuffled = [words[i] for i in rng.permutation(len(words))]
            examples += [(s, 0), (" ".join(shuffled), 1)]
        order = rng.permutation(len(examples))
        return ClassificationData([examples[i][0] for i in order],
                                  np.array([examples[i][1] for i in order], dtype=np.int64),
                                  ["original", "shuffled"])

    return make(sents[n_test:]), make(sents[:n_test])


def encode_texts(texts, tokenizer, max_len: int, pad_id: int = 0):
    """Tokenize and right-pad: (idx int64 (N, T), pad bool (N, T)), T = the longest text's length
    up to max_len. A text longer than max_len keeps its first max_len tokens; pad_id fills the
    padded positions (they are masked, so any valid id will do)."""
    if isinstance(max_len, bool) or not isinstance(max_len, (int, np.integer)) or max_len < 1:
        raise ValueError(f"max_len={max_len!r}: expected a positive int (the model's block_size)")
    seqs = []
    for i, text in enumerate(texts):
        ids = list(tokenizer.encode(text))[:max_len]
        if not ids:
            raise ValueError(f"texts[{i}] = {text!r} encodes to no tokens: expected some text")
        seqs.append(ids)
    if not seqs:
        raise ValueError("texts is empty: expected at least one text")
    T = max(len(s) for s in seqs)
    idx = np.full((len(seqs), T), pad_id, dtype=np.int64)
    pad = np.ones((len(seqs), T), dtype=bool)
    for i, s in enumerate(seqs):
        idx[i, :len(s)] = s
        pad[i, :len(s)] = False
    return idx, pad


def classification_batches(idx, pad, labels, batch_size: int, rng: np.random.Generator | None = None):
    """Yield (idx, pad, labels) batches of batch_size rows (the last may be smaller), in a
    permuted order when rng is given; each batch is cut to its longest row."""
    n = len(idx)
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for s in range(0, n, batch_size):
        rows = order[s:s + batch_size]
        p = pad[rows]
        T = int((~p).sum(axis=1).max())
        yield idx[rows, :T], p[:, :T], labels[rows]


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------


def classification_report(y_true, y_pred, classes) -> dict:
    """Accuracy, per-class precision / recall / F1 and the confusion matrix, as plain JSON values.

        precision_k = TP_k / (predicted k)     recall_k = TP_k / (truly k)
        F1_k = 2 precision_k recall_k / (precision_k + recall_k)      (0 where a denominator is 0)
        confusion[i][j] = how many examples of class i were predicted as class j

    y_true, y_pred: int (N,) class ids in [0, len(classes)); classes: the class names.
    """
    classes = [str(c) for c in classes]
    K = len(classes)
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"{name} has shape {y.shape} and dtype {y.dtype}: expected int class ids (N,)")
        if y.size and (y.min() < 0 or y.max() >= K):
            bad = int(y.min()) if y.min() < 0 else int(y.max())
            raise ValueError(f"{name} contains label id {bad}: expected ids in [0, {K}) of the "
                             f"classes {classes}")
    if y_true.shape != y_pred.shape or not y_true.size:
        raise ValueError(f"y_true has shape {y_true.shape} and y_pred {y_pred.shape}: expected one "
                         f"non-empty shape")
    confusion = np.zeros((K, K), dtype=np.int64)
    np.add.at(confusion, (y_true, y_pred), 1)
    tp = np.diag(confusion).astype(np.float64)
    predicted, actual = confusion.sum(axis=0), confusion.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros(K), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros(K), where=actual > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(K),
                   where=precision + recall > 0)
    return {
        "n": int(y_true.size),
        "accuracy": float(tp.sum() / y_true.size),
        "macro_f1": float(f1.mean()),
        "classes": classes,
        "per_class": {c: {"precision": float(precision[k]), "recall": float(recall[k]),
                          "f1": float(f1[k]), "support": int(actual[k])} for k, c in enumerate(classes)},
        "confusion": confusion.tolist(),
    }


def format_report(report: dict) -> str:
    """A classification_report as a small text table: per-class scores, then the confusion matrix."""
    classes = report["classes"]
    w = max(9, *(len(c) for c in classes))
    lines = [f"{'class':<{w}}  precision  recall     f1  support"]
    for c in classes:
        r = report["per_class"][c]
        lines.append(f"{c:<{w}}  {r['precision']:9.3f}  {r['recall']:6.3f}  {r['f1']:5.3f}  "
                     f"{r['support']:7d}")
    lines.append(f"{'accuracy':<{w}}  {report['accuracy']:9.3f}  (n={report['n']}, macro F1 "
                 f"{report['macro_f1']:.3f})")
    cw = max(6, *(len(c) for c in classes))
    lines += ["", f"confusion (rows: true, columns: predicted)",
              f"{'':<{w}}  " + "  ".join(f"{c:>{cw}}" for c in classes)]
    for c, row in zip(classes, report["confusion"]):
        lines.append(f"{c:<{w}}  " + "  ".join(f"{v:>{cw}d}" for v in row))
    return "\n".join(lines)


def evaluate(clf: GPTClassifier, idx, pad, labels, classes, batch_size: int = 64) -> dict:
    """classification_report of clf's predictions on (idx, pad, labels), in eval mode (no dropout;
    the mode is restored), plus the mean classification loss as "loss"."""
    labels = _check_labels(np.asarray(labels), len(idx), len(classes))
    if clf.n_classes != len(classes):
        raise ValueError(f"classes has {len(classes)} names: expected the classifier's n_classes="
                         f"{clf.n_classes}")
    was_training = clf.training
    clf.eval()
    try:
        preds, total = [], 0.0
        for x, p, y in classification_batches(idx, pad, labels, batch_size):
            logits, _ = clf.forward(x, pad=p)
            preds.append(logits.argmax(axis=-1))
            total += clf.loss_fn.forward(logits, y) * len(y)
    finally:
        clf.train(was_training)
    report = classification_report(labels, np.concatenate(preds), classes)
    report["loss"] = total / len(labels)
    return report
