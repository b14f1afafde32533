"""Bad input raises before any work, with a message that names the argument and the expectation."""

import numpy as np
import pytest

from npgpt import GPTConfig, TransformerConfig, nn
from npgpt.kernels import reference

rng = np.random.default_rng(0)


def test_linear_rejects_a_wrong_width():
    with pytest.raises(ValueError, match=r"x has shape \(2, 3, 6\).*last dimension to be 7"):
        nn.Linear(7, 5).forward(np.zeros((2, 3, 6), dtype=np.float32))


def test_linear_rejects_a_mismatched_dtype():
    with pytest.raises(TypeError, match=r"x has dtype float64: expected float32"):
        nn.Linear(7, 5).forward(np.zeros((2, 7)))


def test_layers_reject_non_arrays():
    with pytest.raises(TypeError, match=r"x is a list: expected a numpy array"):
        nn.LayerNorm(3).forward([[1.0, 2.0, 3.0]])


def test_layernorm_rejects_a_wrong_width():
    with pytest.raises(ValueError, match=r"x has shape \(4, 5\).*last dimension to be 3"):
        nn.LayerNorm(3, dtype="float64").forward(np.zeros((4, 5)))


@pytest.mark.parametrize("ids, error, message", [
    (np.array([[1.0, 2.0]]), TypeError, r"idx has dtype float64: expected integer token ids"),
    (np.array([[1, 11]]), ValueError, r"idx contains token id 11: expected ids in \[0, 11\)"),
    (np.array([[-1, 3]]), ValueError, r"idx contains token id -1: expected ids in \[0, 11\)"),
    ([[1, 2]], TypeError, r"idx is a list: expected a numpy array"),
])
def test_embedding_rejects_bad_token_ids(ids, error, message):
    with pytest.raises(error, match=message):
        nn.Embedding(11, 4).forward(ids)


def test_positions_beyond_the_table_are_an_error():
    with pytest.raises(ValueError, match=r"positions 0..9 do not fit: expected at most 8"):
        nn.LearnedPositionalEmbedding(8, 4).forward(10)
    with pytest.raises(ValueError, match=r"positions 6..8 do not fit"):
        nn.SinusoidalPositionalEncoding(8, 4).forward(3, offset=6)


@pytest.mark.parametrize("make", [
    lambda: nn.MultiHeadAttention(10, 4),
    lambda: nn.Block(10, 4),
    lambda: GPTConfig(n_embd=10, n_head=4),
    lambda: TransformerConfig(d_model=10, n_head=4),
])
def test_width_not_divisible_by_heads(make):
    with pytest.raises(ValueError, match=r"(n_embd|d_model)=10 is not divisible by n_head=4"):
        make()


def test_cross_attention_needs_memory_of_the_same_batch():
    attn = nn.MultiHeadAttention(8, 2, cross=True, dtype="float64")
    x = np.zeros((2, 3, 8))
    with pytest.raises(ValueError, match=r"cross-attention needs memory"):
        attn.forward(x)
    with pytest.raises(ValueError, match=r"memory has batch size 3: expected 2"):
        attn.forward(x, np.zeros((3, 4, 8)))
    with pytest.raises(TypeError, match=r"memory has dtype float32: expected float64"):
        attn.forward(x, np.zeros((2, 4, 8), dtype=np.float32))


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(k=np.zeros((2, 2, 5, 3))), ValueError, r"k has shape \(2, 2, 5, 3\): expected \(B, H, Tk, D\) = \(2, 2, Tk, 4\)"),
    (dict(v=np.zeros((2, 2, 6, 4))), ValueError, r"v has shape \(2, 2, 6, 4\): expected the shape of k"),
    (dict(q=np.zeros((2, 5, 4))), ValueError, r"q has shape \(2, 5, 4\): expected a 4-D array"),
    (dict(v=np.zeros((2, 2, 5, 4), dtype=np.float32)), TypeError, r"q, k, v have dtypes float64, float64, float32"),
    (dict(key_pad=np.zeros((2, 4), dtype=bool)), ValueError, r"key_pad has shape \(2, 4\).*expected a bool array of shape \(2, 5\)"),
    (dict(key_pad=np.zeros((2, 5))), ValueError, r"key_pad .* dtype float64: expected a bool array"),
    (dict(k=np.zeros((2, 2, 3, 4)), v=np.zeros((2, 2, 3, 4))), ValueError, r"causal with 5 queries and 3 keys: expected Tq <= Tk"),
])
def test_attention_kernel_checks_its_arguments(kwargs, error, message):
    args = dict(q=np.zeros((2, 2, 5, 4)), k=np.zeros((2, 2, 5, 4)), v=np.zeros((2, 2, 5, 4)), causal=True)
    args.update(kwargs)
    with pytest.raises(error, match=message):
        reference.attention_forward(**args)


@pytest.mark.parametrize("targets, error, message", [
    (np.array([[0, 5]]), ValueError, r"targets contains 5: expected ids in \[0, 5\) or ignore_index=-100"),
    (np.array([[0, -3]]), ValueError, r"targets contains -3"),
    (np.array([[0.0, 1.0]]), TypeError, r"targets has dtype float64: expected an integer array"),
    (np.array([0, 1]), ValueError, r"targets has shape \(2,\): expected \(1, 2\)"),
])
def test_cross_entropy_rejects_bad_targets(targets, error, message):
    with pytest.raises(error, match=message):
        nn.cross_entropy_forward(np.zeros((1, 2, 5)), targets)


def test_cross_entropy_rejects_bad_smoothing():
    with pytest.raises(ValueError, match=r"label_smoothing=1.5, expected a number in \[0, 1\)"):
        nn.cross_entropy_forward(np.zeros((1, 2, 5)), np.zeros((1, 2), dtype=np.int64), label_smoothing=1.5)


def test_dropout_rejects_a_probability_outside_0_1():
    with pytest.raises(ValueError, match=r"p=1.0, expected a probability in \[0, 1\)"):
        nn.Dropout(1.0)


def test_unknown_activation_and_dtype():
    with pytest.raises(ValueError, match=r"activation='swish' is unknown: expected one of"):
        nn.MLP(4, 8, "swish")
    with pytest.raises(TypeError, match=r"dtype='float16' is not supported"):
        nn.Linear(2, 2, dtype="float16")


@pytest.mark.parametrize("field, value", [("n_layer", 0), ("vocab_size", -1), ("block_size", 2.5),
                                          ("dropout", 1.0), ("activation", "tanh"),
                                          ("pos_encoding", "rotary"), ("dtype", "float16")])
def test_gpt_config_names_the_bad_field(field, value):
    with pytest.raises(ValueError, match=rf"GPTConfig: {field}={value!r}"):
        GPTConfig(**{field: value})
