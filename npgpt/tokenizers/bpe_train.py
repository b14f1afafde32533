"""Learning GPT-2-style byte-level BPE merges from a text (what BPETokenizer.train runs).

Start from the 256 byte tokens; count every adjacent pair of tokens inside the words of the text
(weighted by how often each word occurs); merge the most frequent pair into a new token; repeat
until the vocabulary is full. Recounting every pair after each merge would cost a pass over the
whole text per merge; instead the counts are kept exact incrementally, touching only the words
that hold the merged pair, and a heap finds the most frequent pair.
"""

from __future__ import annotations

import heapq
import warnings
from collections import Counter

import numpy as np

from .bytelevel import BYTE_TO_CHAR, SPLIT_RE, alternation


def learn_vocabulary(text: str, vocab_size: int, special_tokens, verbose: bool = False):
    """(encoder, merges, specials) for BPETokenizer, learned on text (see BPETokenizer.train).

    encoder: {token string: id}, the 256 bytes first (id = byte value), then one token per merge,
    then the special tokens; merges: [(left, right)] token strings in rank order.
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
    words, freqs = count_words(text, specials)
    token_bytes, merges = _learn_merges(words, freqs, vocab_size - len(specials), verbose)
    encoder = {"".join(BYTE_TO_CHAR[b] for b in tb): i for i, tb in enumerate(token_bytes)}
    for s in specials:
        if s in encoder:
            raise ValueError(f"special_tokens holds {s!r}, which is also a byte-level token: "
                             "expected special tokens that cannot appear as learned tokens")
        encoder[s] = len(encoder)
    if len(encoder) < vocab_size:
        warnings.warn(f"BPETokenizer.train: the text ran out of pairs to merge at {len(encoder)} "
                      f"tokens: the vocabulary has {len(encoder)}, not vocab_size={vocab_size} (a "
                      f"longer text reaches more)", stacklevel=3)
    to_str = lambda i: "".join(BYTE_TO_CHAR[b] for b in token_bytes[i])  # noqa: E731
    return encoder, [(to_str(a), to_str(b)) for a, b in merges], specials


def count_words(text: str, specials: list[str]) -> tuple[list[list[int]], list[int]]:
    """Each distinct pre-tokenised word of text as its list of bytes, and how often it occurs."""
    chunks = alternation(specials).split(text) if specials else [text]
    counts = Counter()
    for chunk in chunks:
        counts.update(SPLIT_RE.findall(chunk))
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
