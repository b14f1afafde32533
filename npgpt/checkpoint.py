"""Checkpoints: npgpt's own (save / load, atomic) and GPT-2's Hugging Face layout (import, export).

An npgpt checkpoint is one safetensors file:

    arrays     "model.<name>"       every parameter, by its npgpt name (h.0.attn.c_attn.weight ...)
               "optimizer.<key>"    the optimizer's arrays (AdamW: m.0, v.0, ...), if one was saved
    metadata   "format": "npgpt-checkpoint", "version": "1",
               "meta": JSON of {"model": "GPT", "config": {...}, "optimizer": {"type": "AdamW",
                       <its state_dict() without the arrays>}, "rng": {module path: bit generator
                       state}, and whatever else the caller passed: step, tokenizer, ...}

It is written atomically: to a temporary file in the same folder, flushed to disk (fsync), then
renamed over the target (os.replace), so a crash or Ctrl-C at any moment leaves either the old
checkpoint or the new one, never half of one.

    save("out/ckpt.safetensors", model, optimizer, step=100, tokenizer=tok.to_dict())
    ckpt = load("out/ckpt.safetensors")          # a Checkpoint: .meta, .model_state, .optimizer_state
    model = ckpt.build_model()                   # a GPT (or Transformer) of the saved config
    ckpt.restore(model, optimizer)               # or into models you built: checked, then copied

GPT-2. `load_gpt2(folder)` reads a local Hugging Face folder (config.json + model.safetensors) in
either layout one meets: what `save_pretrained` writes (keys "transformer.h.0...", lm_head.weight
left out or kept when tied) and the published gpt2 checkpoints (keys "h.0...", the attention mask
buffers attn.bias / attn.masked_bias, no lm_head). GPT-2's Conv1D stores its weight as (in, out),
which is npgpt's Linear layout, so weights are copied without a transpose; names map one to one:

    HF  transformer.h.0.attn.c_attn.weight  <->  npgpt  h.0.attn.c_attn.weight
    HF  lm_head.weight (V, C), a torch nn.Linear  <->  npgpt  lm_head.weight (C, V), transposed
        (only in untied models; a tied head is wte.weight)
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import GPTConfig, TransformerConfig
from .nn.module import Module

FORMAT = "npgpt-checkpoint"
VERSION = "1"

# The model classes a checkpoint can rebuild: class name -> (config class, "module:attribute").
MODELS = {
    "GPT": (GPTConfig, "npgpt.models.gpt:GPT"),
    "Transformer": (TransformerConfig, "npgpt.models.transformer:Transformer"),
}
RESERVED = ("model", "config", "optimizer", "rng")     # meta keys save() writes itself
# Config fields that may differ between a checkpoint and the model it is loaded into: they change
# neither the shapes nor the function of the weights (dropout at training time only; dtype casts).
FREE_FIELDS = ("dropout", "dtype")


# --------------------------------------------------------------------------------------------
# Atomic files
# --------------------------------------------------------------------------------------------

def write_atomic(path, data: bytes) -> Path:
    """Write bytes to path atomically: a temporary file beside it, fsync, os.replace.

    The folder is made if missing. On any error (including KeyboardInterrupt) the temporary file
    is removed and path keeps its previous content.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"checkpoint path {str(path)!r} is a directory: expected a file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)     # make the rename itself durable
    return path


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:             # not possible on some systems (Windows): the rename still happened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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
        import importlib

        cfg = self.config
        if dtype is not None:
            cfg = cfg.replace(dtype=dtype)
        module_name, attr = MODELS[self.meta["model"]][1].split(":")
        model = getattr(importlib.import_module(module_name), attr)(cfg)
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
            if saved_type != type(optimizer).__name__:
                raise ValueError(f"{where} holds the state of a {saved_type} optimizer: "
                                 f"expected {type(optimizer).__name__}")
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


def save(path, model: Module, optimizer=None, **meta) -> Path:
    """Write model (parameters, config, dropout generator states), optionally the optimizer's
    state, and the JSON-serialisable entries of meta to one safetensors file, atomically.

    model: any Module; its .config (a GPTConfig, TransformerConfig, ...: anything with to_dict)
    is saved when it has one, and only GPT and Transformer checkpoints can build_model().

    Returns the path. The meta keys in RESERVED ("model", "config", "optimizer", "rng") are save's own.
    """
    from safetensors.numpy import save as st_save

    reserved = sorted(set(RESERVED) & set(meta))
    if reserved:
        raise ValueError(f"save: meta keys {reserved} are reserved: expected other names")
    arrays = {f"model.{k}": np.ascontiguousarray(v) for k, v in model.state_dict().items()}
    config = model.config.to_dict() if hasattr(model, "config") else None
    header = {"model": type(model).__name__, "config": config,
              "rng": rng_states(model), **meta}
    if optimizer is not None:
        plain = {"type": type(optimizer).__name__}
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
    data = st_save(arrays, metadata={"format": FORMAT, "version": VERSION, "meta": text})
    return write_atomic(path, data)


