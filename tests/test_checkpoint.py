"""npgpt checkpoints: a round trip holds every array and generator state; bad files say why."""

import json
import os

import numpy as np
import pytest

from npgpt import GPT, GPTConfig
from npgpt import checkpoint as ckpt_io
from npgpt.optim import AdamW, SGD
from npgpt.tokenizers import CharTokenizer

CFG = GPTConfig(vocab_size=12, block_size=8, n_layer=2, n_head=2, n_embd=16, dropout=0.1)


def trained(cfg=CFG, steps=3, seed=0):
    """A model and optimizer after a few steps (so m, v and the dropout generators moved)."""
    model = GPT(cfg, seed=seed)
    opt = AdamW(model.parameters(), lr=1e-2)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        x = rng.integers(0, cfg.vocab_size, (2, cfg.block_size))
        model.forward(x, np.roll(x, -1, axis=1))
        opt.zero_grad()
        model.backward()
        opt.step()
    return model, opt


def test_round_trip_restores_weights_optimizer_and_generators(tmp_path):
    model, opt = trained()
    tok = CharTokenizer("abcdefghijkl")
    path = ckpt_io.save(tmp_path / "ckpt.safetensors", model, opt, step=3, tokenizer=tok.to_dict())
    ck = ckpt_io.load(path)
    assert ck.meta["step"] == 3 and ck.meta["tokenizer"] == tok.to_dict()
    assert ck.meta["optimizer"]["type"] == "AdamW"

    clone = ck.build_model()
    opt2 = AdamW(clone.parameters(), lr=1e-2)
    ck.restore(clone, opt2)
    for (name, a), b in zip(model.state_dict().items(), clone.state_dict().values()):
        assert np.array_equal(a, b), name
    assert ckpt_io.rng_states(clone) == ckpt_io.rng_states(model)
    for key, value in opt.state_dict().items():
        assert np.array_equal(np.asarray(value), np.asarray(opt2.state_dict()[key])), key
    # the same state gives the same next step, dropout masks included
    x = np.random.default_rng(9).integers(0, 12, (2, 8))
    for m, o in ((model, opt), (clone, opt2)):
        m.forward(x, x)
        o.zero_grad()
        m.backward()
        o.step()
    assert all(np.array_equal(a, b) for a, b in zip(model.state_dict().values(), clone.state_dict().values()))


def test_save_is_atomic_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    model, opt = trained(steps=1)
    path = ckpt_io.save(tmp_path / "ckpt.safetensors", model, opt, step=1)
    before = path.read_bytes()

    def crash(*args):
        raise KeyboardInterrupt            # Ctrl-C in the middle of the rename
    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        ckpt_io.save(path, model, opt, step=2)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.safetensors"]


def test_truncated_file_is_named(tmp_path):
    model, _ = trained(steps=0)
    path = ckpt_io.save(tmp_path / "ckpt.safetensors", model)
    data = path.read_bytes()
    for cut in (len(data) // 2, 20, 4):
        bad = tmp_path / f"cut{cut}.safetensors"
        bad.write_bytes(data[:cut])
        with pytest.raises(ValueError, match=rf"cut{cut}\.safetensors.*(truncated|not a readable)"):
            ckpt_io.load(bad)


def test_foreign_files_are_named(tmp_path):
    from safetensors.numpy import save_file

    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint at all")
    with pytest.raises(ValueError, match="notes.txt"):
        ckpt_io.load(text)
    hf = tmp_path / "model.safetensors"
    save_file({"wte.weight": np.zeros((2, 2), np.float32)}, str(hf), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"model\.safetensors.*format 'pt'.*from_pretrained"):
        ckpt_io.load(hf)
    with pytest.raises(FileNotFoundError, match="missing"):
        ckpt_io.load(tmp_path / "missing.safetensors")


def test_newer_format_version_is_refused(tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / "future.safetensors"
    save_file({"model.x": np.zeros(1, np.float32)}, str(path),
              metadata={"format": ckpt_io.FORMAT, "version": "99", "meta": "{}"})
    with pytest.raises(ValueError, match="version '99'"):
        ckpt_io.load(path)


def test_config_mismatch_names_the_fields_and_writes_nothing(tmp_path):
    model, opt = trained()
    path = ckpt_io.save(tmp_path / "ckpt.safetensors", model, opt, step=3)
    other = GPT(CFG.replace(n_embd=32, activation="relu"), seed=5)
    before = other.state_dict()
    with pytest.raises(ValueError, match=r"ckpt\.safetensors.*n_embd=16 \(the model has 32\).*activation"):
        ckpt_io.load(path).restore(other)
    assert all(np.array_equal(before[k], v) for k, v in other.state_dict().items())


def test_dropout_and_dtype_may_differ(tmp_path):
    model, _ = trained()
    path = ckpt_io.save(tmp_path / "ckpt.safetensors", model)
    wider = GPT(CFG.replace(dropout=0.0, dtype="float64"))
    ckpt_io.load(path).restore(wider)
    assert wider.wte.weight.dtype == np.float64
    assert np.allclose(wider.wte.weight.data, model.wte.weight.data)


def test_optimizer_type_and_absence_are_errors(tmp_path):
    model, opt = trained()
    path = ckpt_io.save(tmp_path / "a.safetensors", model, opt)
    with pytest.raises(ValueError, match="AdamW optimizer: expected SGD"):
        ckpt_io.load(path).restore(model, SGD(model.parameters(), lr=0.1))
    bare = ckpt_io.save(tmp_path / "b.safetensors", model)
    with pytest.raises(ValueError, match="holds no optimizer state"):
        ckpt_io.load(bare).restore(model, opt)


def test_meta_must_be_json_and_not_reserved(tmp_path):
    model, _ = trained(steps=0)
    with pytest.raises(ValueError, match="reserved"):
        ckpt_io.save(tmp_path / "x.safetensors", model, config={})
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        ckpt_io.save(tmp_path / "x.safetensors", model, note=object())
    assert not (tmp_path / "x.safetensors").exists()


def test_header_is_plain_json(tmp_path):
    """The metadata can be read without npgpt (safetensors' header is JSON)."""
    model, _ = trained(steps=0)
    path = ckpt_io.save(tmp_path / "ckpt.safetensors", model, step=0)
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    assert header["__metadata__"]["format"] == "npgpt-checkpoint"
    assert json.loads(header["__metadata__"]["meta"])["config"]["n_embd"] == 16
    assert "model.h.1.mlp.c_proj.weight" in header


def test_a_bad_optimizer_state_leaves_the_model_untouched(tmp_path):
    model, opt = trained()
    path = ckpt_io.save(tmp_path / "ckpt.safetensors", model, opt)
    fresh = GPT(CFG, seed=4)
    fewer = AdamW(fresh.parameters()[:-2], lr=1e-2)      # another layout: its load must fail
    before = fresh.state_dict()
    with pytest.raises(ValueError, match="ckpt.safetensors.*group_sizes"):
        ckpt_io.load(path).restore(fresh, fewer)
    assert all(np.array_equal(before[k], v) for k, v in fresh.state_dict().items())
