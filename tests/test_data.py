"""Data: corpus, text files, LM batches, seq2seq vocabulary, tasks, TSV pairs and padded batches."""

from __future__ import annotations

import importlib
import itertools
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import npgpt.data.text
from npgpt.data import (TASKS, Batch, Seq2SeqVocab, default_corpus, get_batch, iterate_batches,
                        load_pairs_tsv, load_text, make_task, pad_batch, split)

# --------------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------------


def test_default_corpus_is_pydoc_topics_in_sorted_order():
    from pydoc_data.topics import topics
    text = default_corpus()
    assert isinstance(text, str) and len(text) > 100_000
    first = sorted(topics)[0]
    assert text.startswith(topics[first])
    assert text == default_corpus()


def test_default_corpus_without_pydoc_data(monkeypatch):
    try:
        with monkeypatch.context() as m:
            m.setitem(sys.modules, "pydoc_data.topics", None)  # makes the import at the top fail
            importlib.reload(npgpt.data.text)
            with pytest.raises(ImportError, match="pydoc_data.topics.*load_text"):
                default_corpus()
    finally:
        importlib.reload(npgpt.data.text)                     # the module as it was
    assert default_corpus()


def test_load_text(tmp_path):
    p = tmp_path / "a.txt"
    p.write_bytes("héllo\r\nwörld 🎉\n".encode())
    assert load_text(p) == "héllo\r\nwörld 🎉\n"
    p.write_bytes(b"\xef\xbb\xbfbom")
    assert load_text(str(p)) == "bom"


def test_load_text_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="path .*missing.txt.* does not exist"):
        load_text(tmp_path / "missing.txt")
    with pytest.raises(IsADirectoryError, match="path .* is a directory"):
        load_text(tmp_path)
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("abc é".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.txt.* is not UTF-8 text: byte 0xe9 at offset 4"):
        load_text(bad)
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.txt.* is empty"):
        load_text(empty)


# --------------------------------------------------------------------------------------------
# Split and get_batch
# --------------------------------------------------------------------------------------------


def test_split_first_ninety_percent_is_train():
    ids = np.arange(1000, dtype=np.int32)
    train, val = split(ids)
    assert train.dtype == val.dtype == np.int64
    np.testing.assert_array_equal(train, np.arange(900))
    np.testing.assert_array_equal(val, np.arange(900, 1000))
    train, val = split(list(range(10)), val_fraction=0.25)
    assert len(train) == 7 and len(val) == 3


@pytest.mark.parametrize("fraction", [0, 1, -0.1, 1.5, "0.1"])
def test_split_rejects_bad_fraction(fraction):
    with pytest.raises(ValueError, match="val_fraction is"):
        split(np.arange(10), val_fraction=fraction)


def test_split_rejects_bad_ids():
    with pytest.raises(ValueError, match=r"ids has shape \(2, 5\)"):
        split(np.zeros((2, 5), dtype=np.int64))
    with pytest.raises(ValueError, match="ids has shape .* dtype float64"):
        split(np.zeros(5))


@given(st.integers(1, 8), st.integers(1, 16), st.integers(0, 40), st.integers(0, 2**32))
def test_get_batch_windows_and_shift(batch_size, block_size, extra, seed):
    data = np.arange(100, 100 + block_size + 1 + extra, dtype=np.int64)
    x, y = get_batch(data, batch_size, block_size, np.random.default_rng(seed))
    assert x.shape == y.shape == (batch_size, block_size)
    assert x.dtype == y.dtype == np.int64
    np.testing.assert_array_equal(y, x + 1)                 # y is x shifted by one token
    np.testing.assert_array_equal(np.diff(x, axis=1), 1)    # each row is a contiguous window
    assert x.min() >= data[0] and y.max() <= data[-1]


def test_get_batch_same_seed_same_batches():
    data = np.random.default_rng(0).integers(0, 50, size=5000)
    a = [get_batch(data, 4, 32, rng) for rng in [np.random.default_rng(7)] for _ in range(3)]
    b = [get_batch(data, 4, 32, rng) for rng in [np.random.default_rng(7)] for _ in range(3)]
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    xc, _ = get_batch(data, 4, 32, np.random.default_rng(8))
    assert not np.array_equal(a[0][0], xc)
    assert not np.array_equal(a[0][0], a[1][0])  # the generator moves on


def test_get_batch_reaches_the_last_token():
    data = np.arange(11)
    seen = np.concatenate([get_batch(data, 8, 10, np.random.default_rng(s))[1] for s in range(20)])
    assert seen.max() == 10


def test_get_batch_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"val has 8 tokens: expected at least block_size \+ 1 = 9"):
        get_batch(np.arange(8), 2, 8, rng, name="val")
    with pytest.raises(TypeError, match="rng is a int: expected a np.random.Generator"):
        get_batch(np.arange(100), 2, 8, 0)
    with pytest.raises(ValueError, match="batch_size is 0"):
        get_batch(np.arange(100), 0, 8, rng)
    with pytest.raises(TypeError, match="block_size is 8.0"):
        get_batch(np.arange(100), 2, 8.0, rng)
    with pytest.raises(ValueError, match="data is a list"):
        get_batch([1, 2, 3], 1, 1, rng)
    with pytest.raises(ValueError, match="train is a ndarray .* dtype float64"):
        get_batch(np.zeros(100), 2, 8, rng, name="train")