def load(path) -> Checkpoint:
    """Read a checkpoint written by `save`. A missing, truncated or foreign file, or one of
    another format version, raises an error that names the file and what is wrong."""
    from safetensors import SafetensorError, safe_open

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

HF_PREFIX = "transformer."
HF_BUFFERS = (".attn.bias", ".attn.masked_bias")    # causal-mask buffers (not c_attn.bias)
HF_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu",
                  "relu": "relu"}
NPGPT_ACTIVATIONS = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu"}


def gpt2_from_hf(hf_arrays: dict) -> dict:
    """{Hugging Face GPT-2 name: array} -> {npgpt name: array}, for weights or gradients.

    Takes both layouts: "transformer.h.0.ln_1.weight" and "h.0.ln_1.weight" both become
    "h.0.ln_1.weight"; "lm_head.weight" stays; the mask buffers (attn.bias, attn.masked_bias)
    are dropped. Arrays are passed through as they are (Conv1D is already (in, out)), except
    lm_head.weight, which torch's nn.Linear stores as (out, in): it is transposed.
    """
    out = {}
    for name, arr in hf_arrays.items():
        key = name[len(HF_PREFIX):] if name.startswith(HF_PREFIX) else name
        if key.endswith(HF_BUFFERS):
            continue
        if key in out:
            raise ValueError(f"gpt2_from_hf: {name!r} and another key both map to {key!r}")
        out[key] = arr.T if key == "lm_head.weight" else arr
    return out


def gpt2_to_hf(npgpt_arrays: dict) -> dict:
    """{npgpt name: array} -> {Hugging Face GPT-2 name: array} in save_pretrained's layout
    ("transformer." before every name but lm_head.weight, which is transposed to torch's
    nn.Linear layout (out, in)); for weights or gradients."""
    return {(k if k == "lm_head.weight" else HF_PREFIX + k): (v.T if k == "lm_head.weight" else v)
            for k, v in npgpt_arrays.items()}


def gpt2_config_from_hf(hf: dict, where: str = "config.json") -> GPTConfig:
    """A GPTConfig from the dict of a Hugging Face GPT2Config (config.json); settings npgpt's GPT
    does not have raise ValueError. Dropout is 0 (inference); change it for fine-tuning."""
    if hf.get("model_type") != "gpt2":
        raise ValueError(f"{where} has model_type={hf.get('model_type')!r}: expected 'gpt2' "
                         f"(a GPT-2 folder from Hugging Face)")
    missing = [k for k in ("n_embd", "n_layer", "n_head", "vocab_size") if k not in hf]
    if missing:
        raise ValueError(f"{where} lacks {missing}: expected the fields of a GPT2Config")
    act = hf.get("activation_function", "gelu_new")
    if act not in HF_ACTIVATIONS:
        raise ValueError(f"{where} has activation_function={act!r}: expected one of "
                         f"{sorted(HF_ACTIVATIONS)}")
    n_inner = hf.get("n_inner")
    unsupported = {
        "n_inner": (n_inner is not None and n_inner != 4 * hf["n_embd"], "None or 4 * n_embd"),
        "scale_attn_weights": (hf.get("scale_attn_weights", True) is not True, "true"),
        "scale_attn_by_inverse_layer_idx": (bool(hf.get("scale_attn_by_inverse_layer_idx")), "false"),
        "add_cross_attention": (bool(hf.get("add_cross_attention")), "false"),
    }
    for key, (bad, expected) in unsupported.items():
        if bad:
            raise ValueError(f"{where} has {key}={hf[key]!r}: npgpt's GPT needs {expected}")
    return GPTConfig(vocab_size=hf["vocab_size"], block_size=hf.get("n_positions", hf.get("n_ctx", 1024)),
                     n_layer=hf["n_layer"], n_head=hf["n_head"], n_embd=hf["n_embd"], dropout=0.0,
                     bias=True, activation=HF_ACTIVATIONS[act], pos_encoding="learned",
                     tie_weights=hf.get("tie_word_embeddings", True),
                     layer_norm_eps=hf.get("layer_norm_epsilon", 1e-5))


