"""Evaluating and using a trained seq2seq model: exact match, the validation loss, translation.

    model, vocab = load_seq2seq("runs/reverse")     # a Transformer in eval mode and its vocabulary
    translate_texts(model, vocab, ["0123456789"], beam_size=4)           # -> ['9876543210']
    evaluate(model, pairs).exact_match              # greedy: whole outputs equal to their targets

translate_ids batches the sources (padded, with the source padding mask) through
Transformer.translate (greedy decoding, or beam search with a GNMT length penalty).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from .. import checkpoint as ckpt_io
from ..data import Seq2SeqVocab, pad_batch
from ..trainer import CHECKPOINT_NAME
from .seq2seq_data import check_pairs


class Evaluation(NamedTuple):
    exact_match: float      # correct / n
    correct: int            # sources whose whole output equals the target
    n: int                  # held-out pairs
    hypotheses: list        # the output id lists, in the order of the pairs
    beam_size: int


def _chunks(n: int, size: int):
    for k in range(0, n, size):
        yield slice(k, min(k + size, n))


def translate_ids(model, sources, max_len: int | None = None, beam_size: int = 1,
                  length_penalty: float = 0.6, batch_size: int = 128, return_scores: bool = False,
                  bos_id: int = 1, eos_id: int = 2):
    """Translate a list of source id lists: a list of output id lists (after bos, without eos).

    Sources are padded into batches of batch_size (pad id: the model's pad_id); max_len (the
    most generated tokens, eos included) defaults to the model's max_len. An empty source, one
    longer than the model's max_len, or an id outside the source vocabulary raises ValueError
    naming which source. return_scores: also the scores (see Transformer.translate).
    """
    cfg = model.config
    sources = [list(s) for s in sources]
    if max_len is None:
        max_len = cfg.max_len
    check_pairs([(s, [0]) for s in sources], cfg.src_vocab_size, cfg.max_len,
                where=lambda i: f"sources[{i}]")
    hyps, scores = [], []
    for part in _chunks(len(sources), batch_size):
        batch = sources[part]
        S = max(map(len, batch))
        src = np.full((len(batch), S), cfg.pad_id, dtype=np.int64)
        for b, s in enumerate(batch):
            src[b, :len(s)] = s
        src_pad = np.arange(S) >= np.array([len(s) for s in batch])[:, None]      # (B, S)
        h, sc = model.translate(src, max_len=max_len, beam_size=beam_size, length_penalty=length_penalty,
                                src_pad=src_pad, bos_id=bos_id, eos_id=eos_id, return_scores=True)
        hyps += h
        scores += [float(x) for x in sc]
    return (hyps, scores) if return_scores else hyps


def evaluate(model, pairs, beam_size: int = 1, length_penalty: float = 0.6,
             batch_size: int = 256) -> Evaluation:
    """Exact match: decode every source (greedy when beam_size is 1), count the outputs equal
    to their target. The model decodes up to its max_len tokens."""
    cfg = model.config
    check_pairs(pairs, cfg.src_vocab_size, cfg.max_len, tgt_vocab_size=cfg.tgt_vocab_size)
    hyps = translate_ids(model, [s for s, _ in pairs], beam_size=beam_size,
                         length_penalty=length_penalty, batch_size=batch_size)
    correct = sum(h == list(t) for h, (_, t) in zip(hyps, pairs))
    return Evaluation(correct / len(pairs), correct, len(pairs), hyps, beam_size)


def validation_loss(model, pairs, vocab, batch_size: int = 256) -> float:
    """The model's loss over pairs (label-smoothed cross-entropy per target token, eos
    included), averaged over all their target tokens: batches weighted by their tokens."""
    total, tokens = 0.0, 0
    for part in _chunks(len(pairs), batch_size):
        batch = pad_batch(pairs[part], vocab, model.config.max_len)
        n = int((~batch.tgt_pad).sum())
        total += float(model.forward(*batch)[1]) * n
        tokens += n
    return total / tokens


def encode_texts(vocab, texts, max_len: int, where: Callable = None) -> list[list[int]]:
    """The ids of each text; an empty text, a character not in vocab, or a text longer than
    max_len raises ValueError saying which text (where(i), default 'input i+1'), which
    character and where."""
    where = where or (lambda i: f"input {i + 1}")
    known, out = set(vocab.symbols), []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{where(i)} is a {type(text).__name__}: expected a str")
        if not text:
            raise ValueError(f"{where(i)} is empty: expected at least one symbol to translate")
        for pos, c in enumerate(text):
            if c not in known:
                raise ValueError(f"{where(i)} ({text!r}): character {c!r} at position {pos} is not in "
                                 f"the model's vocabulary ({''.join(vocab.symbols)!r})")
        if len(text) > max_len:
            raise ValueError(f"{where(i)} has {len(text)} symbols: longer than the model's "
                             f"max_len={max_len} (the longest source it was built for)")
        out.append(vocab.encode(text))
    return out


def translate_texts(model, vocab, texts, beam_size: int = 1, length_penalty: float = 0.6,
                    max_len: int | None = None, batch_size: int = 128, return_scores: bool = False,
                    where: Callable = None):
    """Translate strings: one output string per text (see translate_ids and encode_texts)."""
    ids = encode_texts(vocab, texts, model.config.max_len, where)
    hyps, scores = translate_ids(model, ids, max_len=max_len, beam_size=beam_size,
                                 length_penalty=length_penalty, batch_size=batch_size,
                                 return_scores=True, bos_id=vocab.BOS, eos_id=vocab.EOS)
    outs = [vocab.decode(h) for h in hyps]
    return (outs, scores) if return_scores else outs


def load_seq2seq(checkpoint, dtype: str | None = None):
    """(model in eval mode, vocab) from a checkpoint of `npgpt seq2seq train`: the file or its
    run folder. Any other checkpoint (a GPT's, say) raises ValueError saying what it holds."""
    ck = _load_checkpoint(checkpoint)
    if ck.meta.get("model") != "Transformer" or "vocab" not in ck.meta:
        what = (f"a {ck.meta.get('model')!r} model" if ck.meta.get("model") != "Transformer"
                else "a Transformer without a seq2seq vocabulary")
        hint = " (saved by `npgpt train`?)" if ck.meta.get("model") == "GPT" else ""
        raise ValueError(f"checkpoint {str(ck.path)!r} is not a seq2seq checkpoint: it holds {what}"
                         f"{hint}; expected one saved by `npgpt seq2seq train`")
    try:
        vocab = Seq2SeqVocab.from_dict(ck.meta["vocab"])
    except ValueError as e:
        raise ValueError(f"checkpoint {str(ck.path)!r}: its vocabulary is not valid: {e}") from None
    cfg = ck.config
    if not vocab.size == cfg.src_vocab_size == cfg.tgt_vocab_size:
        raise ValueError(f"checkpoint {str(ck.path)!r}: its vocabulary has {vocab.size} ids but the "
                         f"model {cfg.src_vocab_size} source / {cfg.tgt_vocab_size} target ids: "
                         f"expected them to belong together")
    model = ck.build_model(dtype=dtype)
    model.eval()
    return model, vocab


def _load_checkpoint(checkpoint):
    path = Path(checkpoint)
    if path.is_dir():                     # a run's folder: its checkpoint
        path = path / CHECKPOINT_NAME
    return ckpt_io.load(path)
