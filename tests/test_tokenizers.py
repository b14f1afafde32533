"""Tokenizers: round trips, training, GPT-2's files, and ids identical to Hugging Face's GPT-2."""

from __future__ import annotations

import json
import os
import time
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npgpt.data import Seq2SeqVocab, default_corpus
from npgpt.tokenizers import BPETokenizer, CharTokenizer, bytes_to_unicode, tokenizer_from_dict
from npgpt.tokenizers.bpe_train import count_words

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # transformers reads local folders only

EOT = "<|endoftext|>"
PARAGRAPH = ("The for statement is used to iterate over the elements of a sequence (such as a "
             "string, tuple or list) or other iterable object:\r\n\r\n   for_stmt ::= \"for\" "
             "target_list \"in\" starred_list \":\" suite\n\tCafé naïve — ½ ∑ 🎉🎉 e\u0301 "
             "日本語のテキスト   \n\n\n  x<|endoftext|>Next document's 123456 tokens' end.  ")


@pytest.fixture(scope="module")
def corpus() -> str:
    return default_corpus()


@pytest.fixture(scope="module")
def bpe(corpus) -> BPETokenizer:
    return BPETokenizer.train(corpus, 1024)


@pytest.fixture(scope="module")
def bpe_folder(bpe, tmp_path_factory):
    folder = tmp_path_factory.mktemp("bpe")
    bpe.save(folder)
    return folder


@pytest.fixture(scope="module")
def hf(bpe_folder):
    transformers = pytest.importorskip("transformers")
    # transformers 5.x: GPT2Tokenizer is the Rust `tokenizers` backend and reads
    # vocab.json + merges.txt from a local folder (no network).
    return transformers.GPT2Tokenizer.from_pretrained(str(bpe_folder))


# --------------------------------------------------------------------------------------------
# CharTokenizer
# --------------------------------------------------------------------------------------------

def test_char_from_text_sorted_unique():
    tok = CharTokenizer.from_text("hello world")
    assert tok.chars == sorted(set("hello world"))
    assert tok.vocab_size == 8
    assert tok.encode("hello") == [3, 2, 4, 4, 5]


@given(st.text(min_size=1))
def test_char_round_trip(text):
    tok = CharTokenizer.from_text(text)
    ids = tok.encode(text)
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text
    assert tok.decode(np.array(ids, dtype=np.int64)) == text
    assert tok.decode(iter(ids)) == text


def test_char_unknown_character_names_it_and_its_position():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(ValueError, match=r"text\[4\] is 'z'.*knows 3 characters"):
        tok.encode("abcaz")
    with pytest.raises(ValueError, match=r"text\[0\] is '\\n'"):
        tok.encode("\n")


