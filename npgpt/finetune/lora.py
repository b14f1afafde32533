"""LoRA fine-tuning of a GPT (Hu et al., 2021): adapters beside the frozen attention and MLP weights.

    add_lora(model, rank=8, alpha=16)        wrap every block's Linears in a LoRALinear; only the
                                             adapters (and a classifier's head) train afterwards
    lora_settings(model)                     {"rank", "alpha", "dropout", "targets"}, read off the
                                             LoRALinear layers themselves
    save_lora(model, "adapters.safetensors") the adapters (and a classifier's head) alone: small
    load_lora(model, path)                   adds the file's adapters to the same base model
    merge_lora(model)                        fold them into the weights: W <- W + (alpha / r) A B

The layer itself, LoRALinear (and its math, lora_forward / lora_backward), is npgpt.nn.lora.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save as safetensors_bytes

from ..files import write_atomic
from ..models.gpt import GPT
from ..nn import Module, flatten_parameters
from ..nn.lora import LoRALinear, check_lora_args, check_rank
from .classifier import GPTClassifier
from .freeze import freeze, gpt_of

# The Linears of a GPT block that add_lora can wrap, by target name.
LORA_TARGETS = {"attn": ("attn.c_attn", "attn.c_proj"), "mlp": ("mlp.c_fc", "mlp.c_proj")}
LORA_FORMAT = "npgpt-lora"
SETTINGS = ("rank", "alpha", "dropout", "targets")


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


def _child(root: Module, path: str) -> tuple[Module, str]:
    """(the parent of the module at `path` below root, its attribute name)."""
    *parents, attr = path.split(".")
    for name in parents:
        root = getattr(root, name)
    return root, attr


def _replace_child(root: Module, path: str, new: Module) -> None:
    """Put `new` where the child at `path` was, keeping the order of the parent's children (so
    named_parameters and state_dict keep their order)."""
    parent, attr = _child(root, path)
    order = list(parent._modules)
    setattr(parent, attr, new)
    for name in order:
        parent._modules.move_to_end(name)


def add_lora(model, rank: int = 8, alpha: float = 16.0, dropout: float = 0.0,
             targets=("attn", "mlp"), seed: int = 0) -> int:
    """Wrap the attention (c_attn, c_proj) and/or MLP (c_fc, c_proj) Linears of every block in a
    LoRALinear, and freeze every other parameter of the GPT: afterwards only the adapters train
    (and, for a GPTClassifier, its new head). The new adapters lie in one flat buffer of their
    own (flatten_parameters), so an optimizer updates them in one pass.

    targets: "attn", "mlp", or single layers "attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj".
    seed: the adapters' A initialisation and dropout masks.
    Every layer's rank limit is checked before anything changes. Returns the number of trainable
    parameters of `model`: r (in + out) per wrapped layer, plus the head if there is one.
    """
    gpt, _ = gpt_of(model)
    if _lora_layers(gpt):
        raise ValueError("add_lora: the model already has LoRA adapters: expected a model without "
                         "them (merge_lora(model) first to stack a new set)")
    paths = _lora_paths(targets)
    check_lora_args(alpha, dropout, "add_lora")
    sites = [(block, path) for block in gpt.h for path in paths]
    for i, (block, path) in enumerate(sites):
        parent, attr = _child(block, path)
        check_rank(rank, getattr(parent, attr), f"add_lora: layer h.{i // len(paths)}.{path}")
    freeze(gpt)
    rng = np.random.default_rng(seed)
    adapters = []
    for (block, path), layer_rng in zip(sites, rng.spawn(len(sites))):
        parent, attr = _child(block, path)
        layer = LoRALinear(getattr(parent, attr), rank, alpha, dropout, layer_rng)
        _replace_child(block, path, layer)
        adapters += [layer.lora_A, layer.lora_B]
    flatten_parameters(adapters)
    return model.num_parameters(trainable_only=True)


def lora_settings(model) -> dict | None:
    """{"rank", "alpha", "dropout", "targets"} of the model's adapters, read off its LoRALinear
    layers (targets: the block-relative paths, "attn.c_attn", ...), or None without adapters.
    What save_lora and `npgpt finetune`'s checkpoints record, and add_lora takes back."""
    gpt, _ = gpt_of(model)
    layers = _lora_layers(gpt)
    if not layers:
        return None
    settings = {(m.rank, m.alpha, m.dropout) for _, m in layers}
    if len(settings) > 1:
        raise ValueError(f"lora_settings: the adapters differ in (rank, alpha, dropout): "
                         f"{sorted(settings)}: expected one setting (as add_lora makes)")
    (rank, alpha, dropout), = settings
    targets = list(dict.fromkeys(name.split(".", 2)[2] for name, _ in layers))   # h.3.attn.c_attn
    return {"rank": rank, "alpha": alpha, "dropout": dropout, "targets": targets}


def merge_lora(model) -> int:
    """Fold every adapter into its weight (W <- W + (alpha / r) A B) and put the plain Linears
    back: the model computes the same function (without adapter dropout) with no extra cost.
    The merged weights keep requires_grad as they were (frozen by add_lora): unfreeze(model) to
    train them. Returns the number of layers merged."""
    gpt, _ = gpt_of(model)
    layers = _lora_layers(gpt)
    if not layers:
        raise ValueError("merge_lora: the model has no LoRA adapters: expected add_lora(model) first")
    for name, layer in layers:
        _replace_child(gpt, name, layer.merge())
    return len(layers)