def load_gpt2(folder, dtype: str = "float32"):
    """A GPT holding the weights of a local Hugging Face GPT-2 folder (config.json +
    model.safetensors), in either layout (see the module docstring). A missing file, a
    config that is not GPT-2's, a missing or mis-shaped weight raise an error that names it."""
    from safetensors import SafetensorError, safe_open

    from .models.gpt import GPT

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"GPT-2 folder {str(folder)!r} is not a directory: expected a "
                                f"folder with config.json and model.safetensors")
    config_path, weights_path = folder / "config.json", folder / "model.safetensors"
    for p, what in ((config_path, "the model's GPT2Config"), (weights_path, "its weights")):
        if not p.is_file():
            raise FileNotFoundError(f"GPT-2 folder {str(folder)!r} has no {p.name}: expected "
                                    f"{what} there (as save_pretrained writes)")
    try:
        hf_config = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{str(config_path)!r} is not valid JSON: {e}") from None
    if not isinstance(hf_config, dict):
        raise ValueError(f"{str(config_path)!r} holds a {type(hf_config).__name__}: expected a JSON object")
    cfg = gpt2_config_from_hf(hf_config, str(config_path)).replace(dtype=dtype)
    try:
        with safe_open(str(weights_path), framework="numpy") as f:
            hf_arrays = {k: f.get_tensor(k) for k in f.keys()}
    except SafetensorError as e:
        raise ValueError(f"{str(weights_path)!r} is not a readable safetensors file: {e}") from None
    arrays = gpt2_from_hf(hf_arrays)
    model = GPT(cfg)
    expected = {name: p.shape for name, p in model.named_parameters()}
    layout = "save_pretrained" if any(k.startswith(HF_PREFIX) for k in hf_arrays) else "published"
    hf_name = (lambda k: k if k.startswith("lm_head.") or layout == "published" else HF_PREFIX + k)
    hf_shape = (lambda k, shape: tuple(shape)[::-1] if k == "lm_head.weight" else tuple(shape))
    for name, shape in expected.items():
        if name not in arrays:
            raise ValueError(f"{str(weights_path)!r} lacks the weight {hf_name(name)!r}: expected "
                             f"an array of shape {hf_shape(name, shape)}")
        if tuple(arrays[name].shape) != shape:
            raise ValueError(f"{str(weights_path)!r}: weight {hf_name(name)!r} has shape "
                             f"{hf_shape(name, arrays[name].shape)}: expected {hf_shape(name, shape)}")
    unexpected = sorted(set(arrays) - set(expected))
    if unexpected == ["lm_head.weight"] and cfg.tie_weights:
        # save_pretrained may keep the tied head; it must equal the token table
        if not np.array_equal(arrays.pop("lm_head.weight").T, arrays["wte.weight"]):
            raise ValueError(f"{str(weights_path)!r}: lm_head.weight differs from "
                             f"transformer.wte.weight although tie_word_embeddings is true")
        unexpected = []
    if unexpected:
        raise ValueError(f"{str(weights_path)!r} has weights a GPT-2 of this config does not: "
                         f"{[hf_name(k) for k in unexpected[:5]]}")
    model.load_state_dict(arrays)
    return model


def gpt2_config_to_hf(cfg: GPTConfig) -> dict:
    """The config.json dict of a Hugging Face GPT2Config equivalent to cfg."""
    if cfg.pos_encoding != "learned" or not cfg.bias:
        raise ValueError(f"GPT-2's layout needs pos_encoding='learned' and bias=True: the config "
                         f"has pos_encoding={cfg.pos_encoding!r}, bias={cfg.bias!r}")
    return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
            "vocab_size": cfg.vocab_size, "n_positions": cfg.block_size, "n_embd": cfg.n_embd,
            "n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_inner": None,
            "activation_function": NPGPT_ACTIVATIONS[cfg.activation],
            "layer_norm_epsilon": cfg.layer_norm_eps, "tie_word_embeddings": cfg.tie_weights,
            "resid_pdrop": cfg.dropout, "embd_pdrop": cfg.dropout, "attn_pdrop": cfg.dropout,
            "scale_attn_weights": True, "initializer_range": 0.02}


def save_gpt2(model, folder, tokenizer=None) -> Path:
    """Write model as a Hugging Face GPT-2 folder (config.json + model.safetensors in
    save_pretrained's layout; vocab.json + merges.txt if a BPETokenizer is given), loadable by
    GPT2LMHeadModel.from_pretrained and by load_gpt2. Each file is written atomically."""
    from safetensors.numpy import save as st_save

    folder = Path(folder)
    cfg_dict = gpt2_config_to_hf(model.config)
    arrays = {k: np.ascontiguousarray(v) for k, v in gpt2_to_hf(model.state_dict()).items()}
    write_atomic(folder / "model.safetensors", st_save(arrays, metadata={"format": "pt"}))
    write_atomic(folder / "config.json", json.dumps(cfg_dict, indent=2).encode())
    if tokenizer is not None:
        tokenizer.save(folder)
    return folder
