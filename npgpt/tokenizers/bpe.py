"""BPETokenizer: GPT-2's byte-level byte-pair encoding, and GPT-2's files (vocab.json, merges.txt).

The text is cut into words by GPT-2's regular expression, each word's UTF-8 bytes are the starting
symbols, and learned merges join adjacent symbols, the lowest-ranked merge first. It trains from
scratch (BPETokenizer.train, in bpe_train.py) and reads and writes GPT-2's own files, so its ids
match Hugging Face's GPT-2 tokenizer on the same folder.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..files import write_atomic
from .bpe_train import learn_vocabulary
from .bytelevel import BYTE_TO_CHAR, SPLIT_RE, alternation, token_bytes_of
from .checks import as_id_list, check_id_range, read_json

_CACHE_LIMIT = 200_000  # words whose encoding is remembered before the cache starts afresh


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
        self._id_bytes = [token_bytes_of(t) for t in self._id_token]
        for s in self.special_tokens:
            self._id_bytes[self.encoder[s]] = s.encode("utf-8")
        for i, tb in enumerate(self._id_bytes):
            if tb is None:
                raise ValueError(f"encoder token {self._id_token[i]!r} (id {i}) is neither "
                                 "byte-level text (see bytes_to_unicode) nor a special token")
        self._special_re = alternation(self.special_tokens)
        self._cache: dict[str, list[int]] = {}

    # -- construction helpers ---------------------------------------------------------------

    def _find_byte_ids(self) -> list[int]:
        """byte value -> id of its one-byte token; every byte needs one."""
        ids = []
        for b in range(256):
            tok = BYTE_TO_CHAR[b]
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
            made = {BYTE_TO_CHAR[b] for b in range(256)} | {a + b for a, b in self.merges}
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
        for piece in SPLIT_RE.findall(text):
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
        ids = as_id_list(ids)
        check_id_range(ids, self.vocab_size)
        id_bytes = self._id_bytes
        return b"".join([id_bytes[i] for i in ids]).decode("utf-8", errors="replace")

    def id_to_token(self, i: int) -> str:
        """The vocab.json string of one id (bytes shown with bytes_to_unicode)."""
        check_id_range([i], self.vocab_size, "i")
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
        encoder, merges, specials = learn_vocabulary(text, vocab_size, special_tokens, verbose)
        return cls(encoder, merges, specials)

    # -- files and dicts ----------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {"type": "bpe", "vocab": dict(self.encoder),
                "merges": [f"{a} {b}" for a, b in self.merges],
                "special_tokens": list(self.special_tokens)}

    @classmethod
    def from_dict(cls, d: dict) -> BPETokenizer:
        merges = [parse_merge(line, i + 1, "merges") for i, line in enumerate(d["merges"])]
        return cls(d["vocab"], merges, d.get("special_tokens"))

    def save(self, folder) -> None:
        """Write GPT-2's files, folder/vocab.json and folder/merges.txt (each atomically)."""
        folder = Path(folder)
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"folder {str(folder)!r} is a file: expected a directory "
                             "(made if missing)")
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(folder / "vocab.json", json.dumps(self.encoder, ensure_ascii=False))
        lines = ["#version: 0.2", *(f"{a} {b}" for a, b in self.merges)]
        write_atomic(folder / "merges.txt", "\n".join(lines) + "\n")

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
        encoder = read_json(folder / "vocab.json", "vocab file")
        if not isinstance(encoder, dict) or not all(isinstance(v, int) for v in encoder.values()):
            raise ValueError(f"vocab file {str(folder / 'vocab.json')!r} is not a JSON object "
                             "of token string -> integer id")
        return cls(encoder, read_merges(folder / "merges.txt"), special_tokens)

    load = from_pretrained

    def __repr__(self) -> str:
        return (f"BPETokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)}, "
                f"special_tokens={self.special_tokens})")


_NO_MERGE = (float("inf"), -1)


def _describe_ids(ids) -> str:
    ids = sorted(ids)
    return f"{ids[:5]}..." if len(ids) > 5 else str(ids)


def parse_merge(line: str, lineno: int, where: str) -> tuple[str, str]:
    parts = line.split(" ")
    if len(parts) != 2 or not parts[0] or not parts[1]:
        raise ValueError(f"{where} line {lineno} is {line!r}: expected two tokens separated "
                         "by one space")
    return parts[0], parts[1]


def read_merges(path: Path) -> list[tuple[str, str]]:
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
        merges.append(parse_merge(line, lineno, f"merges file {str(path)!r}"))
    return merges