# --------------------------------------------------------------------------------------------
# Seq2SeqVocab
# --------------------------------------------------------------------------------------------


def test_vocab_ids_and_round_trip():
    v = Seq2SeqVocab("abc")
    assert (v.pad_id, v.bos_id, v.eos_id, v.unk_id) == (0, 1, 2, 3)
    assert v.size == v.vocab_size == 7
    assert v.encode("cab") == [6, 4, 5]
    assert v.decode([1, 6, 4, 5, 2, 4, 0]) == "cab"   # bos skipped, stops at eos
    assert v.decode(np.array([6, 3, 0, 0])) == "c"    # unk and pad skipped
    assert v.encode("axb", allow_unk=True) == [4, 3, 5]
    assert Seq2SeqVocab.from_dict(v.to_dict()) == v


def test_vocab_errors():
    v = Seq2SeqVocab("abc")
    with pytest.raises(ValueError, match=r"text\[1\] is 'x', a symbol not in the vocabulary"):
        v.encode("ax")
    with pytest.raises(ValueError, match=r"ids\[0\] is 9: expected ids in \[0, 7\)"):
        v.decode([9])
    with pytest.raises(ValueError, match="symbols holds 'a' more than once"):
        Seq2SeqVocab("aba")
    with pytest.raises(ValueError, match=r"symbols\[0\] is 'ab'"):
        Seq2SeqVocab(["ab"])
    with pytest.raises(ValueError, match="expected a Seq2SeqVocab.to_dict"):
        Seq2SeqVocab.from_dict({"type": "char", "chars": "abc"})


# --------------------------------------------------------------------------------------------
# Tasks
# --------------------------------------------------------------------------------------------

RULES = {"copy": lambda s: s, "reverse": lambda s: s[::-1], "sort": lambda s: "".join(sorted(s))}


@pytest.mark.parametrize("name", ["copy", "reverse", "sort"])
def test_digit_tasks(name):
    vocab, train, test = make_task(name, 300, 50, seed=1, min_len=2, max_len=6)
    assert len(train) == 300 and len(test) == 50 and vocab.symbols == list("0123456789")
    lengths = set()
    for src, tgt in train + test:
        s, t = vocab.decode(src), vocab.decode(tgt)
        assert t == RULES[name](s) and 2 <= len(s) <= 6
        lengths.add(len(s))
    assert lengths == {2, 3, 4, 5, 6}


def test_addition_task():
    vocab, train, test = make_task("addition", 400, 100, seed=3, n_digits=4)
    assert "+" in vocab.symbols
    for src, tgt in train + test:
        a, b = vocab.decode(src).split("+")
        assert int(vocab.decode(tgt)) == int(a) + int(b)
        assert 1 <= len(a) <= 4 and 1 <= len(b) <= 4 and str(int(a)) == a
    assert max(len(vocab.decode(s)) for s, _ in train) == 9


@pytest.mark.parametrize("name", TASKS)
def test_tasks_are_seeded_and_test_is_held_out(name):
    a = make_task(name, 500, 100, seed=5, min_len=1, max_len=4, n_digits=2)
    b = make_task(name, 500, 100, seed=5, min_len=1, max_len=4, n_digits=2)
    c = make_task(name, 500, 100, seed=6, min_len=1, max_len=4, n_digits=2)
    assert a[1:] == b[1:] and a[1] != c[1]
    train_sources = {tuple(s) for s, _ in a[1]}
    assert len(train_sources) == 500
    assert not train_sources & {tuple(s) for s, _ in a[2]}


