"""Tokenizers: text <-> lists of integer token ids.

Every tokenizer here has the same small interface:

    tok.encode(text) -> list[int]          tok.decode(ids) -> str   (ids: any iterable of ints)
    tok.vocab_size -> int                  tok.to_dict() -> dict    (JSON-serialisable)
    tokenizer_from_dict(d) -> the same tokenizer again (checkpoints store tokenizers this way)

One subject per file:

    char.py        CharTokenizer: one id per character (the nanoGPT Shakespeare tokenizer)
    bpe.py         BPETokenizer: GPT-2's byte-level BPE, encoding, decoding, and GPT-2's files
                   (vocab.json + merges.txt), so its ids match Hugging Face's GPT-2 tokenizer
    bpe_train.py   learning the merges from a text (BPETokenizer.train)
    bytelevel.py   GPT-2's byte-to-character table (bytes_to_unicode) and pre-tokenising split
    checks.py      the argument checks they share (id lists, id ranges, JSON files)
"""

from __future__ import annotations

from ..data import Seq2SeqVocab
from .bpe import BPETokenizer
from .bytelevel import GPT2_SPLIT_PATTERN, bytes_to_unicode
from .char import CharTokenizer

__all__ = ["CharTokenizer", "BPETokenizer", "bytes_to_unicode", "GPT2_SPLIT_PATTERN",
           "tokenizer_from_dict"]

# "seq2seq" is npgpt.data.Seq2SeqVocab, the seq2seq tasks' vocabulary, stored the same way
_TYPES = {"char": CharTokenizer, "bpe": BPETokenizer, "seq2seq": Seq2SeqVocab}


def tokenizer_from_dict(d):
    """Rebuild a tokenizer from its to_dict() (as stored in a checkpoint).

    Also rebuilds npgpt.data.Seq2SeqVocab ("type": "seq2seq"), the seq2seq tasks' vocabulary.
    """
    if not isinstance(d, dict) or d.get("type") not in _TYPES:
        got = d.get("type") if isinstance(d, dict) else type(d).__name__
        raise ValueError(f"d has type {got!r}: expected a tokenizer dict (from to_dict()) with "
                         f"\"type\" one of {sorted(_TYPES)}")
    try:
        return _TYPES[d["type"]].from_dict(d)
    except KeyError as e:
        raise ValueError(f"d (a {d['type']!r} tokenizer dict) lacks the key {e}") from None
