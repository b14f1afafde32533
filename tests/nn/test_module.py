"""Parameter and Module: names, gradients, modes and state dicts."""

import numpy as np
import pytest

from npgpt import nn


def small_block():
    return nn.Block(8, 2, dtype="float64", rng=np.random.default_rng(0))


def test_parameter_names_follow_attributes():
    names = [n for n, _ in small_block().named_parameters()]
    assert names[:4] == ["ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias"]
    assert "mlp.c_proj.bias" in names and len(names) == len(set(names)) == 12


def test_a_shared_parameter_is_listed_once():
    m = nn.Module()
    m.a = nn.Linear(3, 3)
    m.b = nn.Linear(3, 3)
    m.b.weight = m.a.weight
    assert [n for n, _ in m.named_parameters()] == ["a.weight", "a.bias", "b.bias"]


def test_zero_grad_clears_every_gradient():
    block = small_block()
    x = np.random.default_rng(1).standard_normal((2, 3, 8))
    block.backward(np.ones_like(block.forward(x)))
    assert any(np.abs(p.grad).sum() > 0 for p in block.parameters())
    block.zero_grad()
    assert all((p.grad == 0).all() for p in block.parameters())


def test_eval_and_train_reach_every_descendant():
    block = nn.Block(8, 2, dropout=0.5)
    block.eval()
    assert not any(m.training for m in block.modules())
    block.train()
    assert all(m.training for m in block.modules())


def test_state_dict_round_trip():
    a, b = small_block(), nn.Block(8, 2, dtype="float64", rng=np.random.default_rng(5))
    b.load_state_dict(a.state_dict())
    for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert na == nb
        np.testing.assert_array_equal(pa.data, pb.data)


def test_state_dict_is_a_copy():
    block = small_block()
    sd = block.state_dict()
    sd["ln_1.weight"][:] = 42
    assert (block.ln_1.weight.data != 42).all()


def test_load_state_dict_names_missing_and_unexpected_keys_and_changes_nothing():
    block = small_block()
    before = block.state_dict()
    sd = block.state_dict()
    sd["ln_1.weight"] = sd["ln_1.weight"] + 1
    del sd["ln_2.bias"]
    sd["ln_3.weight"] = np.zeros(8)
    with pytest.raises(KeyError, match=r"missing keys \['ln_2.bias'\]; unexpected keys \['ln_3.weight'\]"):
        block.load_state_dict(sd)
    for name, value in block.state_dict().items():
        np.testing.assert_array_equal(value, before[name])


def test_load_state_dict_rejects_a_mis_shaped_array_and_changes_nothing():
    block = small_block()
    before = block.state_dict()
    sd = block.state_dict()
    sd["ln_1.bias"] = sd["ln_1.bias"] + 1
    sd["attn.c_proj.weight"] = np.zeros((8, 9))
    with pytest.raises(ValueError, match=r"'attn.c_proj.weight' has shape \(8, 9\), expected \(8, 8\)"):
        block.load_state_dict(sd)
    np.testing.assert_array_equal(block.ln_1.bias.data, before["ln_1.bias"])


def test_load_state_dict_non_strict_accepts_partial_states():
    block = small_block()
    block.load_state_dict({"ln_1.bias": np.full(8, 3.0)}, strict=False)
    assert (block.ln_1.bias.data == 3.0).all()


def test_flatten_parameters_makes_views_of_one_buffer():
    block = small_block()
    params = block.parameters()
    values = [p.data.copy() for p in params]
    data, grad = nn.flatten_parameters(params + params[:2])           # duplicates stored once
    assert data.size == sum(p.size for p in params)
    for p, v in zip(params, values):
        np.testing.assert_array_equal(p.data, v)
        assert np.shares_memory(p.data, data) and np.shares_memory(p.grad, grad)
    data[:] = 0
    assert (block.ln_1.weight.data == 0).all()
    x = np.random.default_rng(2).standard_normal((2, 3, 8))
    block.backward(np.ones_like(block.forward(x)))                   # layers write through the views
    assert np.abs(grad).sum() > 0


def test_parameters_decay_by_default_only_for_matrices():
    emb, lin, ln = nn.Embedding(5, 3), nn.Linear(3, 3), nn.LayerNorm(3)
    assert lin.weight.decay and not lin.bias.decay
    assert not ln.weight.decay and not emb.weight.decay


def test_frozen_weights_get_no_gradient_work():
    lin = nn.Linear(3, 2, dtype="float64")
    lin.weight.requires_grad = False
    x = np.ones((4, 3))
    lin.forward(x)
    dx = lin.backward(np.ones((4, 2)))
    assert (lin.weight.grad == 0).all() and (lin.bias.grad == 4).all() and dx.shape == (4, 3)


def test_gelu_and_relu_are_activation_classes_with_torchs_spelling():
    assert isinstance(nn.GELU(), nn.Activation) and isinstance(nn.ReLU(), nn.Activation)
    assert nn.GELU().name == "gelu" and nn.GELU(approximate="tanh").name == "gelu_tanh"
    assert nn.GELU("tanh").approximate == "tanh" and nn.ReLU().name == "relu"
    assert repr(nn.GELU(approximate="tanh")) == "GELU(approximate='tanh')" and repr(nn.ReLU()) == "ReLU()"
    x = np.linspace(-3, 3, 13)
    np.testing.assert_allclose(nn.GELU("tanh").forward(x), nn.gelu_tanh_forward(x)[0], rtol=1e-12)
    np.testing.assert_array_equal(nn.ReLU().forward(x), np.maximum(x, 0))
    with pytest.raises(ValueError, match=r"approximate='fast': expected 'none' or 'tanh'"):
        nn.GELU("fast")
