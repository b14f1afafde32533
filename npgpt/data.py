"""Data: the built-in corpus, text files, GPT batches, and seq2seq tasks for the Transformer.

Language modelling (GPT), as nanoGPT does it:

    text = default_corpus()                         # or load_text("input.txt")
    ids = np.array(tokenizer.encode(text))
    train, val = split(ids, val_fraction=0.1)       # first 90% / last 10%
    x, y = get_batch(train, batch_size=8, block_size=64, rng=np.random.default_rng(0))

Sequence to sequence (encoder-decoder Transformer):

    vocab, train_pairs, test_pairs = make_task("reverse", n_train=5000, n_test=500, seed=0)
    for batch in iterate_batches(train_pairs, vocab, batch_size=64, max_len=32, rng=rng):
        logits, loss = model.forward(batch.src, batch.tgt_in, batch.tgt_out,
                                     batch.src_pad, batch.tgt_pad)
"""

from __future__ import annotations

import operator
from pathlib import Path
from typing import NamedTuple

import numpy as np

# --------------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------------


def default_corpus() -> str:
    """The built-in corpus: the text of Python's documentation topics (about 460 KB of English).

    CPython ships, in the standard library module pydoc_data.topics, the text that help('topic')
    shows: a dict {topic name: text} made from the language reference ("assert", "for",
    "formatstrings", ...). Joined in sorted key order with blank lines between, it is a corpus
    that every Python install has and that needs no download. Its exact size depends on the
    Python version.
    """
    try:
        from pydoc_data.topics import topics
    except ImportError as e:
        raise ImportError("default_corpus() needs the standard library module pydoc_data.topics, "
                          "which this Python lacks (some distributions strip it): install the full "
                          "standard library, or pass a text file (load_text)") from e
    return "\n\n".join(topics[k] for k in sorted(topics))


def load_text(path) -> str:
    """The text of a UTF-8 file (a leading byte-order mark is dropped, line ends are kept).

    A missing file, a directory, bytes that are not UTF-8 (the error gives their offset) or an
    empty file raise an error that names the path.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"path {str(path)!r} does not exist: expected a UTF-8 text file")
    if path.is_dir():
        raise IsADirectoryError(f"path {str(path)!r} is a directory: expected a UTF-8 text file")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"path {str(path)!r} is not UTF-8 text: byte 0x{data[e.start]:02x} at "
                         f"offset {e.start} ({e.reason})") from None
    text = text.removeprefix("\ufeff")
    if not text:
        raise ValueError(f"path {str(path)!r} is empty: expected some text")
    return text


# --------------------------------------------------------------------------------------------
# Language-model batches
# --------------------------------------------------------------------------------------------


def _check_int(name: str, value, low: int = 1) -> int:
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} is {value!r}: expected an int") from None
    if value < low:
        raise ValueError(f"{name} is {value}: expected an int >= {low}")
    return value


def _check_rng(rng) -> None:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng is a {type(rng).__name__}: expected a np.random.Generator "
                        "(np.random.default_rng(seed))")


def split(ids, val_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Split a 1-D token array into (train, val): the first 1 - val_fraction and the rest.

    Not shuffled: the validation text is text the model never saw a piece of (nanoGPT's split).
    Both parts are int64 views of ids (no copy when ids is already int64).
    """
    ids = np.asarray(ids)
    if ids.ndim != 1 or not (np.issubdtype(ids.dtype, np.integer) or ids.size == 0):
        raise ValueError(f"ids has shape {ids.shape} and dtype {ids.dtype}: expected a 1-D array "
                         "of integer token ids")
    if not isinstance(val_fraction, (float, int)) or not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction is {val_fraction!r}: expected a number in (0, 1)")
    ids = ids.astype(np.int64, copy=False)
    n_train = int(len(ids) * (1 - val_fraction))
    return ids[:n_train], ids[n_train:]


def get_batch(data: np.ndarray, batch_size: int, block_size: int, rng: np.random.Generator,
              name: str = "data") -> tuple[np.ndarray, np.ndarray]:
    """batch_size random windows of data: x = data[o : o + T], y = data[o + 1 : o + T + 1].

    data: 1-D int array, at least block_size + 1 tokens   ->   x, y: int64 (batch_size, block_size)
    The offsets o are rng.integers(0, len(data) - block_size, batch_size), so the same generator
    state gives the same batch, bit for bit. y[b, t] is the token that follows x[b, t].
    name: what the error message calls data ("train", "val").
    """
    _check_rng(rng)
    batch_size = _check_int("batch_size", batch_size)
    block_size = _check_int("block_size", block_size)
    if (not isinstance(data, np.ndarray) or data.ndim != 1
            or not np.issubdtype(data.dtype, np.integer)):
        raise ValueError(f"{name} is a {type(data).__name__} of shape {np.shape(data)} and dtype "
                         f"{getattr(data, 'dtype', None)}: expected a 1-D array of integer token ids")
    if len(data) < block_size + 1:
        raise ValueError(f"{name} has {len(data)} tokens: expected at least block_size + 1 = "
                         f"{block_size + 1} (use a longer text, a smaller block_size or a smaller "
                         "val_fraction)")
    offsets = rng.integers(0, len(data) - block_size, size=batch_size)
    idx = offsets[:, None] + np.arange(block_size)        # (B, T) positions into data
    return data[idx].astype(np.int64), data[idx + 1].astype(np.int64)


