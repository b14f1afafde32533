"""Checkpoints: npgpt's own (save / load, atomic) and GPT-2's Hugging Face layout (import, export).

An npgpt checkpoint is one safetensors file:

    arrays     "model.<name>"       every parameter, by its npgpt name (h.0.attn.c_attn.weight ...)
               "optimizer.<key>"    the optimizer's arrays (AdamW: m.0, v.0, ...), if one was saved
    metadata   "format": "npgpt-checkpoint", "version": "1",
               "meta": JSON of {"model": "GPT", "config": {...}, "optimizer": {"type": "AdamW",
                       <its state_dict() without the arrays>}, "rng": {module path: bit generator
                       state}, and whatever else the caller passed: step, tokenizer, ...}

It is written atomically (npgpt.files.write_atomic): to a temporary file in the same folder,
flushed to disk, then renamed over the target, so a crash or Ctrl-C at any moment leaves either
the old checkpoint or the new one, never half of one.

    save("out/ckpt.safetensors", model, optimizer, step=100, tokenizer=tok.to_dict())
    ckpt = load("out/ckpt.safetensors")          # a Checkpoint: .meta, .model_state, .optimizer_state
    model = ckpt.build_model()                   # a GPT (or Transformer) of the saved config
    ckpt.restore(model, optimizer)               # or into models you built: checked, then copied

GPT-2. `load_gpt2(folder)` is GPT.from_pretrained: a local Hugging Face folder (config.json +
model.safetensors), in either of its layouts; `save_gpt2(model, folder)` writes one that
transformers' GPT2LMHeadModel.from_pretrained reads. The name mapping lives with the models
(npgpt/models/gpt2_hf.py) and is re-exported here: gpt2_from_hf, gpt2_to_hf, gpt2_config_from_hf,
gpt2_config_to_hf.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save as safetensors_bytes

from .config import GPTConfig, TransformerConfig
from .files import write_atomic
from .models.gpt import GPT
from .models.gpt2_hf import gpt2_config_from_hf, gpt2_config_to_hf, gpt2_from_hf, gpt2_to_hf
from .models.transformer import Transformer
from .nn.module import Module

__all__ = ["Checkpoint", "save", "load", "rng_states", "set_rng_states", "load_gpt2", "save_gpt2",
           "gpt2_from_hf", "gpt2_to_hf", "gpt2_config_from_hf", "gpt2_config_to_hf"]

FORMAT = "npgpt-checkpoint"
VERSION = "1"

# The model classes a checkpoint can rebuild: class name -> (config class, model class).
MODELS = {"GPT": (GPTConfig, GPT), "Transformer": (TransformerConfig, Transformer)}
RESERVED = ("model", "config", "optimizer", "rng")     # meta keys save() writes itself
# Config fields that may differ between a checkpoint and the model it is loaded into: they change
# neither the shapes nor the function of the weights (dropout at training time only; dtype casts).
FREE_FIELDS = ("dropout", "dtype")


# --------------------------------------------------------------------------------------------
# Random number generators
# --------------------------------------------------------------------------------------------

def rng_states(model: Module) -> dict[str, dict]:
    """{"<module path>.<attribute>": bit generator state} of every np.random.Generator that a
    module of model holds (the dropout masks' generators), JSON-serialisable."""
    states = {}
    for path, module in model.named_modules():
        for attr, value in vars(module).items():
            if isinstance(value, np.random.Generator):
                states[f"{path}.{attr}" if path else attr] = value.bit_generator.state
    return states


def set_rng_states(model: Module, states: dict[str, dict], where: str = "rng states") -> None:
    """Restore rng_states(model) into the model's generators; the sets of names must agree."""
    current = rng_states(model)
    if set(current) != set(states):
        raise ValueError(f"{where}: the saved generators {sorted(states)} are not the model's "
                         f"{sorted(current)}")
    modules = dict(model.named_modules())
    for key, state in states.items():
        path, _, attr = key.rpartition(".")
        getattr(modules[path], attr).bit_generator.state = state


# --------------------------------------------------------------------------------------------
# npgpt checkpoints
# --------------------------------------------------------------------------------------------

@dataclass
class Checkpoint:
    """What `load` read from a checkpoint file.

    path:             the file
    meta:             the JSON metadata: "model", "config", "optimizer" (its non-array state),
                      "rng", and the caller's entries (step, tokenizer, ...)
    model_state:      {npgpt parameter name: array}
    optimizer_state:  the optimizer's state_dict() (plain values and arrays), or None
    """
    path: Path
    meta: dict = field(repr=False)
    model_state: dict = field(repr=False)
    optimizer_state: dict | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        opt = self.meta.get("optimizer", {}).get("type")
        return (f"Checkpoint({str(self.path)!r}, model={self.meta.get('model')}, "
                f"step={self.meta.get('step')}, optimizer={opt}, {len(self.model_state)} arrays)")

    @property
    def config(self):
        """The saved model configuration (a GPTConfig or TransformerConfig)."""
        cls_name = self.meta.get("model")
        if cls_name not in MODELS:
            raise ValueError(f"checkpoint {str(self.path)!r} holds a model of class {cls_name!r}: "
                             f"expected one of {sorted(MODELS)}")
        try:
            return MODELS[cls_name][0].from_dict(self.meta["config"])
        except (TypeError, ValueError, KeyError) as e:
            raise ValueError(f"checkpoint {str(self.path)!r}: its config is not valid: {e}") from None

    def build_model(self, dtype: str | None = None) -> Module:
        """A new model of the saved class and config (dtype overridable), holding the saved
        weights and dropout generator states."""
        cfg = self.config
        if dtype is not None:
            cfg = cfg.replace(dtype=dtype)
        model = MODELS[self.meta["model"]][1](cfg)
        self.restore(model)
        return model

    def restore(self, model: Module, optimizer=None) -> None:
        """Copy the saved weights (and generator states) into model, and the saved optimizer
        state into optimizer if given. Everything is checked before anything is written: the
        model's class and config (all fields but FREE_FIELDS), every parameter name and shape,
        the optimizer's type and layout."""
        where = f"checkpoint {str(self.path)!r}"
        self._check_model(model, where)
        if optimizer is not None:
            if self.optimizer_state is None:
                raise ValueError(f"{where} holds no optimizer state: expected one to restore "
                                 f"{type(optimizer).__name__} (was it saved with optimizer=None?)")
            saved_type = self.meta["optimizer"].get("type")
            if saved_type != optimizer_type(optimizer):
                raise ValueError(f"{where} holds the state of a {saved_type} optimizer: "
                                 f"expected {optimizer_type(optimizer)}")
        self._check_arrays(model, where)
        if optimizer is not None:      # checks everything, then writes; the model is checked already
            try:
                optimizer.load_state_dict(self.optimizer_state)
            except (KeyError, ValueError) as e:
                raise ValueError(f"{where}: {e.args[0] if e.args else e}") from None
        model.load_state_dict(self.model_state)
        set_rng_states(model, self.meta.get("rng", {}), where)

    def _check_arrays(self, model: Module, where: str) -> None:
        params = {name: p.shape for name, p in model.named_parameters()}
        missing = [k for k in params if k not in self.model_state]
        unexpected = [k for k in self.model_state if k not in params]
        if missing or unexpected:
            raise ValueError(f"{where} does not hold this model's parameters: missing "
                             f"{missing[:5] or 'none'}, unexpected {unexpected[:5] or 'none'}")
        for name, shape in params.items():
            if tuple(self.model_state[name].shape) != shape:
                raise ValueError(f"{where}: {name} has shape {tuple(self.model_state[name].shape)}, "
                                 f"expected {shape}")

    def _check_model(self, model: Module, where: str) -> None:
        cls_name = type(model).__name__
        if self.meta.get("model") != cls_name:
            raise ValueError(f"{where} holds a {self.meta.get('model')!r} model: expected {cls_name!r}")
        saved = self.meta.get("config")
        ours = model.config.to_dict() if hasattr(model, "config") else None
        if saved is None or ours is None:
            if saved != ours:
                raise ValueError(f"{where} was saved {'with' if ours is None else 'without'} a model "
                                 f"config, the model has {'none' if ours is None else 'one'}")
            saved = ours = {}
        diff = [f"{k}={saved.get(k, 'unset')!r} (the model has {ours.get(k, 'unset')!r})"
                for k in dict.fromkeys([*saved, *ours])
                if k not in FREE_FIELDS and saved.get(k, "unset") != ours.get(k, "unset")]
        if diff:
            raise ValueError(f"{where} does not match the model: it was saved with "
                             + ", ".join(diff))
        rng_names = set(rng_states(model))
        if set(self.meta.get("rng", {})) != rng_names:
            raise ValueError(f"{where}: the saved generators {sorted(self.meta.get('rng', {}))} "
                             f"are not the model's {sorted(rng_names)}")


def optimizer_type(optimizer) -> str:
    """The optimizer type a checkpoint records: the class name, or the checkpoint_type of an
    optimizer whose state_dict is another's (npgpt.dist's ShardedAdamW saves as AdamW)."""
    return getattr(optimizer, "checkpoint_type", type(optimizer).__name__)


def save(path, model: Module, optimizer=None, **meta) -> Path:
    """Write model (parameters, config, dropout generator states), optionally the optimizer's
    state, and the JSON-serialisable entries of meta to one safetensors file, atomically.

    model: any Module; its .config (a GPTConfig, TransformerConfig, ...: anything with to_dict)
    is saved when it has one, and only GPT and Transformer checkpoints can build_model().

    Returns the path. The meta keys in RESERVED ("model", "config", "optimizer", "rng") are save's own.
    """
    reserved = sorted(set(RESERVED) & set(meta))
    if reserved:
        raise ValueError(f"save: meta keys {reserved} are reserved: expected other names")
    arrays = {f"model.{k}": np.ascontiguousarray(v) for k, v in model.state_dict().items()}
    config = model.config.to_dict() if hasattr(model, "config") else None
    header = {"model": type(model).__name__, "config": config,
              "rng": rng_states(model), **meta}
    if optimizer is not None:
        plain = {"type": optimizer_type(optimizer)}
        for k, v in optimizer.state_dict().items():
            if isinstance(v, np.ndarray):
                arrays[f"optimizer.{k}"] = np.ascontiguousarray(v)
            else:
                plain[k] = v
        header["optimizer"] = plain
    try:
        text = json.dumps(header, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"save: meta is not JSON-serialisable ({e}): expected plain values "
                         f"(numbers, strings, lists, dicts)") from None
    data = safetensors_bytes(arrays, metadata={"format": FORMAT, "version": VERSION, "meta": text})
    return write_atomic(path, data)


def load(path) -> Checkpoint:
    """Read a checkpoint written by `save`. A missing, truncated or foreign file, or one of
    another format version, raises an error that names the file and what is wrong."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    if path.is_dir():
        raise IsADirectoryError(f"checkpoint {str(path)!r} is a directory: expected a "
                                f"checkpoint file (ckpt.safetensors)")
    try:
        with safe_open(str(path), framework="numpy") as f:
            header = f.metadata() or {}
            _check_header(path, header)
            arrays = {k: f.get_tensor(k) for k in f.keys()}
    except SafetensorError as e:
        raise ValueError(f"checkpoint {str(path)!r} is not a readable safetensors file "
                         f"(truncated or foreign?): {e}") from None
    try:
        meta = json.loads(header["meta"])
    except json.JSONDecodeError as e:
        raise ValueError(f"checkpoint {str(path)!r}: its metadata is not valid JSON ({e})") from None
    model_state = {k[len("model."):]: v for k, v in arrays.items() if k.startswith("model.")}
    opt_state = None
    if "optimizer" in meta:
        opt_state = {k: v for k, v in meta["optimizer"].items() if k != "type"}
        opt_state.update({k[len("optimizer."):]: v for k, v in arrays.items()
                          if k.startswith("optimizer.")})
    ckpt = Checkpoint(path, meta, model_state, opt_state)
    if meta.get("model") in MODELS:
        ckpt.config    # fails now, naming the file, if the config is not one we can build
    return ckpt


def _check_header(path: Path, header: dict) -> None:
    fmt = header.get("format")
    if fmt != FORMAT:
        hint = (" (a Hugging Face weights file? load its folder with GPT.from_pretrained or "
                "--gpt2)" if fmt == "pt" else "")
        raise ValueError(f"checkpoint {str(path)!r} has format {fmt!r}: expected {FORMAT!r}{hint}")
    if header.get("version") != VERSION:
        raise ValueError(f"checkpoint {str(path)!r} has format version {header.get('version')!r}: "
                         f"this npgpt reads version {VERSION!r}")
    if "meta" not in header:
        raise ValueError(f"checkpoint {str(path)!r} has no 'meta' entry in its header")


# --------------------------------------------------------------------------------------------
# GPT-2, Hugging Face layout
# --------------------------------------------------------------------------------------------

def load_gpt2(folder, dtype: str = "float32") -> GPT:
    """A GPT holding the weights of a local Hugging Face GPT-2 folder: GPT.from_pretrained."""
    return GPT.from_pretrained(folder, dtype=dtype)


def save_gpt2(model: GPT, folder, tokenizer=None) -> Path:
    """Write model as a Hugging Face GPT-2 folder (config.json + model.safetensors in
    save_pretrained's layout; vocab.json + merges.txt if a BPETokenizer is given), loadable by
    GPT2LMHeadModel.from_pretrained and by load_gpt2. The config's bos/eos token is the
    tokenizer's <|endoftext|> (else GPT-2's 50256 where it fits the vocabulary, else none).
    Each file is written atomically."""
    folder = Path(folder)
    specials = getattr(tokenizer, "special_tokens", None) or []
    eos = tokenizer.special_id("<|endoftext|>") if "<|endoftext|>" in specials else None
    cfg_dict = gpt2_config_to_hf(model.config, eos_token_id=eos)
    arrays = {k: np.ascontiguousarray(v) for k, v in gpt2_to_hf(model.state_dict()).items()}
    write_atomic(folder / "model.safetensors", safetensors_bytes(arrays, metadata={"format": "pt"}))
    write_atomic(folder / "config.json", json.dumps(cfg_dict, indent=2))
    if tokenizer is not None:
        tokenizer.save(folder)
    return folder
