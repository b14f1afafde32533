"""Tokenizers: text <-> lists of integer token ids.

Every tokenizer here has the same small interface:

    tok.encode(text) -> list[int]          tok.decode(ids) -> str   (ids: any iterable of ints)
    tok.vocab_size -> int                  tok.to_dict() -> dict    (JSON-serialisable)
    tokenizer_from_dict(d) -> the same tokenizer again (checkpoints store tokenizers this way)

CharTokenizer maps each character to an id (the nanoGPT Shakespeare tokenizer). BPETokenizer is
GPT-2's byte-level byte-pair encoding: the text is cut into words by GPT-2's regular expression,
each word's UTF-8 bytes are the starting symbols, and learned merges join adjacent symbols, the
lowest-ranked merge first. It trains from scratch (BPETokenizer.train) and reads and writes GPT-2's
own files (vocab.json + merges.txt), so its ids match Hugging Face's GPT-2 tokenizer on the same
folder.
"""

from __future__ import annotations

import heapq
import json
import operator
import os
import tempfile
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import regex

# GPT-2's pre-tokenisation: English contractions, runs of letters, of digits, of other symbols
# (each optionally led by one space), and whitespace (a run before a word leaves its last space
# to that word). Merges never cross the boundaries of these pieces.
GPT2_SPLIT_PATTERN = (r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+"""
                      r"""|\s+(?!\S)|\s+""")
_SPLIT_RE = regex.compile(GPT2_SPLIT_PATTERN)

_CACHE_LIMIT = 200_000  # words whose encoding is remembered before the cache starts afresh


def _as_id_list(ids, name: str = "ids") -> list[int]:
    """Any iterable of integers (a list, a 1-D numpy integer array, a generator) as a list of int."""
    if isinstance(ids, np.ndarray):
        if ids.ndim != 1 or not (np.issubdtype(ids.dtype, np.integer) or ids.size == 0):
            raise TypeError(f"{name} is an array of shape {ids.shape} and dtype {ids.dtype}: "
                            "expected a 1-D array of integer token ids")
        return ids.tolist()
    if isinstance(ids, (str, bytes)) or not hasattr(ids, "__iter__"):
        raise TypeError(f"{name} is a {type(ids).__name__}: expected an iterable of integer "
                        "token ids")
    out = []
    for i in ids:
        try:
            out.append(operator.index(i))
        except TypeError:
            raise TypeError(f"{name}[{len(out)}] is {i!r} ({type(i).__name__}): expected an "
                            "integer token id") from None
    return out


def _check_id_range(ids: list[int], vocab_size: int, name: str = "ids") -> None:
    """Raise ValueError naming the first id outside [0, vocab_size)."""
    if ids and (min(ids) < 0 or max(ids) >= vocab_size):
        pos, bad = next((p, i) for p, i in enumerate(ids) if not 0 <= i < vocab_size)
        raise ValueError(f"{name}[{pos}] is {bad}: expected token ids in [0, {vocab_size})")


def _write_atomic(path: Path, text: str) -> None:
    """Write text (UTF-8) to a temporary file beside path, then rename it over path."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# --------------------------------------------------------------------------------------------
# Character level
# --------------------------------------------------------------------------------------------

class CharTokenizer:
    """One id per character: id i is chars[i].

    CharTokenizer.from_text(text) takes the sorted unique characters of a text (nanoGPT's
    Shakespeare set-up gives 65 of them); CharTokenizer(chars) takes an explicit list.
    Encoding a character outside the list raises ValueError (there is no unknown token).
    """

    def __init__(self, chars):
        chars = list(chars)
        for i, c in enumerate(chars):
            if not isinstance(c, str) or len(c) != 1:
                raise ValueError(f"chars[{i}] is {c!r}: expected a single character")
        if len(set(chars)) != len(chars):
            dup = next(c for c, n in Counter(chars).items() if n > 1)
            raise ValueError(f"chars holds {dup!r} more than once: expected unique characters")
        if not chars:
            raise ValueError("chars is empty: expected at least one character")
        self.chars = chars
        self._stoi = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """The tokenizer of the sorted unique characters of text."""
        if not isinstance(text, str) or not text:
            raise ValueError(f"text is {text!r:.40}: expected a non-empty string")
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        """The id of each character of text; an unknown character raises ValueError."""
        if not isinstance(text, str):
            raise TypeError(f"text is a {type(text).__name__}: expected a str")
        stoi = self._stoi
        try:
            return [stoi[c] for c in text]
        except KeyError:
            pos, c = next((p, c) for p, c in enumerate(text) if c not in stoi)
            raise ValueError(f"text[{pos}] is {c!r}, a character this tokenizer does not know "
                             f"(it knows {self.vocab_size} characters)") from None

    def decode(self, ids) -> str:
        """The characters of the ids, joined; an id outside [0, vocab_size) raises ValueError."""
        ids = _as_id_list(ids)
        _check_id_range(ids, self.vocab_size)
        chars = self.chars
        return "".join([chars[i] for i in ids])

    def to_dict(self) -> dict:
        return {"type": "char", "chars": "".join(self.chars)}

    @classmethod
    def from_dict(cls, d: dict) -> CharTokenizer:
        return cls(d["chars"])

    def save(self, path) -> None:
        """Write the tokenizer as JSON to path (atomically: temporary file, then rename)."""
        path = Path(path)
        _write_atomic(path, json.dumps(self.to_dict(), ensure_ascii=False))

    @classmethod
    def load(cls, path) -> CharTokenizer:
        """Read a tokenizer written by save()."""
        d = _read_json(Path(path), "path")
        if not isinstance(d, dict) or d.get("type") != "char":
            raise ValueError(f"path {str(path)!r} does not hold a CharTokenizer "
                             "(expected a JSON object with \"type\": \"char\")")
        return cls.from_dict(d)

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


def _read_json(path: Path, name: str):
    if not path.is_file():
        what = "a directory" if path.is_dir() else "missing"
        raise FileNotFoundError(f"{name} {str(path)!r} is {what}: expected a JSON file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{name} {str(path)!r} is not valid UTF-8 JSON: {e}") from None


# --------------------------------------------------------------------------------------------
# Byte-level BPE (GPT-2)
# --------------------------------------------------------------------------------------------

def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table from each byte value to a printable character, so tokens are readable text.

    The 188 bytes that are printable on their own ('!'..'~', '¡'..'¬', '®'..'ÿ') map to
    themselves; the other 68 (control bytes, space, 0x7f-0xa0, 0xad) map in order to the
    characters from U+0100 up. So a space is 'Ġ' (U+0120) and a newline 'Ċ' (U+010A), as in
    GPT-2's vocab.json.
    """
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


_BYTE_TO_CHAR = bytes_to_unicode()
_CHAR_TO_BYTE = {c: b for b, c in _BYTE_TO_CHAR.items()}


def _token_bytes(token: str) -> bytes | None:
    """The bytes a vocab.json token string stands for, or None if it is not byte-level text."""
    try:
        return bytes(_CHAR_TO_BYTE[c] for c in token)
    except KeyError:
        return None


class BPETokenizer:
    """GPT-2's byte-level BPE.

    encoder:        {token string: id}, token strings written with bytes_to_unicode() as in
                    GPT-2's vocab.json; ids are exactly 0 .. len(encoder) - 1
    merges:         [(left, right), ...] in rank order (rank 0 is applied first)
    special_tokens: token strings of the encoder that stand for themselves (like
                    '<|endoftext|>'): found in the text before the split and never merged.
                    None: every token that is neither a single byte nor the result of a merge.

    encode: split out the special tokens; cut the rest into pieces with GPT2_SPLIT_PATTERN; for
    each piece, start from its UTF-8 bytes and apply, while any applies, the merge of lowest
    rank to all its occurrences (left to right). decode: join the tokens' bytes, then decode
    UTF-8 (invalid sequences, possible only for ids a model made up, become U+FFFD).
    """

    def __init__(self, encoder: dict[str, int], merges, special_tokens=None):
        if not isinstance(encoder, dict) or not all(
                isinstance(t, str) and isinstance(i, int) for t, i in encoder.items()):
            raise TypeError(f"encoder is a {type(encoder).__name__}: expected a dict of token "
                            "string -> integer id (GPT-2's vocab.json)")
        self.encoder = dict(encoder)
        self.merges = [tuple(m) for m in merges]
        n = len(self.encoder)
        if sorted(self.encoder.values()) != list(range(n)):
            raise ValueError(f"encoder has ids {_describe_ids(self.encoder.values())}: expected "
                             f"each of 0 .. {n - 1} exactly once")
        self._id_token = sorted(self.encoder, key=self.encoder.get)  # id -> token string
        self._byte_ids = self._find_byte_ids()
        self._ranks = self._rank_merges()
        self.special_tokens = self._find_specials(special_tokens)
        # id -> bytes: special tokens stand for their own text, the others through the byte table
        self._id_bytes = [_token_bytes(t) for t in self._id_token]
        for s in self.special_tokens:
            self._id_bytes[self.encoder[s]] = s.encode("utf-8")
        for i, tb in enumerate(self._id_bytes):
            if tb is None:
                raise ValueError(f"encoder token {self._id_token[i]!r} (id {i}) is neither "
                                 "byte-level text (see bytes_to_unicode) nor a special token")
        self._special_re = _alternation(self.special_tokens)
        self._cache: dict[str, list[int]] = {}

    # -- construction helpers ---------------------------------------------------------------

    def _find_byte_ids(self) -> list[int]:
        """byte value -> id of its one-byte token; every byte needs one."""
        ids = []
        for b in range(256):
            tok = _BYTE_TO_CHAR[b]
            if tok not in self.encoder:
                raise ValueError(f"encoder has no token for byte 0x{b:02x} ({tok!r}): a byte-level "
                                 "vocabulary needs all 256 single-byte tokens")
            ids.append(self.encoder[tok])
        return ids

    def _rank_merges(self) -> dict[tuple[int, int], tuple[int, int]]:
        """(left id, right id) -> (rank, id of the joined token); the first of repeated pairs wins."""
        ranks = {}
        for rank, (a, b) in enumerate(self.merges):
            for part in (a, b, a + b):
                if part not in self.encoder:
                    raise ValueError(f"merges[{rank}] is {a!r} {b!r}: {part!r} is not in the "
                                     "vocabulary (expected both parts and their join in it)")
            ranks.setdefault((self.encoder[a], self.encoder[b]), (rank, self.encoder[a + b]))
        return ranks

    def _find_specials(self, special_tokens) -> list[str]:
        if special_tokens is None:
            made = {_BYTE_TO_CHAR[b] for b in range(256)} | {a + b for a, b in self.merges}
            return [t for t in self._id_token if t not in made]
        specials = list(special_tokens)
        for s in specials:
            if not isinstance(s, str) or not s:
                raise ValueError(f"special_tokens holds {s!r}: expected non-empty strings")
            if s not in self.encoder:
                raise ValueError(f"special_tokens holds {s!r}, which is not in the vocabulary")
        return specials

    # -- the interface ------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return len(self.encoder)

    def special_id(self, token: str = "<|endoftext|>") -> int:
        """The id of a special token (GPT-2's end of text by default)."""
        if token not in self.special_tokens:
            raise ValueError(f"token {token!r} is not a special token of this tokenizer "
                             f"(it has {self.special_tokens})")
        return self.encoder[token]

    def encode(self, text: str) -> list[int]:
        """Token ids of text; special tokens written in the text become their own id."""
        if not isinstance(text, str):
            raise TypeError(f"text is a {type(text).__name__}: expected a str")
        if self._special_re is None:
            return self._encode_ordinary(text)
        ids, start = [], 0
        for m in self._special_re.finditer(text):
            ids += self._encode_ordinary(text[start:m.start()])
            ids.append(self.encoder[m.group()])
            start = m.end()
        ids += self._encode_ordinary(text[start:])
        return ids

    def _encode_ordinary(self, text: str) -> list[int]:
        """Ids of text without special tokens: split into pieces, BPE each (cached)."""
        ids, cache = [], self._cache
        for piece in _SPLIT_RE.findall(text):
            piece_ids = cache.get(piece)
            if piece_ids is None:
                if len(cache) >= _CACHE_LIMIT:
                    cache.clear()
                piece_ids = cache[piece] = self._bpe(piece.encode("utf-8"))
            ids += piece_ids
        return ids

    def _bpe(self, piece: bytes) -> list[int]:
        """Merge a piece's byte tokens: the lowest-ranked pair present, every occurrence, repeat."""
        ids = [self._byte_ids[b] for b in piece]
        ranks = self._ranks
        while len(ids) > 1:
            best = min(zip(ids, ids[1:]), key=lambda p: ranks.get(p, _NO_MERGE))
            if best not in ranks:
                break
            new_id, out, i = ranks[best][1], [], 0
            while i < len(ids):
                if i + 1 < len(ids) and ids[i] == best[0] and ids[i + 1] == best[1]:
                    out.append(new_id)
                    i += 2
                else:
                    out.append(ids[i])
                    i += 1
            ids = out
        return ids

    def decode(self, ids) -> str:
        """The text of the ids: their bytes joined and read as UTF-8 (bad bytes -> U+FFFD)."""
        ids = _as_id_list(ids)
        _check_id_range(ids, self.vocab_size)
        id_bytes = self._id_bytes
        return b"".join([id_bytes[i] for i in ids]).decode("utf-8", errors="replace")

    def id_to_token(self, i: int) -> str:
        """The vocab.json string of one id (bytes shown with bytes_to_unicode)."""
        _check_id_range([i], self.vocab_size, "i")
        return self._id_token[i]

    # -- training -----------------------------------------------------------------------------

    @classmethod
    def train(cls, text: str, vocab_size: int, special_tokens=("<|endoftext|>",),
              verbose: bool = False) -> BPETokenizer:
        """Learn merges on text until the vocabulary holds vocab_size tokens.

        The vocabulary is the 256 byte tokens (id = byte value), then one token per merge, then
        the special tokens. Special tokens in text separate documents and are not learned from.
        Each step merges the most frequent adjacent pair (ties: the smallest pair of ids, so the
        result is deterministic). If no pair is left the vocabulary stays smaller (a warning
        says so).
        """
        specials = list(special_tokens)
        if not isinstance(text, str):
            raise TypeError(f"text is a {type(text).__name__}: expected a str")
        if not isinstance(vocab_size, (int, np.integer)) or vocab_size < 256 + len(specials):
            raise ValueError(f"vocab_size is {vocab_size!r}: expected an int >= 256 + "
                             f"{len(specials)} special tokens = {256 + len(specials)}")
        if len(set(specials)) != len(specials) or not all(isinstance(s, str) and s
                                                          for s in specials):
            raise ValueError(f"special_tokens is {specials!r}: expected unique non-empty strings")
        words, freqs = _count_words(text, specials)
        token_bytes, merges = _learn_merges(words, freqs, vocab_size - len(specials), verbose)
        encoder = {"".join(_BYTE_TO_CHAR[b] for b in tb): i for i, tb in enumerate(token_bytes)}
        for s in specials:
            if s in encoder:
                raise ValueError(f"special_tokens holds {s!r}, which is also a byte-level token: "
                                 "expected special tokens that cannot appear as learned tokens")
            encoder[s] = len(encoder)
        if len(encoder) < vocab_size:
            warnings.warn(f"BPETokenizer.train: the text ran out of pairs to merge; vocab_size is "
                          f"{len(encoder)}, not {vocab_size}", stacklevel=2)
        to_str = lambda i: "".join(_BYTE_TO_CHAR[b] for b in token_bytes[i])  # noqa: E731
        return cls(encoder, [(to_str(a), to_str(b)) for a, b in merges], specials)

    # -- files and dicts ----------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {"type": "bpe", "vocab": dict(self.encoder),
                "merges": [f"{a} {b}" for a, b in self.merges],
                "special_tokens": list(self.special_tokens)}

    @classmethod
    def from_dict(cls, d: dict) -> BPETokenizer:
        merges = [_parse_merge(line, i + 1, "merges") for i, line in enumerate(d["merges"])]
        return cls(d["vocab"], merges, d.get("special_tokens"))

    def save(self, folder) -> None:
        """Write GPT-2's files, folder/vocab.json and folder/merges.txt (each atomically)."""
        folder = Path(folder)
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"folder {str(folder)!r} is a file: expected a directory "
                             "(made if missing)")
        folder.mkdir(parents=True, exist_ok=True)
        _write_atomic(folder / "vocab.json", json.dumps(self.encoder, ensure_ascii=False))
        lines = ["#version: 0.2", *(f"{a} {b}" for a, b in self.merges)]
        _write_atomic(folder / "merges.txt", "\n".join(lines) + "\n")

    @classmethod
    def from_pretrained(cls, folder, special_tokens=None) -> BPETokenizer:
        """Read GPT-2's vocab.json + merges.txt from a folder (OpenAI's or Hugging Face's files).

        special_tokens: None finds them (tokens that are neither a byte nor a merge's result:
        '<|endoftext|>' for GPT-2), or give the list.
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"folder {str(folder)!r} is not a directory: expected a "
                                    "folder holding vocab.json and merges.txt")
        encoder = _read_json(folder / "vocab.json", "vocab file")
        if not isinstance(encoder, dict) or not all(isinstance(v, int) for v in encoder.values()):
            raise ValueError(f"vocab file {str(folder / 'vocab.json')!r} is not a JSON object "
                             "of token string -> integer id")
        return cls(encoder, _read_merges(folder / "merges.txt"), special_tokens)

    load = from_pretrained

    def __repr__(self) -> str:
        return (f"BPETokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)}, "
                f"special_tokens={self.special_tokens})")


_NO_MERGE = (float("inf"), -1)


def _alternation(tokens):
    """A regex matching any of tokens, longest first (None for no tokens)."""
    if not tokens:
        return None
    return regex.compile("|".join(regex.escape(t) for t in sorted(tokens, key=len, reverse=True)))


def _describe_ids(ids) -> str:
    ids = sorted(ids)
    return f"{ids[:5]}..." if len(ids) > 5 else str(ids)


def _parse_merge(line: str, lineno: int, where: str) -> tuple[str, str]:
    parts = line.split(" ")
    if len(parts) != 2 or not parts[0] or not parts[1]:
        raise ValueError(f"{where} line {lineno} is {line!r}: expected two tokens separated "
                         "by one space")
    return parts[0], parts[1]


def _read_merges(path: Path) -> list[tuple[str, str]]:
    """The merges of a GPT-2 merges.txt: an optional '#version' first line, then 'a b' lines."""
    if not path.is_file():
        raise FileNotFoundError(f"merges file {str(path)!r} is missing: expected GPT-2's "
                                "merges.txt")
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as e:
        raise ValueError(f"merges file {str(path)!r} is not UTF-8: {e}") from None
    merges = []
    for lineno, line in enumerate(lines, start=1):
        line = line.rstrip("\r")
        if (lineno == 1 and line.startswith("#version")) or (not line and lineno == len(lines)):
            continue
        merges.append(_parse_merge(line, lineno, f"merges file {str(path)!r}"))
    return merges


# -- training internals -----------------------------------------------------------------------

def _count_words(text: str, specials: list[str]) -> tuple[list[list[int]], list[int]]:
    """Each distinct pre-tokenised word of text as its list of bytes, and how often it occurs."""
    chunks = _alternation(specials).split(text) if specials else [text]
    counts = Counter()
    for chunk in chunks:
        counts.update(_SPLIT_RE.findall(chunk))
    words = sorted(counts)  # a fixed order, so that training is deterministic
    return [list(w.encode("utf-8")) for w in words], [counts[w] for w in words]


def _learn_merges(words, freqs, n_tokens: int, verbose: bool):
    """Merge the most frequent pair until there are n_tokens tokens; pair counts are updated
    incrementally (only the words holding the merged pair are recounted).

    Returns (token_bytes: list of bytes per id, merges: list of (left id, right id)).
    """
    token_bytes = [bytes([b]) for b in range(256)]
    bytes_to_id = {tb: i for i, tb in enumerate(token_bytes)}
    counts, where = Counter(), {}
    for w, (word, f) in enumerate(zip(words, freqs)):
        for pair in zip(word, word[1:]):
            counts[pair] += f
            where.setdefault(pair, set()).add(w)
    heap = [(-c, a, b) for (a, b), c in counts.items()]
    heapq.heapify(heap)
    merges, seen = [], set()
    while len(token_bytes) < n_tokens and heap:
        neg, a, b = heapq.heappop(heap)
        if counts.get((a, b), 0) != -neg or neg == 0:
            continue  # a stale heap entry: the count changed since it was pushed
        joined = token_bytes[a] + token_bytes[b]
        new = bytes_to_id.get(joined)
        if new is None:  # two merge paths can spell the same bytes: they share one token
            new = bytes_to_id[joined] = len(token_bytes)
            token_bytes.append(joined)
        if (a, b) not in seen:  # a pair can come back when a join respells an old token
            seen.add((a, b))
            merges.append((a, b))
        changed = _apply_merge(words, freqs, (a, b), new, counts, where)
        for pair in changed:
            if counts[pair] > 0:
                heapq.heappush(heap, (-counts[pair], *pair))
        if verbose:
            print(f"merge {len(merges)}: {joined!r} ({-neg} times)")
    return token_bytes, merges


def _apply_merge(words, freqs, pair, new, counts, where) -> set:
    """Replace pair by new in every word that holds it, keeping counts/where exact.

    Each touched word's pairs are taken out of the counts, the word is rewritten, and its new
    pairs are put back. Returns the pairs whose count changed.
    """
    changed = set()
    a, b = pair
    for w in sorted(where.pop(pair, ())):
        word, f = words[w], freqs[w]
        out, i = [], 0
        while i < len(word):
            if i + 1 < len(word) and word[i] == a and word[i + 1] == b:
                out.append(new)
                i += 2
            else:
                out.append(word[i])
                i += 1
        if len(out) == len(word):
            continue  # a stale entry: the pair left this word in an earlier merge
        for p in zip(word, word[1:]):
            counts[p] -= f
            changed.add(p)
        for p in zip(out, out[1:]):
            counts[p] += f
            changed.add(p)
            where.setdefault(p, set()).add(w)
        words[w] = out
    counts.pop(pair, None)
    changed.discard(pair)
    return changed


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------

_TYPES = {"char": CharTokenizer, "bpe": BPETokenizer}


def tokenizer_from_dict(d):
    """Rebuild a tokenizer from its to_dict() (as stored in a checkpoint).

    Also rebuilds npgpt.data.Seq2SeqVocab ("type": "seq2seq"), the seq2seq tasks' vocabulary.
    """
    types = {**_TYPES, "seq2seq": None}
    if not isinstance(d, dict) or d.get("type") not in types:
        got = d.get("type") if isinstance(d, dict) else type(d).__name__
        raise ValueError(f"d has type {got!r}: expected a tokenizer dict (from to_dict()) with "
                         f"\"type\" one of {sorted(types)}")
    if d["type"] == "seq2seq":
        from .data import Seq2SeqVocab  # data imports nothing of npgpt: no cycle
        return Seq2SeqVocab.from_dict(d)
    try:
        return _TYPES[d["type"]].from_dict(d)
    except KeyError as e:
        raise ValueError(f"d (a {d['type']!r} tokenizer dict) lacks the key {e}") from None