def test_task_can_use_every_source():
    vocab, train, test = make_task("copy", 100, 10, seed=0, min_len=1, max_len=2)
    assert len({tuple(s) for s, _ in train + test}) == 110


def test_task_errors():
    with pytest.raises(ValueError, match=r"name is 'add'.*\['copy', 'reverse', 'sort', 'addition'\]"):
        make_task("add", 10, 10)
    with pytest.raises(ValueError, match="n_train \\+ n_test is 111.*only 110 distinct sources"):
        make_task("copy", 100, 11, min_len=1, max_len=2)
    with pytest.raises(ValueError, match="max_len is 2: expected max_len >= min_len = 3"):
        make_task("sort", 10, 10, min_len=3, max_len=2)
    with pytest.raises(ValueError, match="n_digits is 19"):
        make_task("addition", 10, 10, n_digits=19)
    with pytest.raises(ValueError, match="n_train is -1"):
        make_task("copy", -1, 10)


# --------------------------------------------------------------------------------------------
# TSV pairs
# --------------------------------------------------------------------------------------------


def test_load_pairs_tsv(tmp_path):
    p = tmp_path / "pairs.tsv"
    p.write_text("hello\tbonjour\r\n\ncat\tchat\n", encoding="utf-8")
    vocab, pairs = load_pairs_tsv(p)
    assert vocab.symbols == sorted(set("hellobonjourcatchat"))
    assert [(vocab.decode(s), vocab.decode(t)) for s, t in pairs] == [("hello", "bonjour"),
                                                                       ("cat", "chat")]
    q = tmp_path / "test.tsv"
    q.write_text("hat\tchat\n", encoding="utf-8")
    again, test_pairs = load_pairs_tsv(q, vocab=vocab)
    assert again is vocab and vocab.decode(test_pairs[0][0]) == "hat"
    q.write_text("dog\tchien\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"test.tsv.* line 1: text\[0\] is 'd'"):
        load_pairs_tsv(q, vocab=vocab)


@pytest.mark.parametrize("line, why", [("no tab here", "no tab"), ("a\tb\tc", "2 tabs"),
                                       ("\tb", "an empty side"), ("a\t", "an empty side"),
                                       ("   ", "no tab")])
def test_load_pairs_tsv_malformed_line(tmp_path, line, why):
    p = tmp_path / "bad.tsv"
    p.write_text(f"x\ty\n{line}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=f"line 2 is {line!r}: it has {why}".replace("\\", "\\\\")):
        load_pairs_tsv(p)


# --------------------------------------------------------------------------------------------
# pad_batch and iterate_batches
# --------------------------------------------------------------------------------------------


def test_pad_batch_layout():
    v = Seq2SeqVocab("abc")
    batch = pad_batch([([4, 5, 6], [6]), ([4], [5, 4, 6])], v, max_len=8)
    assert isinstance(batch, Batch)
    np.testing.assert_array_equal(batch.src, [[4, 5, 6], [4, 0, 0]])
    np.testing.assert_array_equal(batch.tgt_in, [[1, 6, 0, 0], [1, 5, 4, 6]])
    np.testing.assert_array_equal(batch.tgt_out, [[6, 2, 0, 0], [5, 4, 6, 2]])
    np.testing.assert_array_equal(batch.src_pad, [[False] * 3, [False, True, True]])
    np.testing.assert_array_equal(batch.tgt_pad, [[False, False, True, True], [False] * 4])
    assert batch.src.dtype == batch.tgt_in.dtype == batch.tgt_out.dtype == np.int64
    assert batch.src_pad.dtype == batch.tgt_pad.dtype == np.bool_


@given(st.lists(st.tuples(st.lists(st.integers(4, 9), min_size=1, max_size=7),
                          st.lists(st.integers(4, 9), min_size=1, max_size=6)),
                min_size=1, max_size=6))
def test_pad_batch_invariants(pairs):
    v = Seq2SeqVocab("abcdef")
    b = pad_batch(pairs, v, max_len=7)
    np.testing.assert_array_equal(b.src_pad, b.src == v.pad_id)
    np.testing.assert_array_equal(b.tgt_pad, b.tgt_out == v.pad_id)
    np.testing.assert_array_equal(b.tgt_pad, b.tgt_in == v.pad_id)
    np.testing.assert_array_equal(b.tgt_in[:, 1:][~b.tgt_pad[:, 1:]], b.tgt_out[:, :-1][~b.tgt_pad[:, 1:]])
    assert (b.tgt_in[:, 0] == v.bos_id).all() and (b.tgt_out == v.eos_id).sum() == len(pairs)
    for i, (s, t) in enumerate(pairs):
        assert v.decode(b.src[i]) == v.decode(s) and v.decode(b.tgt_out[i]) == v.decode(t)


def test_pad_batch_errors():
    v = Seq2SeqVocab("abc")
    with pytest.raises(ValueError, match=r"the source of pairs\[1\] has 5 tokens: longer than max_len = 4"):
        pad_batch([([4], [4]), ([4] * 5, [4])], v, max_len=4)
    with pytest.raises(ValueError, match=r"the target of pairs\[0\] has 4 tokens \(\+1 for bos/eos\): "
                                         r"longer than max_len = 4"):
        pad_batch([([4], [4] * 4)], v, max_len=4)
    with pytest.raises(ValueError, match=r"the target of pairs\[0\] is empty"):
        pad_batch([([4], [])], v, max_len=4)
    with pytest.raises(ValueError, match="pairs hold a src id 7"):
        pad_batch([([7], [4])], v, max_len=4)
    with pytest.raises(ValueError, match="pairs is empty"):
        pad_batch([], v, max_len=4)
    with pytest.raises(ValueError, match="max_len is 1"):
        pad_batch([([4], [4])], v, max_len=1)


def _pairs(n=103):
    vocab, train, _ = make_task("reverse", n, 0, seed=0, min_len=1, max_len=12)
    return vocab, train


def _epoch_sources(batches):
    return [tuple(row[~pad]) for b in batches for row, pad in zip(b.src, b.src_pad)]


@pytest.mark.parametrize("group", [False, True])
def test_iterate_batches_covers_each_pair_once_per_epoch(group):
    vocab, pairs = _pairs()
    batches = list(iterate_batches(pairs, vocab, 10, 16, np.random.default_rng(0),
                                   group_by_length=group))
    assert sorted(b.src.shape[0] for b in batches) == [3] + [10] * 10
    assert sorted(_epoch_sources(batches)) == sorted(tuple(s) for s, _ in pairs)
    dropped = list(iterate_batches(pairs, vocab, 10, 16, np.random.default_rng(0), drop_last=True,
                                   group_by_length=group))
    assert [b.src.shape[0] for b in dropped] == [10] * 10


def test_iterate_batches_seeded_and_reshuffled_each_epoch():
    vocab, pairs = _pairs()
    run = lambda seed: list(iterate_batches(pairs, vocab, 10, 16, np.random.default_rng(seed),  # noqa: E731
                                            epochs=2))
    a, b = run(1), run(1)
    for x, y in zip(a, b):
        for u, w in zip(x, y):
            np.testing.assert_array_equal(u, w)
    assert _epoch_sources(a[:11]) != _epoch_sources(a[11:])   # a new order in the second epoch
    assert _epoch_sources(a[:11]) != _epoch_sources(run(2)[:11])
    unshuffled = list(iterate_batches(pairs, vocab, 10, 16, np.random.default_rng(0), shuffle=False))
    assert _epoch_sources(unshuffled) == [tuple(s) for s, _ in pairs]


def test_iterate_batches_forever_and_grouping_pads_less():
    vocab, pairs = _pairs(2000)
    forever = iterate_batches(pairs, vocab, 64, 16, np.random.default_rng(0), epochs=None)
    assert len(list(itertools.islice(forever, 100))) == 100   # more than one epoch (32 batches)
    padding = {g: sum(b.src_pad.sum() for b in iterate_batches(pairs, vocab, 64, 16,
                                                                np.random.default_rng(0),
                                                                group_by_length=g))
               for g in (False, True)}
    assert padding[True] < padding[False] / 2


def test_iterate_batches_errors():
    vocab, pairs = _pairs(10)
    with pytest.raises(TypeError, match="rng is a int"):
        next(iterate_batches(pairs, vocab, 4, 16, 0))
    with pytest.raises(ValueError, match="batch_size is 0"):
        next(iterate_batches(pairs, vocab, 0, 16, np.random.default_rng(0)))
