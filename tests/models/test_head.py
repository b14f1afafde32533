"""The tied head (npgpt.nn.head): logits = x @ E^T (+ b), E the embedding's own table. One layer
for GPT's lm_head and the Transformer's shared generator; checked against the numerical
gradient and PyTorch, alone and tied to its embedding (where the table's two gradients add)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from npgpt import GPT, GPTConfig, Transformer, TransformerConfig, kernels
from npgpt.gradcheck import TOLERANCES, check_module
from npgpt.nn import Embedding, Linear, Module
from npgpt.nn.head import TiedHead, tied_head_backward, tied_head_forward
from npgpt.optim import adamw as adamw_module
from npgpt.optim import AdamW
from tests.helpers import assert_close, assert_errors_below

V, C = 7, 5


class EmbedThenHead(Module):
    """logits = head(E[idx] + x): the table used twice, as in a tied language model."""

    def __init__(self, bias: bool, seed: int = 0):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.embed = Embedding(V, C, dtype="float64", rng=rng, std=0.5)
        self.head = TiedHead(self.embed, bias=bias)
        if bias:
            self.head.bias.data[...] = rng.standard_normal(V)
        self.idx = rng.integers(0, V, (2, 3))

    def forward(self, x):
        return self.head.forward(self.embed.forward(self.idx) + x)

    def backward(self, dlogits):
        dz = self.head.backward(dlogits)                     # forward: logits = head(z)
        self.embed.backward(dz)                              # forward: z = E[idx] + x
        return dz


@pytest.mark.parametrize("bias", [False, True], ids=["no bias (GPT-2)", "bias (Transformer)"])
def test_a_tied_table_gets_both_gradients_numerical_and_torch(bias):
    model = EmbedThenHead(bias)
    x = np.random.default_rng(1).standard_normal((2, 3, C))
    assert [n for n, _ in model.named_parameters()] == ["embed.weight"] + (["head.bias"] if bias else [])
    assert_errors_below(check_module(model, [x], seed=2), TOLERANCES["smooth"])

    dout = np.random.default_rng(3).standard_normal((2, 3, V))
    model.zero_grad()
    out = model.forward(x)
    dx = model.backward(dout)
    E = torch.tensor(model.embed.weight.data.copy(), requires_grad=True)
    b = torch.tensor(model.head.bias.data.copy(), requires_grad=True) if bias else None
    tx = torch.tensor(x, requires_grad=True)
    t_out = F.linear(F.embedding(torch.from_numpy(model.idx), E) + tx, E, b)
    t_out.backward(torch.from_numpy(dout))
    assert_close("logits", out, t_out.detach().numpy(), 1e-12)
    assert_close("dx", dx, tx.grad.numpy(), 1e-12)
    assert_close("dE (lookup + head)", model.embed.weight.grad, E.grad.numpy(), 1e-12)
    if bias:
        assert_close("db", model.head.bias.grad, b.grad.numpy(), 1e-12)


def test_the_head_adds_the_tables_gradient_in_place():
    rng = np.random.default_rng(4)
    x, e, dout = rng.standard_normal((2, 3, C)), rng.standard_normal((V, C)), rng.standard_normal((2, 3, V))
    y, cache = tied_head_forward(x, e)
    assert_close("y", y, x @ e.T, 1e-14)
    grad = rng.standard_normal((V, C))
    before = grad.copy()
    dx, dw, db = tied_head_backward(dout, cache, dw_out=grad)
    assert dw is grad and db is None                          # one product into .grad, no (V, C) temporary
    assert_close("dE", grad - before, dout.reshape(-1, V).T @ x.reshape(-1, C), 1e-13)
    assert_close("dx", dx, dout @ e, 1e-14)
    _, fresh, _ = tied_head_backward(dout, cache, need_dx=False)
    assert_close("dE without dw_out", fresh, grad - before, 1e-13)


def test_a_frozen_table_gets_nothing_from_the_head():
    model = EmbedThenHead(bias=True)
    model.embed.weight.requires_grad = False
    model.forward(np.zeros((2, 3, C)))
    model.backward(np.ones((2, 3, V)))
    assert not model.embed.weight.grad.any() and model.head.bias.grad.any()


def test_both_models_use_the_tied_head():
    gpt = GPT(GPTConfig.preset("gradcheck"), seed=0)
    assert isinstance(gpt.lm_head, TiedHead) and gpt.lm_head.weight is gpt.wte.weight
    assert gpt.lm_head.bias is None
    untied = GPT(GPTConfig.preset("gradcheck", tie_weights=False), seed=0)
    assert isinstance(untied.lm_head, Linear)
    cfg = TransformerConfig(src_vocab_size=9, tgt_vocab_size=9, d_model=8, n_head=2, n_encoder_layers=1,
                            n_decoder_layers=1, d_ff=16, max_len=8, share_embeddings=True)
    t = Transformer(cfg, seed=0)
    assert isinstance(t.generator, TiedHead) and t.generator.weight is t.src_embed.weight
    assert t.generator.bias is not None and "generator.bias" in dict(t.named_parameters())
    assert isinstance(Transformer(cfg.replace(share_embeddings=False)).generator, Linear)


@pytest.mark.parametrize("make", [
    lambda: GPT(GPTConfig.preset("gradcheck", dtype="float32"), seed=0),
    lambda: Transformer(TransformerConfig(d_model=16, n_head=2, n_encoder_layers=1, n_decoder_layers=1,
                                          d_ff=32, share_embeddings=True), seed=0),
], ids=["GPT", "Transformer"])
def test_a_model_is_one_flat_buffer_and_adamw_one_call_per_step(make, monkeypatch):
    """The models flatten their parameters when built: an optimizer over them has one run, and
    a step is one update call (on the numba backend: one fused pass over the whole model)."""
    model = make()
    params = model.parameters()
    base = params[0].data.base
    assert base is not None and all(p.data.base is base for p in params)
    assert base.size == sum(p.size for p in params)
    arrays = [(p.data, p.grad) for p in params]               # taken before the optimizer
    first = params[0].data.copy()
    calls = []
    update = adamw_module.adamw_update
    monkeypatch.setattr(adamw_module, "adamw_update", lambda p, *a: calls.append(p.size) or update(p, *a))
    with kernels.backend("numpy"):
        opt = AdamW(params, lr=1e-2)
        assert len(opt.runs) == 1
        for p in params:
            p.grad[...] = 1.0
        opt.step()
    assert calls == [base.size]
    assert all(p.data is d and p.grad is g for p, (d, g) in zip(params, arrays))
    assert not np.array_equal(arrays[0][0], first)            # the step moved what was taken
