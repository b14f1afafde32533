"""Sampling text from a trained GPT: the glue between a checkpoint, a tokenizer and GPT.generate.

    model, tok = load_model("out/ckpt.safetensors")      # or load_model(gpt2="path/to/gpt2")
    texts = generate_text(model, tok, "def ", max_new_tokens=200, temperature=0.8, top_k=40,
                          seed=0, stream=print)

GPT.generate does the sampling (greedy at temperature 0; temperature, top-k, top-p; the KV
cache; the sliding window past block_size). This module tokenizes the prompt (naming any
character the tokenizer does not know), decodes, and streams: generation runs in chunks that
share one random Generator, so the streamed text is the same text one call of generate would
give, printed as it grows. Each chunk starts by refilling the KV cache from the whole context (one
batched forward), so a chunk is STREAM_CHUNK tokens or an eighth of the context, whichever is
more: the refills then cost a bounded fraction of the generation, however long the text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from . import checkpoint as ckpt_io
from .finetune.init import MODELS, load_init
from .tokenizers import BPETokenizer

STREAM_CHUNK = 16     # least tokens per generate call while streaming (each call refills the KV cache)
SAMPLE_SEPARATOR = "\n---\n"   # between samples when num_samples > 1


def load_model(checkpoint=None, gpt2=None, dtype: str | None = None):
    """(model, tokenizer) from an npgpt checkpoint file, or from a local Hugging Face GPT-2
    folder (config.json, model.safetensors, vocab.json, merges.txt). Exactly one of the two."""
    if (checkpoint is None) == (gpt2 is None):
        raise ValueError("load_model: pass exactly one of checkpoint (an npgpt checkpoint file) "
                         "and gpt2 (a Hugging Face GPT-2 folder)")
    if gpt2 is not None:
        model = ckpt_io.load_gpt2(gpt2, dtype=dtype or "float32")
        folder = Path(gpt2)
        if not (folder / "vocab.json").is_file() or not (folder / "merges.txt").is_file():
            raise FileNotFoundError(f"GPT-2 folder {str(folder)!r} has no vocab.json and merges.txt: "
                                    f"expected GPT-2's tokenizer files beside the weights")
        tok = BPETokenizer.from_pretrained(folder)
    else:
        # the GPT of any npgpt run: `npgpt train`, or `npgpt finetune` (a classifier's GPT, LoRA
        # adapters folded in), read by the same code that starts a fine-tune
        start = load_init(checkpoint, dtype=dtype, where=f"checkpoint {str(checkpoint)!r}",
                          expected=f"expected {MODELS}")
        model, tok = start.model, start.tokenizer
    if tok.vocab_size > model.config.vocab_size:
        raise ValueError(f"the tokenizer has {tok.vocab_size} tokens but the model only "
                         f"{model.config.vocab_size}: expected them to belong together")
    model.eval()
    return model, tok


def default_prompt(tokenizer) -> str:
    """What to start from when no prompt is given: GPT-2's <|endoftext|> (the start of a
    document), or a newline for a character tokenizer (the first character if it has none)."""
    specials = getattr(tokenizer, "special_tokens", None)
    if specials:
        return specials[0]
    chars = getattr(tokenizer, "chars", None)
    if chars is not None and "\n" not in chars:
        return chars[0]
    return "\n"


def encode_prompt(tokenizer, prompt: str) -> np.ndarray:
    """The prompt's token ids (int64); an empty prompt, or a character the tokenizer does not
    know, raises ValueError saying which and where."""
    if not isinstance(prompt, str):
        raise TypeError(f"prompt is a {type(prompt).__name__}: expected a str")
    if not prompt:
        raise ValueError("prompt is empty: expected at least one character to continue "
                         "(leave it out to start from the default prompt)")
    try:
        ids = tokenizer.encode(prompt)
    except ValueError as e:
        raise ValueError(f"prompt {prompt[:60]!r}{'...' if len(prompt) > 60 else ''}: {e}") from None
    return np.asarray(ids, dtype=np.int64)


def generate_text(model, tokenizer, prompt: str, max_new_tokens: int, temperature: float = 1.0,
                  top_k: int | None = None, top_p: float | None = None, seed: int | None = 0,
                  use_cache: bool = True, window: bool = True, num_samples: int = 1,
                  stream: Callable[[str], object] | None = None) -> list[str]:
    """num_samples continuations of prompt (each the prompt followed by its new text).

    The arguments after max_new_tokens are GPT.generate's. The samples are drawn together as one
    batch from one Generator seeded by seed. stream: called with each new piece of text as it is
    made (the prompt first), sample after sample when num_samples > 1 (which are then made whole
    before streaming).
    """
    for name, value, low in (("num_samples", num_samples, 1), ("max_new_tokens", max_new_tokens, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name}={value!r}, expected an integer >= {low}")
    ids = encode_prompt(tokenizer, prompt)
    if not window and len(ids) > model.config.block_size:
        raise ValueError(f"the prompt is {len(ids)} tokens long: expected at most block_size="
                         f"{model.config.block_size} without the sliding window (or allow the "
                         f"window: it keeps the last block_size tokens)")
    batch = np.repeat(ids[None], num_samples, axis=0)                    # (num_samples, T)
    rng = np.random.default_rng(seed)     # passed as generate's seed: every chunk continues it
    kw = dict(temperature=temperature, top_k=top_k, top_p=top_p, use_cache=use_cache, window=window,
              vocab_limit=min(tokenizer.vocab_size, model.config.vocab_size))   # only ids with text
    if stream is None or num_samples > 1:
        out = model.generate(batch, max_new_tokens, seed=rng, **kw)
        texts = [tokenizer.decode(row) for row in out]
        if stream is not None:
            for i, text in enumerate(texts):
                stream(text if i == 0 else SAMPLE_SEPARATOR + text)
        return texts
    return [_stream(model, tokenizer, batch, max_new_tokens, rng, kw, stream)]


def _stream(model, tokenizer, batch, max_new_tokens: int, rng, kw: dict, stream: Callable) -> str:
    """Generate in chunks, streaming the text as it grows; the prompt is streamed with the first
    chunk, after generate has checked its arguments (a bad one prints nothing)."""
    shown, started = tokenizer.decode(batch[0]), False
    out, left = batch, max_new_tokens
    while left > 0 or not started:
        n = min(max(STREAM_CHUNK, min(out.shape[1], model.config.block_size) // 8), left)
        longer = model.generate(out, n, seed=rng, **kw)
        if not started:
            stream(shown)
            started = True
        if longer.shape[1] == out.shape[1]:          # nothing more (window=False at block_size)
            break
        out, left = longer, left - n
        text = tokenizer.decode(out[0])
        # hold back a trailing partial UTF-8 character (decoded as U+FFFD) until it completes
        stable = text.rstrip("\ufffd") if left > 0 else text
        if stable.startswith(shown):
            stream(stable[len(shown):])
            shown = stable
    text = tokenizer.decode(out[0])
    if text != shown and text.startswith(shown):
        stream(text[len(shown):])
    return text


def vocab_note(model, tokenizer) -> str | None:
    """What to say when the tokenizer has fewer tokens than the model's vocabulary (a padded
    vocabulary such as nanoGPT's 50304, or a tokenizer trained smaller than the model's config):
    sampling then draws only the ids the tokenizer can decode. None when they match."""
    if tokenizer.vocab_size >= model.config.vocab_size:
        return None
    return (f"note: the tokenizer has {tokenizer.vocab_size:,} tokens and the model's vocabulary "
            f"{model.config.vocab_size:,}: sampling draws only the {tokenizer.vocab_size:,} ids the "
            f"tokenizer can decode")