def test_char_decode_errors():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(ValueError, match=r"ids\[1\] is 3: expected token ids in \[0, 3\)"):
        tok.decode([0, 3])
    with pytest.raises(ValueError, match=r"ids\[0\] is -1"):
        tok.decode(np.array([-1]))
    with pytest.raises(TypeError, match=r"ids\[1\] is 1.5"):
        tok.decode([0, 1.5])
    with pytest.raises(TypeError, match="ids is an array of shape"):
        tok.decode(np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(TypeError, match="ids is a str"):
        tok.decode("ab")


def test_char_constructor_errors():
    with pytest.raises(ValueError, match=r"chars\[1\] is 'ab'"):
        CharTokenizer(["a", "ab"])
    with pytest.raises(ValueError, match="chars holds 'a' more than once"):
        CharTokenizer("aba")
    with pytest.raises(ValueError, match="chars is empty"):
        CharTokenizer([])
    with pytest.raises(ValueError, match="text is ''"):
        CharTokenizer.from_text("")


def test_char_encodes_a_megabyte_fast():
    text = ("The quick brown fox jumps over the lazy dog.\n" * 25_000)[:1_000_000]
    tok = CharTokenizer.from_text(text)
    t0 = time.perf_counter()
    ids = tok.encode(text)
    elapsed = time.perf_counter() - t0
    assert len(ids) == 1_000_000
    assert elapsed < 1.0, f"encoding 1 MB took {elapsed:.2f} s"


def test_char_dict_and_file_round_trip(tmp_path):
    tok = CharTokenizer.from_text("héllo\n\t🎉")
    d = json.loads(json.dumps(tok.to_dict()))
    again = tokenizer_from_dict(d)
    assert isinstance(again, CharTokenizer) and again.chars == tok.chars
    tok.save(tmp_path / "tok.json")
    assert CharTokenizer.load(tmp_path / "tok.json").chars == tok.chars
    assert [p.name for p in tmp_path.iterdir()] == ["tok.json"]  # no temporary file left
    with pytest.raises(FileNotFoundError, match="path .*missing"):
        CharTokenizer.load(tmp_path / "nope.json")


# --------------------------------------------------------------------------------------------
# bytes_to_unicode and training
# --------------------------------------------------------------------------------------------

def test_bytes_to_unicode_is_gpt2s_table():
    table = bytes_to_unicode()
    assert len(set(table.values())) == 256
    assert table[ord(" ")] == "Ġ" and table[ord("\n")] == "Ċ" and table[ord("a")] == "a"
    assert all(c.isprintable() and not c.isspace() for c in table.values())


def test_train_wikipedia_example_with_deterministic_ties():
    # aaabdaaabac: 'aa' (4 times) first; then 'ab' and 'aa'+'a' tie at 2 and the smaller pair
    # of ids wins ('a','b') = (97, 98); then 'aa'+'ab' (2 times).
    tok = BPETokenizer.train("aaabdaaabac", 259, special_tokens=())
    assert tok.merges == [("a", "a"), ("a", "b"), ("aa", "ab")]
    assert tok.encode("aaabdaaabac") == [258, ord("d"), 258, ord("a"), ord("c")]
    assert tok.special_tokens == []


def _naive_merges(text: str, n_merges: int) -> list[tuple[bytes, bytes]]:
    """Reference trainer: recount every pair of every word before each merge."""
    words, freqs = count_words(text, [])
    words = [[bytes([b]) for b in w] for w in words]
    merges = []
    for _ in range(n_merges):
        counts = Counter()
        for w, f in zip(words, freqs):
            for p in zip(w, w[1:]):
                counts[p] += f
        if not counts:
            break
        ids = {bytes([b]): b for b in range(256)}
        for a, b in merges:
            ids.setdefault(a + b, len(ids))
        best = min(counts, key=lambda p: (-counts[p], ids[p[0]], ids[p[1]]))
        merges.append(best)
        for k, w in enumerate(words):
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            words[k] = out
    return merges


def test_incremental_training_equals_full_recount(corpus):
    text = corpus[:20_000]
    tok = BPETokenizer.train(text, 256 + 120, special_tokens=())
    to_bytes = {v: k for k, v in bytes_to_unicode().items()}
    ours = [(bytes(to_bytes[c] for c in a), bytes(to_bytes[c] for c in b)) for a, b in tok.merges]
    assert ours == _naive_merges(text, len(ours))


@pytest.mark.filterwarnings("ignore:BPETokenizer.train")
@given(st.text(alphabet="ab c\n", max_size=60))
def test_incremental_training_equals_full_recount_on_small_texts(text):
    tok = BPETokenizer.train(text, 256 + 12, special_tokens=())
    to_bytes = {v: k for k, v in bytes_to_unicode().items()}
    ours = [(bytes(to_bytes[c] for c in a), bytes(to_bytes[c] for c in b)) for a, b in tok.merges]
    assert ours == _naive_merges(text, 12)[:len(ours)]
    assert tok.decode(tok.encode(text)) == text


def test_train_is_fast_and_deterministic(corpus, bpe):
    t0 = time.perf_counter()
    again = BPETokenizer.train(corpus, 1024)
    elapsed = time.perf_counter() - t0
    assert elapsed < 30, f"training on {len(corpus)} characters took {elapsed:.1f} s"
    assert again.merges == bpe.merges and again.encoder == bpe.encoder
    assert bpe.vocab_size == 1024 and bpe.special_tokens == [EOT] and bpe.special_id() == 1023
    assert len(bpe.encode(corpus)) < len(corpus.encode()) / 2.5  # it really compresses


def test_train_errors_and_small_texts():
    with pytest.raises(ValueError, match="vocab_size is 200: expected an int >= 256"):
        BPETokenizer.train("abc", 200)
    with pytest.raises(ValueError, match="special_tokens is"):
        BPETokenizer.train("abc", 300, special_tokens=("x", "x"))
    with pytest.raises(ValueError, match="special_tokens holds 'a', which is also a byte-level"):
        BPETokenizer.train("abc", 300, special_tokens=("a",))
    with pytest.warns(UserWarning, match="ran out of pairs"):
        tok = BPETokenizer.train("abc", 300)
    assert tok.vocab_size == 256 + 2 + 1


@pytest.mark.filterwarnings("ignore:BPETokenizer.train")
def test_special_tokens_are_not_learned_from():
    tok = BPETokenizer.train(f"ab{EOT}ab{EOT}", 300)
    assert all("|" not in a + b for a, b in tok.merges)


# --------------------------------------------------------------------------------------------
# BPETokenizer encode / decode
# --------------------------------------------------------------------------------------------

@given(st.text())
def test_bpe_round_trip_any_text(bpe, text):
    ids = bpe.encode(text)
    assert all(0 <= i < bpe.vocab_size for i in ids)
    assert bpe.decode(ids) == text
    assert bpe.decode(np.array(ids, dtype=np.int64)) == text


@pytest.mark.parametrize("text", ["", " ", "\r\n", "a\r\n\r\nb", "   \t\t  x  ", "e\u0301\u0301",
                                  "🎉👩‍👩‍👧", "\x00\x1c\x7f\u00ad\uffff\U0010ffff", "I'll've'S",
                                  PARAGRAPH, EOT, EOT + EOT, "<|endoftext", "<|endoftext|"])
def test_bpe_round_trip_tricky(bpe, text):
    assert bpe.decode(bpe.encode(text)) == text


def test_bpe_special_token_maps_to_its_id(bpe):
    ids = bpe.encode(f"hi{EOT} there")
    assert ids.count(1023) == 1 and ids[:ids.index(1023)] == bpe.encode("hi")
    assert ids[ids.index(1023) + 1:] == bpe.encode(" there")
    assert bpe.decode([1023]) == EOT


def test_bpe_caches_words(bpe):
    bpe.encode(" cached_word_xyz")
    assert " cached_word_xyz" not in bpe._cache  # pieces are cached, not whole texts
    assert {" cached", "_", "word", "xyz"} <= set(bpe._cache)


def test_bpe_decode_errors(bpe):
    with pytest.raises(ValueError, match=r"ids\[2\] is 1024: expected token ids in \[0, 1024\)"):
        bpe.decode([1, 2, 1024])
    with pytest.raises(TypeError, match="text is a list"):
        bpe.encode([1])
    assert bpe.decode([0xC3]) == "\ufffd"  # half a UTF-8 sequence: the replacement character


# --------------------------------------------------------------------------------------------
# Files and dicts
# --------------------------------------------------------------------------------------------

def test_save_writes_gpt2_files_and_loads_back(bpe, bpe_folder):
    assert sorted(p.name for p in bpe_folder.iterdir()) == ["merges.txt", "vocab.json"]
    lines = (bpe_folder / "merges.txt").read_text(encoding="utf-8").split("\n")
    assert lines[0] == "#version: 0.2" and lines[1] == " ".join(bpe.merges[0])
    vocab = json.loads((bpe_folder / "vocab.json").read_text(encoding="utf-8"))
    assert vocab["Ġ"] == 32 and vocab[EOT] == 1023
    again = BPETokenizer.load(bpe_folder)
    assert again.encoder == bpe.encoder and again.merges == bpe.merges
    assert again.special_tokens == [EOT]  # found: neither a byte nor the result of a merge
    assert again.encode(PARAGRAPH) == bpe.encode(PARAGRAPH)


def test_dict_round_trip(bpe):
    d = json.loads(json.dumps(bpe.to_dict()))
    again = tokenizer_from_dict(d)
    assert isinstance(again, BPETokenizer)
    assert again.encoder == bpe.encoder and again.merges == bpe.merges
    assert again.special_tokens == bpe.special_tokens
    assert again.encode(PARAGRAPH) == bpe.encode(PARAGRAPH)


def test_tokenizer_from_dict_errors():
    with pytest.raises(ValueError, match="d has type 'wordpiece'.*one of \\['bpe', 'char', 'seq2seq'\\]"):
        tokenizer_from_dict({"type": "wordpiece"})
    with pytest.raises(ValueError, match="d has type None"):
        tokenizer_from_dict({"vocab": {}})
    with pytest.raises(ValueError, match="d has type 'list'"):
        tokenizer_from_dict([1, 2])
    with pytest.raises(ValueError, match="lacks the key 'merges'"):
        tokenizer_from_dict({"type": "bpe", "vocab": {}})
    with pytest.raises(TypeError, match="encoder is a list"):
        tokenizer_from_dict({"type": "bpe", "vocab": [], "merges": []})


def test_tokenizer_from_dict_rebuilds_a_seq2seq_vocab():
    vocab = Seq2SeqVocab("0123456789+")
    assert tokenizer_from_dict(json.loads(json.dumps(vocab.to_dict()))) == vocab


def _write_folder(folder, vocab: dict, merges_text: str):
    folder.mkdir(exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text(merges_text, encoding="utf-8")
    return folder


def _byte_vocab() -> dict:
    return {c: i for i, c in enumerate(bytes_to_unicode().values())}


def test_load_errors(tmp_path, bpe_folder):
    with pytest.raises(FileNotFoundError, match="folder .*nope.* is not a directory"):
        BPETokenizer.load(tmp_path / "nope")
    (tmp_path / "only_vocab").mkdir()
    (tmp_path / "only_vocab" / "vocab.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="merges file .*merges.txt.* is missing"):
        BPETokenizer.load(tmp_path / "only_vocab")
    (tmp_path / "only_merges").mkdir()
    (tmp_path / "only_merges" / "merges.txt").write_text("#version: 0.2\n")
    with pytest.raises(FileNotFoundError, match="vocab file .*vocab.json.* is missing"):
        BPETokenizer.load(tmp_path / "only_merges")

    vocab = {**_byte_vocab(), "ab": 256}
    bad_line = _write_folder(tmp_path / "bad_line", vocab, "#version: 0.2\na b\nabc\n")
    with pytest.raises(ValueError, match=r"line 3 is 'abc': expected two tokens"):
        BPETokenizer.load(bad_line)
    not_in_vocab = _write_folder(tmp_path / "oov", vocab, "#version: 0.2\na b\nab c\n")
    with pytest.raises(ValueError, match=r"merges\[1\] is 'ab' 'c': 'abc' is not in the vocabulary"):
        BPETokenizer.load(not_in_vocab)
    no_byte = _write_folder(tmp_path / "no_byte", {"a": 0}, "")
    with pytest.raises(ValueError, match="encoder has no token for byte 0x00"):
        BPETokenizer.load(no_byte)
    gaps = _write_folder(tmp_path / "gaps", {**_byte_vocab(), "ab": 300}, "a b\n")
    with pytest.raises(ValueError, match="encoder has ids .*expected each of 0 .. 256"):
        BPETokenizer.load(gaps)
    good = _write_folder(tmp_path / "good", vocab, "a b\n")  # no '#version' line is fine
    assert BPETokenizer.load(good).encode("abab") == [256, 256]


def test_save_refuses_a_file(bpe, tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="folder .* is a file"):
        bpe.save(tmp_path / "f")


# --------------------------------------------------------------------------------------------
# The same ids as Hugging Face's GPT-2 tokenizer on the same files
# --------------------------------------------------------------------------------------------

def _hf_encode(hf, text):
    return hf.encode(text, add_special_tokens=False)


def _hf_decode(hf, ids):
    return hf.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def test_same_ids_as_transformers_on_real_text(bpe, hf, corpus):
    assert _hf_encode(hf, PARAGRAPH) == bpe.encode(PARAGRAPH)
    text = corpus[100_000:160_000]
    ids = bpe.encode(text)
    assert _hf_encode(hf, text) == ids
    assert _hf_decode(hf, ids) == bpe.decode(ids) == text


@settings(max_examples=60)
@given(st.lists(st.one_of(st.text(), st.just(EOT), st.sampled_from([" ", "\r\n", "  \n", "'s"])),
                max_size=6).map("".join))
def test_same_ids_as_transformers_on_any_text(bpe, hf, text):
    ids = bpe.encode(text)
    assert _hf_encode(hf, text) == ids
    assert _hf_decode(hf, ids) == text


@pytest.mark.filterwarnings("ignore:BPETokenizer.train")
def test_extra_special_tokens_match_transformers(corpus, tmp_path):
    # GPT-2's files cannot mark special tokens: npgpt finds them (in vocab.json, made by no
    # merge); transformers is told with extra_special_tokens (only '<|endoftext|>' by default).
    transformers = pytest.importorskip("transformers")
    tok = BPETokenizer.train(corpus[:30_000], 400, special_tokens=(EOT, "<|pad|>"))
    tok.save(tmp_path)
    again = BPETokenizer.load(tmp_path)
    assert again.special_tokens == [EOT, "<|pad|>"] and again.special_id("<|pad|>") == 399
    hf = transformers.GPT2Tokenizer.from_pretrained(str(tmp_path), extra_special_tokens=["<|pad|>"])
    text = f"a <|pad|>b{EOT}<|pad|><|pad|> c<|pad"
    assert again.encode(text) == tok.encode(text) == _hf_encode(hf, text)
    assert again.encode(text).count(399) == 3


@given(st.lists(st.integers(0, 1023), max_size=30))
def test_same_text_as_transformers_from_any_ids(bpe, hf, ids):
    # arbitrary ids may split UTF-8 sequences: both replace the bad bytes with U+FFFD
    assert bpe.decode(ids) == _hf_decode(hf, ids)