def _adapter_names(model) -> list[str]:
    """The parameters LoRA fine-tuning produces: every lora_A / lora_B, and a classifier's head."""
    return [name for name, _ in model.named_parameters()
            if name.endswith((".lora_A", ".lora_B")) or
            (isinstance(model, GPTClassifier) and name.startswith("head."))]


def _adapter_shapes(model, settings: dict) -> dict:
    """{name: shape} of the adapters (and a classifier's head) that add_lora(model, **settings)
    would give `model`, computed without changing it."""
    gpt, prefix = gpt_of(model)
    paths, rank = _lora_paths(settings["targets"]), settings["rank"]
    shapes = {}
    for i, block in enumerate(gpt.h):
        for path in paths:
            parent, attr = _child(block, path)
            layer = getattr(parent, attr)
            shapes[f"{prefix}h.{i}.{path}.lora_A"] = (layer.in_features, rank)
            shapes[f"{prefix}h.{i}.{path}.lora_B"] = (rank, layer.out_features)
    if isinstance(model, GPTClassifier):
        shapes.update({f"head.{name}": p.shape for name, p in model.head.named_parameters()})
    return shapes


def _check_adapter_state(where: str, shapes: dict, state: dict) -> None:
    """Every key of `shapes` in state with its shape, nothing else; writes nothing."""
    missing = [k for k in shapes if k not in state]
    unexpected = [k for k in state if k not in shapes]
    if missing or unexpected:
        raise KeyError(f"{where}: missing keys {missing or 'none'}; unexpected keys "
                       f"{unexpected or 'none'} (a different rank, targets or n_layer?)")
    for name, shape in shapes.items():
        if tuple(np.shape(state[name])) != tuple(shape):
            raise ValueError(f"{where}: {name!r} has shape {tuple(np.shape(state[name]))}: "
                             f"expected {tuple(shape)} (a different rank?)")


def lora_state_dict(model) -> "OrderedDict[str, np.ndarray]":
    """{name: copy} of the adapters (and a GPTClassifier's head): what a LoRA fine-tune changed,
    a small fraction of the model. The frozen base weights are not in it."""
    gpt, _ = gpt_of(model)
    if not _lora_layers(gpt):
        raise ValueError("lora_state_dict: the model has no LoRA adapters: expected add_lora(model) first")
    params = dict(model.named_parameters())
    return OrderedDict((name, params[name].data.copy()) for name in _adapter_names(model))


def load_lora_state_dict(model, state: dict) -> None:
    """Copy a lora_state_dict() into a model that has the same adapters (add_lora with the same
    rank and targets). Every key and shape is checked before anything is written."""
    gpt, _ = gpt_of(model)
    if not _lora_layers(gpt):
        raise ValueError("load_lora_state_dict: the model has no LoRA adapters: expected "
                         "add_lora(model, rank=...) first (or load_lora(model, path), which reads "
                         "the settings from the file)")
    params = dict(model.named_parameters())
    names = _adapter_names(model)
    _check_adapter_state("load_lora_state_dict", {k: params[k].shape for k in names}, state)
    for name in names:
        params[name].data[...] = np.asarray(state[name], dtype=params[name].dtype)


def save_lora(model, path) -> int:
    """Write the adapters (lora_state_dict) and their settings (lora_settings) to a safetensors
    file, atomically. Returns the file's size in bytes."""
    settings = lora_settings(model)
    tensors = {k: np.ascontiguousarray(v) for k, v in lora_state_dict(model).items()}
    data = safetensors_bytes(tensors, metadata={"format": LORA_FORMAT, "lora_config": json.dumps(settings)})
    write_atomic(path, data)
    return len(data)


def _read_lora(path: Path) -> tuple[dict, dict]:
    """(the arrays, the settings) of a save_lora file; a missing or foreign file is an error."""
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
    if not isinstance(settings, dict) or set(settings) != set(SETTINGS):
        raise ValueError(f"load_lora: {str(path)!r} has lora_config {settings!r}: expected the keys "
                         f"{list(SETTINGS)}")
    return state, settings


def load_lora(model, path) -> None:
    """Load a save_lora() file into a model. A model without adapters gets them first, with the
    file's rank, alpha, dropout and targets; a model with adapters must have the same settings.
    Everything is checked first: a file that does not fit leaves the model as it was."""
    state, settings = _read_lora(Path(path))
    current = lora_settings(model)
    if current is None:
        _check_adapter_state("load_lora", _adapter_shapes(model, settings), state)
        add_lora(model, settings["rank"], settings["alpha"], settings["dropout"], settings["targets"])
    elif [current[k] for k in SETTINGS[:3]] != [settings[k] for k in SETTINGS[:3]] \
            or set(current["targets"]) != set(_lora_paths(settings["targets"])):
        raise ValueError(f"load_lora: the file's adapters are {settings}: expected the model's {current}")
    load_lora_state_dict(model, state)
