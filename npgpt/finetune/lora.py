"""LoRA (Hu et al., 2021): a trainable low-rank update beside each frozen attention and MLP weight.

    add_lora(model, rank=8, alpha=16)        wrap every block's Linears; only adapters train
    save_lora(model, "adapters.safetensors") the adapters (and a classifier's head) alone: small
    load_lora(model, path)                   adds the file's adapters to the same base model
    model.merge_lora()                       fold them into the weights: W <- W + (alpha / r) A B

The pure functions lora_forward / lora_backward are the math; LoRALinear is the layer.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import types
from collections import OrderedDict
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .. import kernels
from ..models.gpt import GPT
from ..nn import Linear, Module, Parameter
from ..nn.dropout import dropout_backward, dropout_forward
from .classifier import GPTClassifier, _gpt_of
from .freeze import freeze


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
