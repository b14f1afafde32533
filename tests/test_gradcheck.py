"""The gradient checker itself: it must agree with known derivatives and catch wrong ones."""

import numpy as np
import pytest

from npgpt import gradcheck, nn
from npgpt.cli import main
from tests.helpers import assert_errors_below


def test_rel_error_is_zero_for_equal_and_one_for_opposite():
    a = np.array([1.0, -2.0, 3.0])
    assert gradcheck.rel_error(a, a) == 0.0
    assert gradcheck.rel_error(a, -a) == 1.0
    assert gradcheck.rel_error(np.zeros(3), np.zeros(3)) == 0.0
    with pytest.raises(ValueError, match="a has shape"):
        gradcheck.rel_error(np.zeros(2), np.zeros(3))


def test_numerical_gradient_of_a_known_function():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4))
    dout = rng.standard_normal((3, 4))
    num = gradcheck.numerical_gradient(lambda: np.sin(x) * x, x, dout)
    exact = dout * (np.cos(x) * x + np.sin(x))
    assert gradcheck.rel_error(num, exact) < 1e-9


def test_numerical_gradient_needs_float64():
    x = np.zeros(3, dtype=np.float32)
    with pytest.raises(TypeError, match="x has dtype float32: expected float64"):
        gradcheck.numerical_gradient(lambda: x, x, np.ones(3))


def test_check_layer_catches_a_wrong_backward():
    def wrong_backward(dout, cache):        # forgets the mean terms of the LayerNorm gradient
        x, w, mu, rstd, _ = cache
        dx, dw, db = nn.layernorm_backward(dout, cache)
        return dout * w * rstd, dw, db

    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((2, 3, 5)), rng.standard_normal(5), rng.standard_normal(5)]
    good = gradcheck.check_layer(nn.layernorm_forward, nn.layernorm_backward, inputs)
    bad = gradcheck.check_layer(nn.layernorm_forward, wrong_backward, inputs)
    assert_errors_below(good, 1e-7)
    assert bad["d0"] > 1e-2 and bad["d1"] < 1e-7


def test_sampled_coordinates_check_a_subset():
    rng = np.random.default_rng(1)
    lin = nn.Linear(30, 20, dtype="float64", rng=rng, std=0.3)
    errors = gradcheck.check_module(lin, [rng.standard_normal((4, 30))], samples=10)
    assert_errors_below(errors, 1e-7)


def test_upstream_gradient_is_random_not_ones():
    lin = nn.Linear(3, 3, dtype="float64")
    seen = []
    original = lin.backward
    lin.backward = lambda d, **kw: (seen.append(d.copy()), original(d, **kw))[1]
    gradcheck.check_module(lin, [np.ones((2, 3))])
    assert len(np.unique(seen[0])) == seen[0].size


def test_check_all_covers_every_layer_family():
    rows = gradcheck.check_all()
    layers = {r["layer"].split(" ")[0] for r in rows}
    assert {"Linear", "Embedding", "LearnedPositionalEmbedding", "LayerNorm", "GELU", "ReLU", "Softmax",
            "Dropout", "Attention", "Cross-attention", "MLP", "Block", "EncoderLayer", "DecoderLayer",
            "CrossEntropy"} <= layers
    assert all(r["passed"] for r in rows)


def test_cli_prints_the_table_and_exits_zero(capsys):
    assert main(["gradcheck", "--layer", "cross-attention"]) == 0
    out = capsys.readouterr().out
    assert "kv_proj.weight" in out and "pass" in out and "FAIL" not in out


def test_cli_rejects_an_unknown_layer(capsys):
    assert main(["gradcheck", "--layer", "no-such-layer"]) == 2
    assert "matches no layer" in capsys.readouterr().err


def test_summary_line_says_one_tensor_of_one_layer():
    row = dict(layer="Linear", tensor="weight", shape=(2, 2), tolerance=1e-7, error=0.0,
               element_error=0.0, passed=True)
    assert gradcheck.summary_line([row]).startswith("1/1 tensor of 1 layer within tolerance")
    two = [row, dict(row, tensor="bias"), dict(row, layer="ReLU", passed=False)]
    assert gradcheck.summary_line(two).startswith("2/3 tensors of 2 layers within tolerance")


def test_check_module_fails_a_backward_that_assigns_grad_instead_of_adding():
    """A parameter's .grad may already hold a gradient (a tied weight, accumulation over
    micro-batches): check_module starts it from random values, so `p.grad = g` fails where from
    zero it would pass, and npgpt's own layers (which add) pass."""
    class Scale(nn.Module):
        def __init__(self, assign):
            super().__init__()
            self.s, self.assign = nn.Parameter(np.array([0.3, -1.2, 2.0])), assign

        def forward(self, x):
            self.x = x
            return x * self.s.data

        def backward(self, dout):
            g = (dout * self.x).sum(0)
            if self.assign:
                self.s.grad[...] = g
            else:
                self.s.grad += g
            return dout * self.s.data

    x = np.random.default_rng(0).standard_normal((4, 3))
    assert gradcheck.check_module(Scale(assign=False), [x])["s"] < 1e-9
    assert gradcheck.check_module(Scale(assign=True), [x])["s"] > 1e-2
