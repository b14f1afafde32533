"""The GPT end to end: gradients, learning, generation, configuration variants."""

import numpy as np
import pytest

from npgpt import GPT, GPTConfig
from npgpt.gradcheck import numerical_gradient, rel_error, sample_index
from npgpt.models.gpt import sample_next

VARIANTS = {
    "gpt2": {},
    "untied, no bias, relu, sinusoidal": dict(tie_weights=False, bias=False, activation="relu",
                                              pos_encoding="sinusoidal"),
    "gelu (erf)": dict(activation="gelu"),
}


def batch(cfg, B=2, T=None, seed=0):
    rng = np.random.default_rng(seed)
    T = T or cfg.block_size
    return rng.integers(0, cfg.vocab_size, (B, T)), rng.integers(0, cfg.vocab_size, (B, T))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_whole_model_gradient_equals_numerical_gradient(variant):
    cfg = GPTConfig.preset("gradcheck", **VARIANTS[variant])
    model = GPT(cfg, seed=1)
    rng = np.random.default_rng(2)
    for p in model.parameters():                 # larger than GPT-2's init, so nothing is ~0
        p.data[...] = rng.standard_normal(p.shape) * 0.3 + (1.0 if p.data.ndim == 1 and (p.data == 1).all() else 0.0)
    idx, targets = batch(cfg, T=6)
    targets[0, 2] = -100
    model.forward(idx, targets)
    model.zero_grad()
    model.backward()
    f = lambda: np.array(model.forward(idx, targets)[1])   # noqa: E731
    for name, p in model.named_parameters():
        index = sample_index(p.shape, 40, rng)
        num = numerical_gradient(f, p.data, np.array(1.0), index=index)
        pick = tuple(np.array(i) for i in zip(*index)) if index else ...
        err = rel_error(p.grad[pick], num[pick])
        assert err < 1e-7, f"{name}: relative error {err:.2e}"


def test_backward_with_an_upstream_gradient_equals_numerical():
    cfg = GPTConfig.preset("gradcheck")
    model = GPT(cfg, seed=3)
    idx, _ = batch(cfg, T=5)
    logits, loss = model.forward(idx)
    assert loss is None
    dlogits = np.random.default_rng(4).standard_normal(logits.shape)
    model.zero_grad()
    model.backward(dlogits)
    W = model.wte.weight
    num = numerical_gradient(lambda: model.forward(idx)[0], W.data, dlogits)
    assert rel_error(W.grad, num) < 1e-7


def test_a_tiny_model_overfits_one_batch():
    from npgpt.optim import AdamW
    cfg = GPTConfig(vocab_size=13, block_size=16, n_layer=2, n_head=2, n_embd=32)
    model = GPT(cfg, seed=0)
    idx, targets = batch(cfg, B=4, seed=5)
    opt = AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    first = None
    for _ in range(300):
        _, loss = model.forward(idx, targets)
        first = first or loss
        opt.zero_grad()
        model.backward()
        opt.step()
    assert first > 2.0 and loss < 0.05, (first, loss)


def test_same_seed_same_model_and_dropout():
    cfg = GPTConfig.preset("gradcheck", dropout=0.2)
    a, b = GPT(cfg, seed=7), GPT(cfg, seed=7)
    idx, targets = batch(cfg)
    assert a.forward(idx, targets)[1] == b.forward(idx, targets)[1]
    assert GPT(cfg, seed=8).forward(idx, targets)[1] != a.forward(idx, targets)[1]


def test_gpt2_initialisation_scales_the_residual_projections():
    cfg = GPTConfig(vocab_size=100, block_size=32, n_layer=8, n_head=4, n_embd=256)
    model = GPT(cfg, seed=0)
    assert abs(model.h[0].attn.c_attn.weight.data.std() - 0.02) < 1e-3
    expected = 0.02 / np.sqrt(2 * cfg.n_layer)
    for proj in (model.h[3].attn.c_proj, model.h[3].mlp.c_proj):
        assert abs(proj.weight.data.std() - expected) < 0.1 * expected
    assert (model.h[0].attn.c_attn.bias.data == 0).all()
    assert model.lm_head.weight is model.wte.weight          # tied: one table, listed once
    assert "lm_head.weight" not in dict(model.named_parameters())


def test_parameter_names_are_gpt2s():
    names = [n for n, _ in GPT(GPTConfig.preset("gradcheck"), seed=0).named_parameters()]
    assert names[:3] == ["wte.weight", "wpe.weight", "h.0.ln_1.weight"]
    assert names[-2:] == ["ln_f.weight", "ln_f.bias"]


def test_kv_cache_logits_equal_full_recomputation():
    cfg = GPTConfig.preset("gradcheck", block_size=12)
    model = GPT(cfg, seed=0)
    idx, _ = batch(cfg, T=10)
    full, _ = model.forward(idx)
    from npgpt.nn import KVCache
    caches = [KVCache() for _ in model.h]
    step, _ = model.forward(idx[:, :4], kv_caches=caches)
    parts = [step]
    for t in range(4, 10):
        step, _ = model.forward(idx[:, t:t + 1], kv_caches=caches)
        parts.append(step)
    np.testing.assert_allclose(np.concatenate(parts, axis=1), full, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kw", [dict(temperature=0), dict(temperature=0.8, top_k=3),
                                dict(temperature=1.0, top_p=0.7)])
def test_generation_with_cache_equals_without(kw):
    cfg = GPTConfig.preset("gradcheck", block_size=8)
    model = GPT(cfg, seed=0)
    prompt = np.array([[1, 2, 3], [4, 5, 6]])
    a = model.generate(prompt, 20, use_cache=True, seed=3, **kw)     # past block_size: the window slides
    b = model.generate(prompt, 20, use_cache=False, seed=3, **kw)
    assert a.shape == (2, 23)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a[:, :3], prompt)


def test_generation_without_window_stops_at_block_size_and_rejects_long_prompts():
    cfg = GPTConfig.preset("gradcheck", block_size=8)
    model = GPT(cfg, seed=0)
    out = model.generate(np.array([1, 2, 3]), 20, window=False)
    assert out.shape == (8,)
    with pytest.raises(ValueError, match=r"prompt_ids has 9 tokens: expected at most block_size=8"):
        model.generate(np.arange(9) % cfg.vocab_size, 1, window=False)


def test_generate_restores_training_mode_and_rejects_bad_arguments():
    model = GPT(GPTConfig.preset("gradcheck", dropout=0.1), seed=0)
    model.generate(np.array([1]), 2)
    assert model.training and all(m.training for m in model.modules())
    for kw, msg in [(dict(temperature=-1), "temperature=-1"), (dict(top_k=0), "top_k=0"),
                    (dict(top_p=1.5), "top_p=1.5"), (dict(max_new_tokens=-2), "max_new_tokens=-2")]:
        kw = {"max_new_tokens": 3, **kw}
        with pytest.raises(ValueError, match=msg):
            model.generate(np.array([1]), **kw)
    with pytest.raises(ValueError, match=r"prompt_ids contains token id 99"):
        model.generate(np.array([99]), 3)


def test_sampling_respects_top_k_and_top_p():
    rng = np.random.default_rng(0)
    logits = np.log(np.array([[0.5, 0.3, 0.1, 0.06, 0.04]] * 2000))
    assert set(sample_next(logits, 1.0, 2, None, rng)) == {0, 1}
    assert set(sample_next(logits, 1.0, None, 0.75, rng)) == {0, 1}    # 0.5 < 0.75 <= 0.8
    assert set(sample_next(logits, 1.0, None, 0.5, rng)) == {0}
    draws = sample_next(logits, 1.0, None, None, rng)
    assert abs((draws == 0).mean() - 0.5) < 0.05 and abs((draws == 4).mean() - 0.04) < 0.02
    np.testing.assert_array_equal(sample_next(logits[:3], 0, None, None, rng), [0, 0, 0])


def test_forward_rejects_bad_input():
    cfg = GPTConfig.preset("gradcheck")
    model = GPT(cfg, seed=0)
    with pytest.raises(ValueError, match=r"idx has 9 positions .* block_size=8"):
        model.forward(np.zeros((1, 9), dtype=np.int64))
    with pytest.raises(ValueError, match=r"idx has shape \(8,\): expected 2 dimensions"):
        model.forward(np.zeros(8, dtype=np.int64))
    with pytest.raises(ValueError, match=r"idx contains token id 11"):
        model.forward(np.full((1, 4), 11))
    with pytest.raises(ValueError, match=r"targets has shape \(1, 3\): expected \(1, 4\)"):
        model.forward(np.zeros((1, 4), dtype=np.int64), np.zeros((1, 3), dtype=np.int64))
    with pytest.raises(RuntimeError, match=r"needs a forward with targets"):
        GPT(cfg, seed=0).backward()
    with pytest.raises(TypeError, match=r"config is a dict: expected a GPTConfig"):
        GPT({"n_layer": 2})


def test_presets_have_one_name_each():
    from npgpt.config import GPT_PRESETS
    settings = [tuple(sorted(v.items())) for v in GPT_PRESETS.values()]
    assert len(set(settings)) == len(settings)


def test_backward_of_a_hidden_state_gradient_equals_numerical():
    """backward(dh=...): the entry a classifier uses, the gradient of forward_hidden's output,
    alone or with the head's (the hidden states feed both)."""
    cfg = GPTConfig.preset("gradcheck")
    model = GPT(cfg, seed=5)
    idx, _ = batch(cfg, T=5)
    rng = np.random.default_rng(6)
    h = model.forward_hidden(idx)
    dh = rng.standard_normal(h.shape)
    dlogits = rng.standard_normal(h.shape[:2] + (cfg.vocab_size,))
    W = model.h[0].attn.c_attn.weight
    for with_head in (False, True):
        model.forward(idx)
        model.zero_grad()
        model.backward(dlogits if with_head else None, dh=dh)
        f = (lambda: np.concatenate([model.forward_hidden(idx).ravel(),          # noqa: E731
                                     model.forward(idx)[0].ravel()])) if with_head else \
            (lambda: model.forward_hidden(idx))
        up = np.concatenate([dh.ravel(), dlogits.ravel()]) if with_head else dh
        num = numerical_gradient(f, W.data, up)
        assert rel_error(W.grad, num) < 1e-7, with_head
