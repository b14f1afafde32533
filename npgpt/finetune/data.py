"""Classification data: (text, label) files, the built-in shuffled-words task, and token batches.

    data = load_classification_file("reviews.jsonl", text_field="text", label_field="label")
    train, test = shuffled_words_task(seed=0)        # original sentences vs their words shuffled
    idx, pad = encode_texts(train.texts, tokenizer, max_len=64)
    for x, p, y in classification_batches(idx, pad, train.labels, 32, rng): ...
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data import default_corpus, load_text


@dataclass
class ClassificationData:
    """Texts and their classes: labels[i] indexes classes (the class names, in a stable order)."""

    texts: list
    labels: np.ndarray
    classes: list

    def __len__(self) -> int:
        return len(self.texts)


def _class_order(names) -> list[str]:
    """Numeric order when every label is an integer ("2" before "10"), else sorted as text."""
    names = sorted(set(names))
    if all(re.fullmatch(r"-?\d+", n) for n in names):
        return sorted(names, key=int)
    return names


def _label_name(value, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"{where}: label {value!r} is a {type(value).__name__}: expected a string or an int")
    value = str(value).strip()
    if not value:
        raise ValueError(f"{where}: the label is empty: expected a class name")
    return value


def _read_jsonl(path: Path, text_field: str, label_field: str):
    rows = []
    # load_text: UTF-8 (a byte-order mark dropped), or an error naming the file and the offset
    for n, line in enumerate(load_text(path).split("\n"), 1):
        if not line.strip():
            continue
        where = f"{path}: line {n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where} is not JSON ({e.msg} at column {e.colno}): expected one "
                             f"object per line") from None
        if not isinstance(obj, dict):
            raise ValueError(f"{where} is a JSON {type(obj).__name__}: expected an object with "
                             f"fields {text_field!r} and {label_field!r}")
        for field in (text_field, label_field):
            if field not in obj:
                raise ValueError(f"{where} has no field {field!r} (its fields: {sorted(obj)}): "
                                 f"expected {text_field!r} and {label_field!r}")
        rows.append((where, obj[text_field], obj[label_field]))
    return rows


def _read_csv(path: Path, text_field: str, label_field: str, delimiter: str):
    rows = []
    # load_text: UTF-8 (a byte-order mark dropped), or an error naming the file and the offset
    reader = csv.DictReader(io.StringIO(load_text(path), newline=""), delimiter=delimiter)
    header = reader.fieldnames or []
    for field in (text_field, label_field):
        if field not in header:
            raise ValueError(f"{path}: row 1 (the header) has no column {field!r} (its columns: "
                             f"{header}): expected {text_field!r} and {label_field!r}")
    for row in reader:
        where = f"{path}: row {reader.line_num}"
        if row[text_field] is None or row[label_field] is None:
            raise ValueError(f"{where} has {len([v for v in row.values() if v is not None])} "
                             f"fields: expected {len(header)}, as the header")
        rows.append((where, row[text_field], row[label_field]))
    return rows


def load_classification_file(path, text_field: str = "text", label_field: str = "label",
                             classes=None) -> ClassificationData:
    """Read (text, label) examples from a JSONL file (.jsonl, .json: one object per line) or a
    CSV/TSV file (.csv, .tsv: a header row naming the columns).

    Labels are strings or ints, mapped to ids by `classes` if given (a label outside them is an
    error: the held-out file of a trained classifier), else by their sorted order (numeric when
    every label is an integer). A missing field or column is an error that names it and the line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path {str(path)!r} does not exist: expected a .jsonl or .csv file")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        rows = _read_jsonl(path, text_field, label_field)
    elif suffix in (".csv", ".tsv"):
        rows = _read_csv(path, text_field, label_field, "\t" if suffix == ".tsv" else ",")
    else:
        raise ValueError(f"path {str(path)!r} has suffix {suffix!r}: expected .jsonl, .json, .csv or .tsv")
    if not rows:
        raise ValueError(f"path {str(path)!r} has no examples: expected at least one (text, label)")
    texts, names = [], []
    for where, text, label in rows:
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{where}: text {text!r} is empty or not a string: expected some text")
        texts.append(text)
        names.append(_label_name(label, where))
    order = _class_order(names) if classes is None else [str(c) for c in classes]
    ids = {c: i for i, c in enumerate(order)}
    for (where, _, _), name in zip(rows, names):
        if name not in ids:
            raise ValueError(f"{where}: label {name!r} is unknown: expected one of the classes {order}")
    return ClassificationData(texts, np.array([ids[n] for n in names], dtype=np.int64), order)


