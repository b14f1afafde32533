"""GPT-2's byte level: the table from bytes to printable characters, and the pre-tokenising split.

A byte-level BPE starts every word from its UTF-8 bytes, so any text can be encoded without an
unknown token. GPT-2 writes each byte as a printable character (bytes_to_unicode), so that the
tokens of vocab.json and merges.txt are readable text, and cuts the text into words with a regular
expression (GPT2_SPLIT_PATTERN) before merging: merges never cross the boundaries of these words.
"""

from __future__ import annotations

import regex

# GPT-2's pre-tokenisation: English contractions, runs of letters, of digits, of other symbols
# (each optionally led by one space), and whitespace (a run before a word leaves its last space
# to that word). Merges never cross the boundaries of these pieces.
GPT2_SPLIT_PATTERN = (r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+"""
                      r"""|\s+(?!\S)|\s+""")
SPLIT_RE = regex.compile(GPT2_SPLIT_PATTERN)


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


BYTE_TO_CHAR = bytes_to_unicode()
CHAR_TO_BYTE = {c: b for b, c in BYTE_TO_CHAR.items()}


def token_bytes_of(token: str) -> bytes | None:
    """The bytes a vocab.json token string stands for, or None if it is not byte-level text."""
    try:
        return bytes(CHAR_TO_BYTE[c] for c in token)
    except KeyError:
        return None


def alternation(tokens):
    """A regex matching any of tokens, longest first (None for no tokens)."""
    if not tokens:
        return None
    return regex.compile("|".join(regex.escape(t) for t in sorted(tokens, key=len, reverse=True)))
