"""Where a fine-tune starts: the GPT and the tokenizer of `npgpt finetune --init`.

    start = load_init("out")                  # npgpt run folder (its ckpt.safetensors)
    start = load_init("out/ckpt.safetensors")  # or the checkpoint file itself
    start = load_init("path/to/gpt2")          # a local Hugging Face GPT-2 folder
    start.model, start.tokenizer, start.source

An npgpt checkpoint may come from `npgpt train` (a GPT) or from `npgpt finetune` (a GPT, or a
GPTClassifier whose GPT is taken, its head left behind; LoRA adapters saved unmerged are folded
into the weights). A GPT-2 folder needs config.json and model.safetensors (the weights, read by
GPT.from_pretrained) and vocab.json and merges.txt (the byte-level BPE tokenizer).

The returned GPT is built anew from the saved config with `dropout` (None: the saved value) and
`dtype`, its dropout generators seeded by `seed`: a fine-tune continues the weights, not the
pre-training run's random state.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import checkpoint as ckpt_io
from ..config import GPTConfig
from ..models.gpt import GPT
from ..tokenizers import BPETokenizer, tokenizer_from_dict
from .lora import add_lora, merge_lora

CHECKPOINT_NAME = "ckpt.safetensors"
GPT2_FILES = ("config.json", "model.safetensors", "vocab.json", "merges.txt")
MODELS = ("an npgpt checkpoint (a .safetensors file written by `npgpt train` or `npgpt finetune`, "
          "or a run folder holding ckpt.safetensors) or a Hugging Face GPT-2 folder (config.json, "
          "model.safetensors, vocab.json, merges.txt)")
EXPECTED = f"expected {MODELS}, or 'none' (random initialisation)"     # what --init takes


@dataclass
class Init:
    model: GPT            # the weights to start from
    tokenizer: object     # CharTokenizer or BPETokenizer: what the model reads
    source: str           # for people: "npgpt checkpoint 'out/ckpt.safetensors' (step 1500)"
    kind: str             # "npgpt" | "gpt2"


def load_init(init, dtype: str | None = "float32", dropout: float | None = None, seed: int = 0,
              where: str | None = None, expected: str = EXPECTED) -> Init:
    """The GPT and tokenizer at `init` (see the module docstring). A path that is neither an
    npgpt checkpoint nor a GPT-2 folder raises an error that says what was found there.
    dtype None keeps the saved one; `where` names the path in errors (default: "--init PATH"),
    `expected` what it may be (default: what --init takes, 'none' included)."""
    path = Path(init)
    where = where or f"--init {str(init)!r}"
    if not path.exists():
        raise FileNotFoundError(f"{where} does not exist: {expected}")
    if path.is_dir():
        if (path / CHECKPOINT_NAME).is_file():
            return _from_checkpoint(path / CHECKPOINT_NAME, where, dtype, dropout, seed, expected)
        found = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())
        if {"config.json", "model.safetensors"} & set(found):
            missing = [name for name in GPT2_FILES if not (path / name).is_file()]
            if missing:
                raise FileNotFoundError(f"{where} looks like a GPT-2 folder but has no {missing}: "
                                        f"expected all of {list(GPT2_FILES)}")
            return _from_gpt2(path, dtype or "float32", dropout, seed)
        shown = f"{found[:8]}{' ...' if len(found) > 8 else ''}" if found else "nothing"
        raise ValueError(f"{where} is a folder holding {shown}, neither an npgpt run (no "
                         f"{CHECKPOINT_NAME}) nor a GPT-2 folder (no config.json and "
                         f"model.safetensors): {expected}")
    return _from_checkpoint(path, where, dtype, dropout, seed, expected)


def _from_checkpoint(path: Path, where: str, dtype, dropout, seed, expected: str) -> Init:
    try:
        ck = ckpt_io.load(path)
    except ValueError as e:
        raise ValueError(f"{where} is not an npgpt checkpoint: {e}; {expected}") from None
    meta = ck.meta
    if meta.get("model") == "GPT":
        config, prefix = meta.get("config"), ""
    elif meta.get("model") == "GPTClassifier":             # a classification run: its GPT
        config, prefix = meta.get("gpt_config"), "gpt."
    else:
        raise ValueError(f"{where} holds a {meta.get('model')!r} model: expected a GPT (or a "
                         f"GPTClassifier of `npgpt finetune`, whose GPT is used)")
    if "tokenizer" not in meta:
        raise ValueError(f"{where} holds no tokenizer: expected a checkpoint of `npgpt train` "
                         f"or `npgpt finetune`, which save theirs")
    try:
        cfg = GPTConfig.from_dict(config)
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        raise ValueError(f"{where}: its GPT config is missing or not valid ({e})") from None
    state = {k[len(prefix):]: v for k, v in ck.model_state.items() if k.startswith(prefix)}
    lora = meta.get("lora")                 # adapters saved unmerged by `npgpt finetune`
    model = _build(cfg, dtype, dropout, seed)
    if lora:
        add_lora(model, lora["rank"], lora["alpha"], lora["dropout"], lora["targets"])
    try:
        model.load_state_dict(state)
    except (KeyError, ValueError) as e:
        raise ValueError(f"{where}: its weights do not fit its config: {e.args[0] if e.args else e}") from None
    if lora:
        merge_lora(model)
    for p in model.parameters():
        p.requires_grad = True
    step = meta.get("step")
    what = f"npgpt checkpoint {str(path)!r}" + (f" (step {step})" if step is not None else "")
    if lora:
        what += f", its LoRA adapters (rank {lora['rank']}) merged"
    return Init(model, tokenizer_from_dict(meta["tokenizer"]), what, "npgpt")


def _from_gpt2(folder: Path, dtype, dropout, seed) -> Init:
    loaded = GPT.from_pretrained(folder, dtype=dtype)
    tok = BPETokenizer.from_pretrained(folder)
    if tok.vocab_size > loaded.config.vocab_size:
        raise ValueError(f"--init {str(folder)!r}: the tokenizer has {tok.vocab_size} tokens but the "
                         f"model only {loaded.config.vocab_size}: expected them to belong together")
    model = _build(loaded.config, dtype, dropout, seed)
    model.load_state_dict(loaded.state_dict())
    return Init(model, tok, f"GPT-2 folder {str(folder)!r}", "gpt2")


def _build(cfg: GPTConfig, dtype: str | None, dropout, seed: int) -> GPT:
    changes = {"dtype": dtype or cfg.dtype}
    if dropout is not None:
        changes["dropout"] = dropout
    return GPT(cfg.replace(**changes), seed=seed)
