"""GPT-2 in Hugging Face's layout: the names, the config, and reading a local folder.

A folder as `save_pretrained` writes it, or as the published gpt2 checkpoints come, holds
config.json (a GPT2Config) and model.safetensors (the weights). The two layouts one meets:

    save_pretrained   keys "transformer.h.0...", lm_head.weight left out or kept when tied
    published         keys "h.0...", the attention-mask buffers attn.bias / attn.masked_bias,
                      no lm_head

GPT-2's Conv1D stores its weight as (in, out), which is npgpt's Linear layout, so weights are
copied without a transpose; names map one to one:

    HF  transformer.h.0.attn.c_attn.weight  <->  npgpt  h.0.attn.c_attn.weight
    HF  lm_head.weight (V, C), a torch nn.Linear  <->  npgpt  lm_head.weight (C, V), transposed
        (only in untied models; a tied head is wte.weight)

Nothing here builds a model: GPT.from_pretrained reads a folder with read_gpt2 and loads
`weights_for` its parameters; npgpt.checkpoint.save_gpt2 writes one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open

from ..config import GPTConfig

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


GPT2_EOS = 50256      # GPT-2's <|endoftext|>: its bos and eos token


def gpt2_config_to_hf(cfg: GPTConfig, eos_token_id: int | None = None) -> dict:
    """The config.json dict of a Hugging Face GPT2Config equivalent to cfg. Its bos and eos
    token: eos_token_id (the tokenizer's <|endoftext|>) if given, else GPT-2's 50256 where the
    vocabulary holds it, else none (an id outside the vocabulary makes transformers warn)."""
    if cfg.pos_encoding != "learned" or not cfg.bias:
        raise ValueError(f"GPT-2's layout needs pos_encoding='learned' and bias=True: the config "
                         f"has pos_encoding={cfg.pos_encoding!r}, bias={cfg.bias!r}")
    if eos_token_id is None and cfg.vocab_size > GPT2_EOS:
        eos_token_id = GPT2_EOS
    if eos_token_id is not None and not 0 <= eos_token_id < cfg.vocab_size:
        raise ValueError(f"eos_token_id={eos_token_id!r}: expected an id in [0, {cfg.vocab_size}) "
                         f"(the vocabulary), or None")
    return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
            "vocab_size": cfg.vocab_size, "n_positions": cfg.block_size, "n_embd": cfg.n_embd,
            "n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_inner": None,
            "activation_function": NPGPT_ACTIVATIONS[cfg.activation],
            "layer_norm_epsilon": cfg.layer_norm_eps, "tie_word_embeddings": cfg.tie_weights,
            "resid_pdrop": cfg.dropout, "embd_pdrop": cfg.dropout, "attn_pdrop": cfg.dropout,
            "scale_attn_weights": True, "initializer_range": 0.02,
            "bos_token_id": eos_token_id, "eos_token_id": eos_token_id}


@dataclass
class GPT2Folder:
    """What read_gpt2 found in a folder.

    config:   the GPTConfig of its config.json (dtype float32, dropout 0)
    arrays:   {npgpt name: array} of its model.safetensors (gpt2_from_hf), not yet checked
    layout:   "save_pretrained" or "published" (to name weights as the file does)
    weights:  the path of model.safetensors (for errors)
    """
    config: GPTConfig
    arrays: dict
    layout: str
    weights: Path

    def hf_name(self, name: str) -> str:
        return name if name.startswith("lm_head.") or self.layout == "published" else HF_PREFIX + name

    def weights_for(self, shapes: dict) -> dict:
        """The arrays for a GPT whose parameters have `shapes` {npgpt name: shape}: every one
        present with its shape, nothing else (a tied lm_head kept by save_pretrained must equal
        the token table). An error names the weight as the file does, with torch's shapes."""
        arrays, where = dict(self.arrays), repr(str(self.weights))
        hf_shape = (lambda k, shape: tuple(shape)[::-1] if k == "lm_head.weight" else tuple(shape))
        for name, shape in shapes.items():
            if name not in arrays:
                raise ValueError(f"{where} lacks the weight {self.hf_name(name)!r}: expected an "
                                 f"array of shape {hf_shape(name, shape)}")
            if tuple(arrays[name].shape) != tuple(shape):
                raise ValueError(f"{where}: weight {self.hf_name(name)!r} has shape "
                                 f"{hf_shape(name, arrays[name].shape)}: expected {hf_shape(name, shape)}")
        unexpected = sorted(set(arrays) - set(shapes))
        if unexpected == ["lm_head.weight"] and self.config.tie_weights:
            if not np.array_equal(arrays.pop("lm_head.weight").T, arrays["wte.weight"]):
                raise ValueError(f"{where}: lm_head.weight differs from transformer.wte.weight "
                                 f"although tie_word_embeddings is true")
            unexpected = []
        if unexpected:
            raise ValueError(f"{where} has weights a GPT-2 of this config does not: "
                             f"{[self.hf_name(k) for k in unexpected[:5]]}")
        return arrays


def read_gpt2(folder) -> GPT2Folder:
    """Read a local Hugging Face GPT-2 folder (config.json + model.safetensors). A missing file
    or folder, invalid JSON, a config that is not GPT-2's, an unreadable weights file raise an
    error that names it."""
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
    config = gpt2_config_from_hf(hf_config, str(config_path))
    try:
        with safe_open(str(weights_path), framework="numpy") as f:
            hf_arrays = {k: f.get_tensor(k) for k in f.keys()}
    except SafetensorError as e:
        raise ValueError(f"{str(weights_path)!r} is not a readable safetensors file: {e}") from None
    layout = "save_pretrained" if any(k.startswith(HF_PREFIX) for k in hf_arrays) else "published"
    return GPT2Folder(config, gpt2_from_hf(hf_arrays), layout, weights_path)