def _sentences(text: str, min_words: int, max_words: int) -> list[str]:
    """The prose sentences of text, min_words..max_words words each, lowercased, without their
    final period: the paragraphs are joined, split after . ! ? before a capital, and kept when
    they are made of words (letters, digits, quotes, brackets, hyphens; , ; : attached)."""
    word = r"[A-Za-z0-9\"'()*\-]+[,;:]?"
    out = set()
    for para in re.split(r"\n\s*\n", text):
        para = re.sub(r"\s+", " ", para).strip()
        for s in re.split(r"(?<=[.!?])\s+(?=[A-Z])", para):
            if re.fullmatch(rf"[A-Z]\S*(?: {word})+\.", s) and ".." not in s \
                    and min_words <= len(s.split()) <= max_words:
                out.add(s[:-1].lower())
    return sorted(out)


def shuffled_words_task(seed: int = 0, test_fraction: float = 0.2, min_words: int = 5,
                        max_words: int = 16, text: str | None = None):
    """A built-in classification task: tell a sentence from the same words in a shuffled order.

    The sentences come from the built-in corpus (npgpt.data.default_corpus(), or `text`):
    lowercased and without their final period, so that only the word order tells the classes
    apart. The sentences are split (seeded) into train and test first, and each one gives one
    example of each class, so both splits are balanced and no test sentence was seen in training.
    Returns (train, test) ClassificationData with classes ["original", "shuffled"].
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction={test_fraction!r}: expected a number in (0, 1)")
    if not 2 <= min_words <= max_words:
        raise ValueError(f"min_words={min_words!r}, max_words={max_words!r}: expected "
                         f"2 <= min_words <= max_words")
    if text is None:
        text = default_corpus()
    rng = np.random.default_rng(seed)
    sents = [s for s in _sentences(text, min_words, max_words) if len(set(s.split())) > 1]
    if len(sents) < 2:
        raise ValueError(f"the text has {len(sents)} sentences of {min_words}..{max_words} words: "
                         f"expected at least 2")
    sents = [sents[i] for i in rng.permutation(len(sents))]
    n_test = max(1, int(round(len(sents) * test_fraction)))

    def make(part):
        examples = []
        for s in part:
            words = s.split()
            shuffled = words
            while shuffled == words:                           # a different order, always
                shuffled = [words[i] for i in rng.permutation(len(words))]
            examples += [(s, 0), (" ".join(shuffled), 1)]
        order = rng.permutation(len(examples))
        return ClassificationData([examples[i][0] for i in order],
                                  np.array([examples[i][1] for i in order], dtype=np.int64),
                                  ["original", "shuffled"])

    return make(sents[n_test:]), make(sents[:n_test])


def encode_texts(texts, tokenizer, max_len: int, pad_id: int = 0):
    """Tokenize and right-pad: (idx int64 (N, T), pad bool (N, T)), T = the longest text's length
    up to max_len. A text longer than max_len keeps its first max_len tokens; pad_id fills the
    padded positions (they are masked, so any valid id will do)."""
    if isinstance(max_len, bool) or not isinstance(max_len, (int, np.integer)) or max_len < 1:
        raise ValueError(f"max_len={max_len!r}: expected a positive int (the model's block_size)")
    seqs = []
    for i, text in enumerate(texts):
        ids = list(tokenizer.encode(text))[:max_len]
        if not ids:
            raise ValueError(f"texts[{i}] = {text!r} encodes to no tokens: expected some text")
        seqs.append(ids)
    if not seqs:
        raise ValueError("texts is empty: expected at least one text")
    T = max(len(s) for s in seqs)
    idx = np.full((len(seqs), T), pad_id, dtype=np.int64)
    pad = np.ones((len(seqs), T), dtype=bool)
    for i, s in enumerate(seqs):
        idx[i, :len(s)] = s
        pad[i, :len(s)] = False
    return idx, pad


def classification_batches(idx, pad, labels, batch_size: int, rng: np.random.Generator | None = None):
    """Yield (idx, pad, labels) batches of batch_size rows (the last may be smaller), in a
    permuted order when rng is given; each batch is cut to its longest row."""
    n = len(idx)
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for s in range(0, n, batch_size):
        rows = order[s:s + batch_size]
        p = pad[rows]
        T = int((~p).sum(axis=1).max())
        yield idx[rows, :T], p[:, :T], labels[rows]
