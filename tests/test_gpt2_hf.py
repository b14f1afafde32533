"""GPT-2 from Hugging Face: the same logits, loss and every gradient as transformers' PyTorch model.

A GPT2LMHeadModel is initialised randomly offline from a small GPT2Config, saved with
save_pretrained, and loaded with GPT.from_pretrained. HF's loss with labels=idx shifts inside
the model: logits[:, :-1] are scored against idx[:, 1:], averaged over B * (T - 1) positions.
npgpt's forward(idx[:, :-1], idx[:, 1:]) is that same function (causal attention: the last token
changes no earlier position), so the losses and all gradients must agree, name by name.
"""

import json

import numpy as np
import pytest

from npgpt import GPT
from npgpt import checkpoint as ckpt_io
from tests.helpers import assert_close

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TOL = {"float64": 1e-9, "float32": 1e-4}    # float32: a few ulps times the depth of the model
HF_CONFIG = dict(n_layer=2, n_head=2, n_embd=16, vocab_size=50, n_positions=32, resid_pdrop=0.0,
                 embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0, loss_type="ForCausalLM")


def hf_model(seed=0, **overrides):
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(**{**HF_CONFIG, **overrides})
    cfg._attn_implementation = "eager"             # the plain softmax(q k^T / sqrt(d)) v
    model = transformers.GPT2LMHeadModel(cfg)
    with torch.no_grad():                      # larger than the init, so nothing is near zero
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    model = hf_model()
    folder = tmp_path_factory.mktemp("gpt2")
    model.save_pretrained(folder)
    return model, folder


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_logits_loss_and_every_gradient_equal_transformers(hf_folder, dtype):
    hf, folder = hf_folder
    ours = GPT.from_pretrained(folder, dtype=dtype)
    hf = hf.to(getattr(torch, dtype))
    idx = np.random.default_rng(1).integers(0, 50, (3, 12))

    hf.zero_grad()
    out = hf(torch.from_numpy(idx), labels=torch.from_numpy(idx))
    hf_loss = out.loss
    if dtype == "float64":
        # HF's loss casts the logits to float32 (logits.float()); in float64 take the same
        # shifted mean cross-entropy in float64: logits[:, :-1] against idx[:, 1:]
        assert_close("HF's own loss", hf_loss.item(), torch.nn.functional.cross_entropy(
            out.logits[:, :-1].reshape(-1, 50), torch.from_numpy(idx[:, 1:]).reshape(-1)).item(), 1e-6)
        hf_loss = torch.nn.functional.cross_entropy(out.logits[:, :-1].reshape(-1, 50),
                                                    torch.from_numpy(idx[:, 1:]).reshape(-1))
    hf_loss.backward()

    logits, loss = ours.forward(idx[:, :-1], idx[:, 1:])
    ours.zero_grad()
    ours.backward()

    tol = TOL[dtype]
    assert_close("logits", logits, out.logits[:, :-1].detach().numpy(), tol)
    assert_close("loss", loss, hf_loss.item(), tol)
    hf_grads = {n: p.grad.numpy() for n, p in hf.named_parameters()}
    our_grads = ckpt_io.gpt2_to_hf({n: p.grad for n, p in ours.named_parameters()})
    assert set(our_grads) == set(hf_grads)
    for name, g in hf_grads.items():
        assert_close(f"grad {name}", our_grads[name], g, tol)


def test_published_layout_loads_the_same_model(hf_folder, tmp_path):
    """The layout of the published gpt2 checkpoints: no "transformer." prefix, the causal-mask
    buffers attn.bias / attn.masked_bias, no lm_head (it is tied)."""
    from safetensors.numpy import save_file

    hf, folder = hf_folder
    arrays = {}
    for name, t in hf.state_dict().items():
        if name.startswith("transformer."):
            arrays[name[len("transformer."):]] = t.detach().float().numpy()
    for i in range(2):
        arrays[f"h.{i}.attn.bias"] = np.tril(np.ones((32, 32), np.float32))[None, None]
        arrays[f"h.{i}.attn.masked_bias"] = np.array(-1e4, np.float32)
    save_file(arrays, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())

    a, b = GPT.from_pretrained(folder), GPT.from_pretrained(tmp_path)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert np.array_equal(x, y), name


