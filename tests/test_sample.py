"""Sampling glue: streamed text equals one generate call; prompts and models are checked."""

import numpy as np
import pytest

from npgpt import GPT, GPTConfig
from npgpt import checkpoint as ckpt_io
from npgpt.sample import default_prompt, encode_prompt, generate_text, load_model
from npgpt.tokenizers import BPETokenizer, CharTokenizer

TEXT = "the cat sat on the mat; the dog sat on the log.\n"


@pytest.fixture(scope="module")
def char_model():
    tok = CharTokenizer.from_text(TEXT)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=24, n_layer=2, n_head=2, n_embd=16), seed=1)
    return model.eval(), tok


@pytest.mark.parametrize("use_cache", [True, False])
def test_streamed_text_equals_one_generate_call(char_model, use_cache):
    """Streaming runs generate in chunks sharing one Generator: the same tokens as one call,
    also past block_size (the sliding window)."""
    model, tok = char_model
    pieces = []
    texts = generate_text(model, tok, "the ", 60, temperature=1.0, top_k=10, seed=4,
                          use_cache=use_cache, stream=pieces.append)
    ids = model.generate(np.array(tok.encode("the ")), 60, temperature=1.0, top_k=10, seed=4)
    assert texts == ["".join(pieces)] == [tok.decode(ids)]
    assert len(pieces) > 2 and len(ids) == 64 > model.config.block_size


def test_several_samples_differ_and_repeat_with_the_seed(char_model):
    model, tok = char_model
    a = generate_text(model, tok, "the", 20, temperature=1.0, seed=0, num_samples=3)
    assert len(a) == 3 and len(set(a)) == 3 and all(t.startswith("the") for t in a)
    assert a == generate_text(model, tok, "the", 20, temperature=1.0, seed=0, num_samples=3)
    greedy = generate_text(model, tok, "the", 20, temperature=0, num_samples=2)
    assert greedy[0] == greedy[1]


def test_unknown_prompt_character_is_named(char_model):
    model, tok = char_model
    with pytest.raises(ValueError, match=r"prompt 'the Zebra'.*text\[4\] is 'Z'"):
        generate_text(model, tok, "the Zebra", 5)
    with pytest.raises(ValueError, match="prompt is empty"):
        encode_prompt(tok, "")
    with pytest.raises(ValueError, match="max_new_tokens=-1, expected an integer >= 0"):
        generate_text(model, tok, "the", -1, stream=print)


def test_prompt_longer_than_the_context_without_the_window(char_model):
    model, tok = char_model
    long = (TEXT * 2)[:30]
    with pytest.raises(ValueError, match="30 tokens long: expected at most block_size=24 without the sliding window"):
        generate_text(model, tok, long, 5, window=False)
    assert len(generate_text(model, tok, long, 5)[0]) == 35          # the window slides
    # without the window generation stops at block_size
    assert len(generate_text(model, tok, long[:20], 10, window=False, stream=lambda s: None)[0]) == 24


def test_load_model_from_checkpoint_and_run_folder(char_model, tmp_path):
    model, tok = char_model
    ckpt_io.save(tmp_path / "ckpt.safetensors", model, tokenizer=tok.to_dict())
    for where in (tmp_path / "ckpt.safetensors", tmp_path):
        loaded, tok2 = load_model(where)
        assert tok2.chars == tok.chars
        assert np.array_equal(loaded.wte.weight.data, model.wte.weight.data)
    ckpt_io.save(tmp_path / "bare.safetensors", model)
    with pytest.raises(ValueError, match="holds no tokenizer"):
        load_model(tmp_path / "bare.safetensors")
    with pytest.raises(ValueError, match="exactly one"):
        load_model()


def test_load_model_from_a_gpt2_folder(tmp_path):
    tok = BPETokenizer.train("hello world, hello there. " * 20, 270)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=8))
    ckpt_io.save_gpt2(model, tmp_path, tokenizer=tok)
    loaded, tok2 = load_model(gpt2=tmp_path)
    assert tok2.encode("hello there") == tok.encode("hello there")
    assert default_prompt(tok2) == "<|endoftext|>"
    (tmp_path / "merges.txt").unlink()
    with pytest.raises(FileNotFoundError, match="no vocab.json and merges.txt"):
        load_model(gpt2=tmp_path)


def test_default_prompt():
    assert default_prompt(CharTokenizer.from_text("ab\nc")) == "\n"
    assert default_prompt(CharTokenizer.from_text("abc")) == "a"
