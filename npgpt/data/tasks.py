"""The built-in seq2seq tasks: copy, reverse and sort a digit string, or add two numbers.

    vocab, train_pairs, test_pairs = make_task("reverse", n_train=5000, n_test=500, seed=0)
"""

from __future__ import annotations

import numpy as np

from .checks import check_int
from .seq2seq import Seq2SeqVocab

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
    n_train, n_test = check_int("n_train", n_train, 0), check_int("n_test", n_test, 0)
    min_len, max_len = check_int("min_len", min_len), check_int("max_len", max_len)
    n_digits = check_int("n_digits", n_digits)
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