def test_untied_head_and_save_gpt2_round_trip_through_transformers(tmp_path):
    """An untied model keeps lm_head.weight; save_gpt2 writes a folder transformers reads back."""
    hf = hf_model(seed=3, tie_word_embeddings=False)
    hf.save_pretrained(tmp_path / "hf")
    ours = GPT.from_pretrained(tmp_path / "hf", dtype="float64")
    assert not ours.config.tie_weights and "lm_head.weight" in dict(ours.named_parameters())
    ckpt_io.save_gpt2(ours, tmp_path / "again")
    back = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "again", attn_implementation="eager",
                                                        dtype=torch.float64).eval()
    idx = np.random.default_rng(2).integers(0, 50, (2, 9))
    with torch.no_grad():
        expected = back(torch.from_numpy(idx)).logits.numpy()
    assert_close("logits after save_gpt2", ours.forward(idx)[0], expected, 1e-9)


def test_name_maps_are_inverse():
    rng = np.random.default_rng(0)
    names = {n: rng.standard_normal((2, 3)) for n in ["wte.weight", "h.0.attn.c_attn.bias", "ln_f.weight", "lm_head.weight"]}
    hf = ckpt_io.gpt2_to_hf(names)
    assert set(hf) == {"transformer.wte.weight", "transformer.h.0.attn.c_attn.bias",
                       "transformer.ln_f.weight", "lm_head.weight"}
    assert hf["lm_head.weight"].shape == (3, 2)          # torch nn.Linear: (out, in)
    back = ckpt_io.gpt2_from_hf(hf)
    assert set(back) == set(names) and all(np.array_equal(back[k], v) for k, v in names.items())
    assert ckpt_io.gpt2_from_hf({"h.3.attn.bias": 0, "h.3.attn.masked_bias": 0, "wpe.weight": 1}) == {"wpe.weight": 1}


# -- bad folders ----------------------------------------------------------------------------

def _folder_with(tmp_path, hf_folder, mutate_arrays=None, mutate_config=None):
    from safetensors.numpy import load_file, save_file

    _, folder = hf_folder
    arrays = load_file(str(folder / "model.safetensors"))
    config = json.loads((folder / "config.json").read_text())
    if mutate_arrays:
        mutate_arrays(arrays)
    if mutate_config:
        mutate_config(config)
    save_file(arrays, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


def test_missing_weight_is_named_with_its_shape(tmp_path, hf_folder):
    folder = _folder_with(tmp_path, hf_folder, lambda a: a.pop("transformer.h.1.mlp.c_fc.weight"))
    with pytest.raises(ValueError, match=r"lacks the weight 'transformer\.h\.1\.mlp\.c_fc\.weight'.*\(16, 64\)"):
        GPT.from_pretrained(folder)


def test_misshaped_weight_is_named_with_both_shapes(tmp_path, hf_folder):
    def transpose(a):
        a["transformer.h.0.attn.c_attn.weight"] = np.ascontiguousarray(a["transformer.h.0.attn.c_attn.weight"].T)
    folder = _folder_with(tmp_path, hf_folder, transpose)
    with pytest.raises(ValueError, match=r"'transformer\.h\.0\.attn\.c_attn\.weight' has shape \(48, 16\): expected \(16, 48\)"):
        GPT.from_pretrained(folder)


def test_missing_config_and_missing_weights(tmp_path, hf_folder):
    folder = _folder_with(tmp_path, hf_folder)
    (folder / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        GPT.from_pretrained(folder)
    with pytest.raises(FileNotFoundError, match="not a directory"):
        GPT.from_pretrained(tmp_path / "nowhere")


def test_a_folder_that_is_not_gpt2(tmp_path, hf_folder):
    folder = _folder_with(tmp_path, hf_folder, mutate_config=lambda c: c.update(model_type="llama"))
    with pytest.raises(ValueError, match="model_type='llama': expected 'gpt2'"):
        GPT.from_pretrained(folder)
    folder = _folder_with(tmp_path, hf_folder, mutate_config=lambda c: c.update(scale_attn_weights=False))
    with pytest.raises(ValueError, match="scale_attn_weights"):
        GPT.from_pretrained(folder)


def test_config_fields_map(hf_folder):
    _, folder = hf_folder
    cfg = ckpt_io.gpt2_config_from_hf(json.loads((folder / "config.json").read_text()))
    assert (cfg.vocab_size, cfg.block_size, cfg.n_layer, cfg.n_head, cfg.n_embd) == (50, 32, 2, 2, 16)
    assert cfg.activation == "gelu_tanh" and cfg.tie_weights and cfg.layer_norm_eps == 1e-5
