"""Sequence-to-sequence data: the vocabulary, parallel text, and padded batches.

    vocab, pairs = load_pairs_tsv("train.tsv")                  # or tasks.make_task(...)
    for batch in iterate_batches(pairs, vocab, batch_size=64, max_len=32, rng=rng):
        logits, loss = model.forward(batch.src, batch.tgt_in, batch.tgt_out,
                                     batch.src_pad, batch.tgt_pad)
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .checks import check_int, check_rng
from .text import load_text


class Seq2SeqVocab:
    """Ids for a seq2seq task: pad=0, bos=1, eos=2, unk=3, then one id per symbol (character).

    Source and target share the vocabulary (so share_embeddings works). encode maps each
    character of a string to its id; decode drops pad/bos/unk, stops at the first eos, and joins.
    """

    PAD, BOS, EOS, UNK = 0, 1, 2, 3
    SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")

    def __init__(self, symbols):
        symbols = list(symbols)
        for i, s in enumerate(symbols):
            if not isinstance(s, str) or len(s) != 1:
                raise ValueError(f"symbols[{i}] is {s!r}: expected a single character")
        if len(set(symbols)) != len(symbols):
            dup = next(s for s in symbols if symbols.count(s) > 1)
            raise ValueError(f"symbols holds {dup!r} more than once: expected unique characters")
        self.symbols = symbols
        self._stoi = {s: i + len(self.SPECIALS) for i, s in enumerate(symbols)}

    pad_id, bos_id, eos_id, unk_id = PAD, BOS, EOS, UNK

    @property
    def size(self) -> int:
        """Number of ids: the 4 specials plus the symbols (the model's vocab size)."""
        return len(self.SPECIALS) + len(self.symbols)

    vocab_size = size

    def encode(self, text: str, allow_unk: bool = False) -> list[int]:
        """The id of each character; an unknown one raises ValueError, or gives unk if allow_unk."""
        if not isinstance(text, str):
            raise TypeError(f"text is a {type(text).__name__}: expected a str")
        out = []
        for pos, c in enumerate(text):
            i = self._stoi.get(c)
            if i is None:
                if not allow_unk:
                    raise ValueError(f"text[{pos}] is {c!r}, a symbol not in the vocabulary "
                                     f"({len(self.symbols)} symbols; allow_unk=True maps it to unk)")
                i = self.UNK
            out.append(i)
        return out

    def decode(self, ids) -> str:
        """Symbols of ids up to the first eos; pad, bos and unk are skipped (not a round trip
        of every id list: it reads model output)."""
        out = []
        for pos, i in enumerate(np.asarray(ids).ravel().tolist()):
            if i == self.EOS:
                break
            if not 0 <= i < self.size:
                raise ValueError(f"ids[{pos}] is {i}: expected ids in [0, {self.size})")
            if i >= len(self.SPECIALS):
                out.append(self.symbols[i - len(self.SPECIALS)])
        return "".join(out)

    def to_dict(self) -> dict:
        return {"type": "seq2seq", "symbols": "".join(self.symbols)}

    @classmethod
    def from_dict(cls, d: dict) -> Seq2SeqVocab:
        if not isinstance(d, dict) or d.get("type") != "seq2seq" or "symbols" not in d:
            raise ValueError(f"d is {str(d)[:60]!r}: expected a Seq2SeqVocab.to_dict() "
                             "({'type': 'seq2seq', 'symbols': ...})")
        return cls(d["symbols"])

    def __eq__(self, other) -> bool:
        return isinstance(other, Seq2SeqVocab) and self.symbols == other.symbols

    def __repr__(self) -> str:
        return f"Seq2SeqVocab({''.join(self.symbols)!r})"


def load_pairs_tsv(path, vocab: Seq2SeqVocab | None = None):
    """Parallel text, one 'source<TAB>target' per line: (vocab, pairs of id lists).

    vocab None builds a character vocabulary from the file (sorted characters of both sides);
    pass the training file's vocab to read a test file with the same ids. Empty lines are
    skipped; a line without a tab, with more than one, or with an empty side raises ValueError
    with its line number and text.
    """
    from_file = vocab is None
    rows = []
    for lineno, line in enumerate(load_text(path).split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line:
            continue
        parts = line.split("\t")
        if len(parts) != 2 or not parts[0] or not parts[1]:
            why = ("no tab" if len(parts) == 1 else f"{len(parts) - 1} tabs" if len(parts) > 2
                   else "an empty side")
            raise ValueError(f"path {str(path)!r} line {lineno} is {line!r}: it has {why}, "
                             "expected 'source<TAB>target' with both sides non-empty")
        rows.append((lineno, parts[0], parts[1]))
    if from_file:
        vocab = Seq2SeqVocab(sorted({c for _, s, t in rows for c in s + t}))
    pairs = []
    for lineno, s, t in rows:
        try:
            pairs.append((vocab.encode(s), vocab.encode(t)))
        except ValueError as e:
            raise ValueError(f"path {str(path)!r} line {lineno}: {e}") from None
    return vocab, pairs


# --------------------------------------------------------------------------------------------
# Seq2seq batches
# --------------------------------------------------------------------------------------------


class Batch(NamedTuple):
    """A padded seq2seq batch; masks are True at padded positions (PyTorch's key padding mask)."""
    src: np.ndarray       # (B, S) int64: source ids, then pad
    tgt_in: np.ndarray    # (B, T) int64: bos, target ids, then pad      (the decoder's input)
    tgt_out: np.ndarray   # (B, T) int64: target ids, eos, then pad      (what it must predict)
    src_pad: np.ndarray   # (B, S) bool: True where src is padding
    tgt_pad: np.ndarray   # (B, T) bool: True where tgt_in / tgt_out are padding


def pad_batch(pairs, vocab: Seq2SeqVocab, max_len: int) -> Batch:
    """Pad a list of (src_ids, tgt_ids) into a Batch.

    S = longest source, T = longest target + 1 (for bos/eos). Raises ValueError when a source
    has more than max_len tokens, or a target more than max_len - 1 (its bos/eos takes a
    position), or a side is empty, or an id is outside [0, vocab.size).
    """
    max_len = check_int("max_len", max_len, 2)
    if len(pairs) == 0:
        raise ValueError("pairs is empty: expected at least one (src_ids, tgt_ids) pair")
    srcs, tgts = [list(s) for s, _ in pairs], [list(t) for _, t in pairs]
    _check_lengths(srcs, "source", max_len)
    _check_lengths(tgts, "target", max_len - 1)
    B, S, T = len(pairs), max(map(len, srcs)), max(map(len, tgts)) + 1
    src = np.full((B, S), vocab.PAD, dtype=np.int64)
    tgt_in = np.full((B, T), vocab.PAD, dtype=np.int64)
    tgt_out = np.full((B, T), vocab.PAD, dtype=np.int64)
    for b, (s, t) in enumerate(zip(srcs, tgts)):
        src[b, :len(s)] = s
        tgt_in[b, :len(t) + 1] = [vocab.BOS, *t]
        tgt_out[b, :len(t) + 1] = [*t, vocab.EOS]
    for name, arr in (("src", src), ("tgt", tgt_in)):
        if arr.min() < 0 or arr.max() >= vocab.size:
            raise ValueError(f"pairs hold a {name} id {arr.min() if arr.min() < 0 else arr.max()}: "
                             f"expected ids in [0, {vocab.size})")
    src_pad = np.arange(S) >= np.array([len(s) for s in srcs])[:, None]       # (B, S)
    tgt_pad = np.arange(T) >= np.array([len(t) + 1 for t in tgts])[:, None]   # (B, T)
    return Batch(src, tgt_in, tgt_out, src_pad, tgt_pad)


def _check_lengths(seqs, side: str, limit: int) -> None:
    for i, s in enumerate(seqs):
        if not s:
            raise ValueError(f"the {side} of pairs[{i}] is empty: expected at least one token")
        if len(s) > limit:
            extra = " (+1 for bos/eos)" if side == "target" else ""
            raise ValueError(f"the {side} of pairs[{i}] has {len(s)} tokens{extra}: longer than "
                             f"max_len = {limit + (side == 'target')}")


def iterate_batches(pairs, vocab: Seq2SeqVocab, batch_size: int, max_len: int,
                    rng: np.random.Generator, epochs: int | None = 1, shuffle: bool = True,
                    group_by_length: bool = False, drop_last: bool = False):
    """Yield padded Batches over pairs, epochs times (None: forever), reshuffled each epoch.

    The order comes only from rng, so the same seed gives the same batches. group_by_length
    sorts each pool of 50 batches' worth of (shuffled) pairs by length before cutting it into
    batches, then shuffles the batches: less padding, still random.
    """
    check_rng(rng)
    batch_size = check_int("batch_size", batch_size)
    if len(pairs) == 0:
        raise ValueError("pairs is empty: expected at least one (src_ids, tgt_ids) pair")
    epoch = 0
    while epochs is None or epoch < epochs:
        for idx in _epoch_order(pairs, batch_size, rng, shuffle, group_by_length, drop_last):
            yield pad_batch([pairs[i] for i in idx], vocab, max_len)
        epoch += 1


def _epoch_order(pairs, batch_size, rng, shuffle, group_by_length, drop_last) -> list[np.ndarray]:
    """The index arrays of one epoch's batches."""
    order = rng.permutation(len(pairs)) if shuffle else np.arange(len(pairs))
    if group_by_length:
        pool = batch_size * 50
        length = lambda i: (len(pairs[i][0]), len(pairs[i][1]))  # noqa: E731
        order = np.concatenate([sorted(order[k:k + pool], key=length)
                                for k in range(0, len(order), pool)]).astype(np.int64)
    batches = [order[k:k + batch_size] for k in range(0, len(order), batch_size)]
    if drop_last and len(batches[-1]) < batch_size:
        batches.pop()
    if group_by_length and shuffle:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches
