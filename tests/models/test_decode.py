"""Decoding with the KV cache: the buffered cache equals concatenation, the fast path (cache
read in place, one-row products, the head on the last position only) equals the plain one
(full recomputation, the NumPy backend), and greedy tokens equal transformers' on the same
weights."""

from __future__ import annotations

import numpy as np
import pytest

from npgpt import GPT, GPTConfig, kernels
from npgpt.models.gpt2_hf import gpt2_config_to_hf, gpt2_to_hf
from npgpt.nn import KVCache
from tests.helpers import assert_close


def test_the_cache_writes_in_place_and_grows_when_full():
    rng = np.random.default_rng(0)
    chunks = [rng.standard_normal((2, 3, n, 4)) for n in (3, 1, 1, 5)]
    cache = KVCache(capacity=4)
    for i, c in enumerate(chunks):
        k, v = cache.append(c, -c)
        want = np.concatenate(chunks[:i + 1], axis=2)
        np.testing.assert_array_equal(k, want)
        np.testing.assert_array_equal(v, -want)
    assert cache.length == 10 and cache.k_buffer.shape[2] == 16        # room for 4, then 8, then 16
    buffer = cache.k_buffer
    cache.append(chunks[3], chunks[3])
    assert cache.k_buffer is buffer                                   # 15 fit: written in place
    cache.append(chunks[3], chunks[3])
    assert cache.k_buffer.shape[2] == 32 and cache.length == 20
    cache.reorder(np.array([1, 1]))
    np.testing.assert_array_equal(cache.k[0], cache.k[1])


def _model(cfg, std=None):
    model = GPT(cfg, seed=0)
    if std:                    # larger weights: varied greedy tokens, not one repeated id
        rng = np.random.default_rng(1)
        for p in model.parameters():
            if p.data.ndim == 2:
                p.data[...] = rng.standard_normal(p.data.shape) * std
    return model


CFG = GPTConfig(vocab_size=101, block_size=40, n_layer=2, n_head=4, n_embd=32)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_cached_decoding_equals_full_recomputation(backend):
    """The logits of every decoded position, and the greedy tokens, with the cache as generate
    uses it (buffers of block_size, one position per step) and without it."""
    model = _model(CFG, std=0.3)
    with kernels.backend(backend):
        idx = np.random.default_rng(2).integers(0, CFG.vocab_size, (1, 30))
        full, _ = model.forward(idx)
        caches = [KVCache(CFG.block_size) for _ in model.h]
        parts = [model.forward(idx[:, :8], kv_caches=caches)[0]]
        parts += [model.forward(idx[:, t:t + 1], kv_caches=caches)[0] for t in range(8, 30)]
        assert_close("cached logits", np.concatenate(parts, axis=1), full, 1e-5)
        fast = model.generate(idx[0, :8], 30, temperature=0)            # slides past block_size
        plain = model.generate(idx[0, :8], 30, temperature=0, use_cache=False)
    np.testing.assert_array_equal(fast, plain)
    assert len(set(fast[8:].tolist())) > 3


def test_the_fast_path_gives_the_numpy_backend_s_tokens():
    model = _model(CFG, std=0.3)
    prompt = np.arange(5)
    with kernels.backend("numpy"):
        want = model.generate(prompt, 30, temperature=0)
    np.testing.assert_array_equal(model.generate(prompt, 30, temperature=0), want)


def test_greedy_tokens_equal_transformers_on_the_same_weights():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    cfg = GPTConfig(vocab_size=211, block_size=64, n_layer=2, n_head=4, n_embd=64)
    model = _model(cfg, std=0.15)
    hf_cfg = {k: v for k, v in gpt2_config_to_hf(cfg).items() if k != "architectures"}
    hf_cfg.update(bos_token_id=None, eos_token_id=None)     # no early stop: npgpt's has none
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(**hf_cfg)).eval()
    hf.load_state_dict({k: torch.from_numpy(v) for k, v in gpt2_to_hf(model.state_dict()).items()},
                       strict=False)
    prompt = np.random.default_rng(3).integers(0, cfg.vocab_size, 16)
    ids = torch.from_numpy(prompt)[None]
    with torch.inference_mode():
        theirs = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=40, do_sample=False,
                             pad_token_id=0)[0].numpy()
    mine = model.generate(prompt, 40, temperature=0)
    np.testing.assert_array_equal(mine, theirs)
    assert len(set(mine[16:].tolist())) > 5                 # a test of many choices, not one
