"""CharTokenizer: one id per character (the nanoGPT Shakespeare tokenizer)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from ..files import write_atomic
from .checks import as_id_list, check_id_range, read_json


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
        ids = as_id_list(ids)
        check_id_range(ids, self.vocab_size)
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
        write_atomic(path, json.dumps(self.to_dict(), ensure_ascii=False))

    @classmethod
    def load(cls, path) -> CharTokenizer:
        """Read a tokenizer written by save()."""
        d = read_json(Path(path), "path")
        if not isinstance(d, dict) or d.get("type") != "char":
            raise ValueError(f"path {str(path)!r} does not hold a CharTokenizer "
                             "(expected a JSON object with \"type\": \"char\")")
        return cls.from_dict(d)

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"