# --------------------------------------------------------------------------------------------
# Seq2seq vocabulary
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Built-in seq2seq tasks
# --------------------------------------------------------------------------------------------

DIGITS = "0123456789"


def _digit_string(rng, min_len: int, max_len: int) -> str:
    n = int(rng.integers(min_len, max_len + 1))
    return "".join(DIGITS[d] for d in rng.integers(0, 10, size=n))


def _number(rng, n_digits: int) -> int:
    """A number whose digit count is uniform in [1, n_digits], then uniform among those numbers."""
    d = int(rng.integers(1, n_digits + 1))
    return int(rng.integers(0 if d == 1 else 10 ** (d - 1), 10 ** d))


def _copy(rng, min_len, max_len, n_digits):
    src = _digit_string(rng, min_len, max_len)
    return src, src


def _reverse(rng, min_len, max_len, n_digits):
    src = _digit_string(rng, min_len, max_len)
    return src, src[::-1]


def _sort(rng, min_len, max_len, n_digits):
    src = _digit_string(rng, min_len, max_len)
    return src, "".join(sorted(src))


def _addition(rng, min_len, max_len, n_digits):
    a, b = _number(rng, n_digits), _number(rng, n_digits)
    return f"{a}+{b}", str(a + b)


_TASKS = {"copy": _copy, "reverse": _reverse, "sort": _sort, "addition": _addition}
TASKS = tuple(_TASKS)


def _n_sources(name: str, min_len: int, max_len: int, n_digits: int) -> int:
    """How many distinct sources a task can draw."""
    if name == "addition":
        return (10 ** n_digits) ** 2
    return sum(10 ** n for n in range(min_len, max_len + 1))


def make_task(name: str, n_train: int, n_test: int, seed: int = 0, *, min_len: int = 1,
              max_len: int = 8, n_digits: int = 3):
    """A synthetic seq2seq task: (vocab, train_pairs, test_pairs), pairs of id lists (src, tgt).

    copy / reverse / sort: a digit string of length uniform in [min_len, max_len] and itself,
    reversed, or its digits sorted. addition: "a+b" -> the digits of a + b, with a and b of
    1..n_digits digits (min_len/max_len do not apply). Every source is distinct, so no test
    source appears in training; the same seed gives the same pairs. Targets carry no bos/eos
    (pad_batch adds them).
    """
    if name not in _TASKS:
        raise ValueError(f"name is {name!r}: expected one of the known tasks {list(TASKS)}")
    n_train, n_test = _check_int("n_train", n_train, 0), _check_int("n_test", n_test, 0)
    min_len, max_len = _check_int("min_len", min_len), _check_int("max_len", max_len)
    n_digits = _check_int("n_digits", n_digits)
    if max_len < min_len:
        raise ValueError(f"max_len is {max_len}: expected max_len >= min_len = {min_len}")
    if n_digits > 18:
        raise ValueError(f"n_digits is {n_digits}: expected at most 18 (int64 numbers)")
    available = _n_sources(name, min_len, max_len, n_digits)
    if n_train + n_test > available:
        raise ValueError(f"n_train + n_test is {n_train + n_test}: the task {name!r} has only "
                         f"{available} distinct sources with these lengths")
    vocab = Seq2SeqVocab(DIGITS + ("+" if name == "addition" else ""))
    pairs = _draw_distinct(_TASKS[name], np.random.default_rng(seed), n_train + n_test,
                           (min_len, max_len, n_digits))
    encoded = [(vocab.encode(s), vocab.encode(t)) for s, t in pairs]
    return vocab, encoded[:n_train], encoded[n_train:]


def _draw_distinct(draw, rng, n: int, args) -> list[tuple[str, str]]:
    """n pairs with distinct sources, in the order drawn (duplicates are drawn again)."""
    seen, pairs, tries = set(), [], 0
    while len(pairs) < n:
        tries += 1
        if tries > 100 * n + 10_000:
            raise ValueError(f"could not draw {n} distinct sources in {tries - 1} tries: "
                             "widen the lengths (min_len, max_len, n_digits) or ask for fewer")
        src, tgt = draw(rng, *args)
        if src not in seen:
            seen.add(src)
            pairs.append((src, tgt))
    return pairs


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
    max_len = _check_int("max_len", max_len, 2)
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
    _check_rng(rng)
    batch_size = _check_int("batch_size", batch_size)
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
