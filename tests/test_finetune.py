"""Fine-tuning: freezing, LoRA, the classification head, its data and evaluation.

Every gradient is checked twice in float64: against central differences and against PyTorch
autograd on the same weights (transformers' GPT2Model, whose parameter names are npgpt's and
whose Conv1D weights are (in, out) like npgpt's Linear, with LoRA wrappers around its Conv1Ds).
"""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from npgpt import GPT, GPTConfig
from npgpt.finetune import (GPTClassifier, LoRALinear, add_lora, classification_batches,
                            classification_report, encode_texts, evaluate, format_report, freeze,
                            freeze_blocks, frozen_below, last_token_index, load_classification_file,
                            load_lora, load_lora_state_dict, lora_settings, lora_state_dict,
                            merge_lora, next_token_targets, save_lora, shuffled_words_task, unfreeze)
from npgpt.gradcheck import TOLERANCES, check_module, numerical_gradient, rel_error, sample_index
from npgpt.nn import Linear
from npgpt.optim import AdamW
from tests.helpers import assert_close, assert_errors_below

TORCH_TOL = 1e-9          # float64, the same formulas in another order: ~1e-13 in practice
SAMPLES = 12              # coordinates per tensor for the numerical gradient of a whole model


def tiny(seed=0, **kw):
    """The float64 "gradcheck" GPT (V=11, T=8, 2 blocks, C=8), with weights drawn large enough
    (std 0.3, LayerNorm gains near 1) that no gradient is ~0 and the attention is not uniform."""
    return GPT(GPTConfig.preset("gradcheck", **kw), seed=seed)


def randomize(model, seed):
    rng = np.random.default_rng(seed)
    for name, p in model.named_parameters():
        gain = name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight"))
        p.data[...] = rng.standard_normal(p.shape) * 0.3 + (1.0 if gain else 0.0)
    return model


def padded_batch(seed=0, B=3, T=7, V=11):
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, V, (B, T))
    pad = np.zeros((B, T), dtype=bool)
    pad[1, 4:] = True                      # row 1 has 4 real tokens, row 2 just one
    pad[2, 1:] = True
    return idx, pad


# ---------------------------------------------------------------------------------------------
# The PyTorch twin: GPT2Model with npgpt's weights, LoRA wrappers where npgpt has adapters
# ---------------------------------------------------------------------------------------------


class TorchLoRA(torch.nn.Module):
    """y = base(x) + scale * (x @ lora_A) @ lora_B, around a transformers Conv1D."""

    def __init__(self, base, layer: LoRALinear):
        super().__init__()
        self.base, self.scale = base, layer.scale
        self.lora_A = torch.nn.Parameter(torch.tensor(layer.lora_A.data.copy()))
        self.lora_B = torch.nn.Parameter(torch.tensor(layer.lora_B.data.copy()))

    def forward(self, x):
        return self.base(x) + self.scale * (x @ self.lora_A) @ self.lora_B


def torch_gpt(model: GPT):
    """(GPT2Model holding model's weights in float64, {npgpt name: torch parameter})."""
    from transformers import GPT2Config, GPT2Model

    cfg = model.config
    hf_cfg = GPT2Config(vocab_size=cfg.vocab_size, n_positions=cfg.block_size, n_embd=cfg.n_embd,
                        n_layer=cfg.n_layer, n_head=cfg.n_head, activation_function="gelu_new",
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0,
                        eos_token_id=0, layer_norm_epsilon=cfg.layer_norm_eps)
    hf_cfg._attn_implementation = "eager"
    hf = GPT2Model(hf_cfg).double()
    lora = {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}
    for name, layer in lora.items():
        parent, attr = name.rsplit(".", 1)
        setattr(hf.get_submodule(parent), attr, TorchLoRA(hf.get_submodule(name), layer))
    tparams = dict(hf.named_parameters())

    def tname(name):
        module, leaf = name.rsplit(".", 1)
        return f"{module}.base.{leaf}" if module in lora and leaf in ("weight", "bias") else name

    params = {name: tparams[tname(name)] for name, _ in model.named_parameters()}
    with torch.no_grad():
        for name, p in model.named_parameters():
            params[name].copy_(torch.from_numpy(p.data.copy()))
    assert len(params) == len(tparams), "every torch parameter has an npgpt twin"
    return hf, params


def torch_classifier_loss(clf: GPTClassifier, idx, labels, pad):
    """(class logits, loss, {npgpt name: torch parameter}) of the same classifier in torch."""
    hf, params = torch_gpt(clf.gpt)
    params = {f"gpt.{k}": v for k, v in params.items()}
    W = torch.tensor(clf.head.weight.data.copy(), requires_grad=True)
    b = torch.tensor(clf.head.bias.data.copy(), requires_grad=True)
    params.update({"head.weight": W, "head.bias": b})
    h = hf(torch.from_numpy(idx)).last_hidden_state                      # after ln_f
    last = torch.from_numpy(last_token_index(pad, idx.shape))
    logits = h[torch.arange(len(idx)), last] @ W + b
    loss = F.cross_entropy(logits, torch.from_numpy(labels))
    if clf.aux_lm_weight:
        lm_logits = h @ hf.wte.weight.T
        targets = torch.from_numpy(next_token_targets(idx, pad))
        loss = loss + clf.aux_lm_weight * F.cross_entropy(lm_logits.reshape(-1, lm_logits.shape[-1]),
                                                          targets.reshape(-1), ignore_index=-100)
    return logits, loss, params


def check_against_numerical_and_torch(module, f, torch_loss):
    """module's .grad (after backward of the scalar f()) against central differences of f on
    SAMPLES coordinates of every trainable parameter, and against torch autograd by name. Frozen
    parameters must have received nothing."""
    rng = np.random.default_rng(11)
    t_out, t_loss, t_params = torch_loss()
    t_loss.backward()
    assert_close("loss", f(), t_loss.detach().numpy(), TORCH_TOL)
    errors, checked = {}, 0
    for name, p in module.named_parameters():
        if not p.requires_grad:
            assert not p.grad.any(), f"{name} is frozen but received a gradient"
            continue
        assert_close(f"d({name}) vs torch", p.grad, t_params[name].grad.numpy(), TORCH_TOL)
        index = sample_index(p.shape, SAMPLES, rng)
        num = numerical_gradient(lambda: np.array(f()), p.data, np.array(1.0), index=index)
        pick = tuple(np.array(i) for i in zip(*index)) if index else ...
        errors[name] = rel_error(p.grad[pick], num[pick])
        checked += 1
    assert_errors_below(errors, TOLERANCES["smooth"])
    return checked


# ---------------------------------------------------------------------------------------------
# Gradients
# ---------------------------------------------------------------------------------------------

CLASSIFIER_CASES = {
    "head, padded": dict(aux=0.0, lora=False),
    "head + auxiliary LM loss, padded": dict(aux=0.5, lora=False),
    "LoRA GPT + head + auxiliary LM loss, padded": dict(aux=0.7, lora=True),
}


@pytest.mark.parametrize("case", list(CLASSIFIER_CASES))
def test_classifier_gradients_equal_numerical_and_pytorch(case):
    kw = CLASSIFIER_CASES[case]
    model = tiny(seed=1)
    clf = GPTClassifier(model, n_classes=3, aux_lm_weight=kw["aux"], seed=2)
    if kw["lora"]:
        add_lora(clf, rank=2, alpha=3.0)
    randomize(clf, seed=3)                            # lora_B nonzero, so dA is not 0
    idx, pad = padded_batch()
    labels = np.array([2, 0, 1])
    clf.forward(idx, labels, pad)
    clf.zero_grad()
    clf.backward()
    f = lambda: clf.forward(idx, labels, pad)[1]      # noqa: E731
    checked = check_against_numerical_and_torch(clf, f, lambda: torch_classifier_loss(clf, idx, labels, pad))
    expected = 2 + (16 if kw["lora"] else len(clf.parameters()) - 2)  # head, adapters or everything
    assert checked == expected


def test_lora_gpt_language_model_gradients_equal_numerical_and_pytorch():
    model = tiny(seed=4)
    add_lora(model, rank=3, alpha=5.0, targets=("attn", "mlp"))
    randomize(model, seed=5)
    rng = np.random.default_rng(6)
    idx, targets = rng.integers(0, 11, (2, 8)), rng.integers(0, 11, (2, 8))
    model.forward(idx, targets)
    model.zero_grad()
    model.backward()

    def torch_loss():
        hf, params = torch_gpt(model)
        h = hf(torch.from_numpy(idx)).last_hidden_state
        logits = h @ hf.wte.weight.T
        return logits, F.cross_entropy(logits.reshape(-1, 11), torch.from_numpy(targets).reshape(-1)), params

    checked = check_against_numerical_and_torch(model, lambda: model.forward(idx, targets)[1], torch_loss)
    assert checked == 2 * 4 * 2                       # 2 blocks x 4 Linears x (A, B)


@pytest.mark.parametrize("base_frozen", [True, False])
def test_lora_linear_alone_equals_numerical_and_pytorch(base_frozen):
    rng = np.random.default_rng(7)
    base = Linear(7, 5, dtype="float64", rng=rng, std=0.5)
    base.bias.data[...] = rng.standard_normal(5)
    layer = LoRALinear(base, rank=3, alpha=6.0, rng=rng)
    layer.lora_B.data[...] = rng.standard_normal((3, 5))
    if not base_frozen:
        unfreeze(layer)
    x = rng.standard_normal((2, 4, 7))
    errors = check_module(layer, [x], seed=8)
    assert set(errors) == {"input0", "lora_A", "lora_B"} | (set() if base_frozen else {"weight", "bias"})
    assert_errors_below(errors, TOLERANCES["smooth"])

    # torch, on the same weights and a random upstream gradient
    dout = np.random.default_rng(9).standard_normal((2, 4, 5))
    layer.zero_grad()
    y = layer.forward(x)
    dx = layer.backward(dout)
    t = {name: torch.tensor(p.data.copy(), requires_grad=True) for name, p in layer.named_parameters()}
    tx = torch.tensor(x, requires_grad=True)
    ty = tx @ t["weight"] + t["bias"] + 2.0 * (tx @ t["lora_A"]) @ t["lora_B"]      # alpha / r = 2
    ty.backward(torch.from_numpy(dout))
    assert_close("y", y, ty.detach().numpy(), TORCH_TOL)
    assert_close("dx", dx, tx.grad.numpy(), TORCH_TOL)
    for name, p in layer.named_parameters():
        if p.requires_grad:
            assert_close(f"d({name})", p.grad, t[name].grad.numpy(), TORCH_TOL)
        else:
            assert not p.grad.any()


def test_lora_dropout_gradient_equals_numerical():
    from npgpt.gradcheck import _Reseeded      # resets the masks' Generator before each forward
    rng = np.random.default_rng(10)
    layer = LoRALinear(Linear(6, 4, dtype="float64", rng=rng, std=0.5), rank=2, alpha=2.0,
                       dropout=0.4, rng=rng)
    layer.lora_B.data[...] = rng.standard_normal((2, 4))
    assert_errors_below(check_module(_Reseeded(layer), [rng.standard_normal((3, 6))]), TOLERANCES["smooth"])
    layer.eval()                               # at eval the adapter sees x itself
    x = rng.standard_normal((3, 6))
    expected = x @ layer.weight.data + layer.bias.data + (x @ layer.lora_A.data) @ layer.lora_B.data
    np.testing.assert_allclose(layer.forward(x), expected, rtol=1e-13)


def test_wrapped_model_starts_identical_and_merge_gives_the_same_logits():
    model = tiny(seed=12)
    idx = np.random.default_rng(13).integers(0, 11, (2, 8))
    before, _ = model.forward(idx)
    names = [n for n, _ in model.named_parameters()]
    add_lora(model, rank=4, alpha=8.0)
    np.testing.assert_array_equal(model.forward(idx)[0], before)         # B = 0: exactly the same
    rng = np.random.default_rng(14)
    for name, p in model.named_parameters():
        if name.endswith("lora_B"):
            p.data[...] = rng.standard_normal(p.shape) * 0.5             # a real update
    unmerged, _ = model.forward(idx)
    assert rel_error(unmerged, before) > 1e-2
    assert merge_lora(model) == 8                                       # a function: nothing on
    merged, _ = model.forward(idx)                                      # the instance
    assert_close("merged vs unmerged logits", merged, unmerged, 1e-12)
    assert [n for n, _ in model.named_parameters()] == names             # plain Linears, same order
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    assert not hasattr(model, "merge_lora")
    with pytest.raises(ValueError, match="has no LoRA adapters"):
        merge_lora(model)


# ---------------------------------------------------------------------------------------------
# Freezing
# ---------------------------------------------------------------------------------------------


def test_freeze_by_prefix_and_blocks():
    model = tiny()
    total = model.num_parameters()
    V, T, C = 11, 8, 8
    block = 2 * C + (C * 3 * C + 3 * C) + (C * C + C) + 2 * C + (C * 4 * C + 4 * C) + (4 * C * C + C)
    assert total == V * C + T * C + 2 * block + 2 * C
    assert freeze(model, "wte", "wpe", "h.0") == total - V * C - T * C - block
    assert not model.h[0].mlp.c_fc.weight.requires_grad and model.h[1].mlp.c_fc.weight.requires_grad
    assert unfreeze(model, "h.0.attn") == total - V * C - T * C - block + (C * 3 * C + 3 * C + C * C + C)
    assert unfreeze(model) == total
    assert freeze_blocks(model, 0, 2) == V * C + T * C + 2 * C
    assert freeze(model) == 0
    unfreeze(model)
    clf = GPTClassifier(model, n_classes=4)                         # head: (C, 4) and (4,)
    assert freeze_blocks(clf, 1, 2) == total + C * 4 + 4 - block
    assert freeze(clf, "gpt") == C * 4 + 4


def test_unknown_prefix_and_bad_block_range_are_errors():
    model = tiny()
    with pytest.raises(ValueError, match=r"prefix 'h\.7' matches no parameter.*'h\.0', 'h\.1'"):
        freeze(model, "wte", "h.7")
    assert all(p.requires_grad for p in model.parameters())              # nothing half-way
    with pytest.raises(ValueError, match=r"prefix 'h\.1\.at' matches no parameter"):
        freeze(model, "h.1.at")                                          # whole name parts only
    with pytest.raises(ValueError, match=r"start=1, stop=3.*n_layer=2"):
        freeze_blocks(model, 1, 3)


@pytest.mark.parametrize("how", ["freeze", "lora"])
def test_frozen_parameters_are_bit_for_bit_unchanged_after_adamw_steps(how):
    model = tiny(seed=15, dtype="float32")
    clf = GPTClassifier(model, n_classes=2, aux_lm_weight=0.5)
    if how == "freeze":
        freeze(model, "wte", "wpe", "h.0")
    else:
        add_lora(clf, rank=2)
    before = {name: p.data.copy() for name, p in clf.named_parameters()}
    opt = AdamW(clf.parameters(), lr=1e-2, weight_decay=0.1)             # decay would move them
    idx, pad = padded_batch(seed=16, B=4, T=8)
    pad[3] = False
    labels = np.array([0, 1, 1, 0])
    for _ in range(4):
        clf.forward(idx, labels, pad)
        opt.zero_grad()
        clf.backward()
        opt.step()
    for name, p in clf.named_parameters():
        if p.requires_grad:
            assert not np.array_equal(p.data, before[name]), f"{name} is trainable and did not move"
        else:
            assert np.array_equal(p.data, before[name]), f"{name} is frozen and changed"
            assert not p.grad.any(), f"{name} is frozen and received a gradient"
    trainable = {name for name, p in clf.named_parameters() if p.requires_grad}
    if how == "freeze":
        assert {"head.weight", "gpt.h.1.attn.c_attn.weight", "gpt.ln_f.bias"} <= trainable
        assert not trainable & {"gpt.wte.weight", "gpt.wpe.weight", "gpt.h.0.mlp.c_fc.weight"}
    else:
        assert all(n.startswith("head.") or n.endswith(("lora_A", "lora_B")) for n in trainable)


def test_backward_skips_the_frozen_bottom_when_told(monkeypatch):
    model = tiny()
    freeze(model, "wte", "wpe", "h.0")
    assert frozen_below(model) == 1
    idx, targets = np.random.default_rng(0).integers(0, 11, (2, 2, 8))
    model.forward(idx, targets)
    model.zero_grad()
    model.backward()                                   # without the argument: the whole chain
    expected = {n: p.grad.copy() for n, p in model.named_parameters()}

    def must_not_run(*args, **kwargs):
        raise AssertionError("the backward of a block with nothing trainable below it ran")

    monkeypatch.setattr(model.h[0], "backward", must_not_run)
    monkeypatch.setattr(model.wte, "backward", must_not_run)
    model.forward(idx, targets)
    model.zero_grad()
    model.backward(frozen_below=frozen_below(model))
    for name, p in model.named_parameters():           # the same gradients, less work
        np.testing.assert_array_equal(p.grad, expected[name], err_msg=name)
    assert model.h[1].attn.c_attn.weight.grad.any()
    with pytest.raises(ValueError, match=r"frozen_below=2, but \['h\.1'\] hold trainable"):
        model.backward(frozen_below=2)


def test_the_classifier_skips_the_frozen_bottom(monkeypatch):
    clf = GPTClassifier(tiny(), n_classes=2, aux_lm_weight=0.5)
    freeze(clf, "gpt.wte", "gpt.wpe", "gpt.h.0")
    monkeypatch.setattr(clf.gpt.h[0], "backward", lambda *a, **k: pytest.fail("h.0 ran backward"))
    idx, pad = padded_batch()
    clf.forward(idx, np.array([0, 1, 0]), pad)
    clf.backward()
    assert clf.gpt.h[1].mlp.c_fc.weight.grad.any()


# ---------------------------------------------------------------------------------------------
# Counting, saving and loading adapters
# ---------------------------------------------------------------------------------------------


def test_trainable_parameter_count_is_correct():
    C, L, r, K = 16, 3, 4, 5
    cfg = GPTConfig(vocab_size=20, block_size=12, n_layer=L, n_head=2, n_embd=C)
    # per block: c_attn (C, 3C), attn.c_proj (C, C), c_fc (C, 4C), mlp.c_proj (4C, C);
    # an adapter of an (in, out) layer has A: (in, r) and B: (r, out): r (in + out) numbers
    attn = r * (C + 3 * C) + r * (C + C)
    mlp = r * (C + 4 * C) + r * (4 * C + C)
    assert add_lora(GPT(cfg), rank=r, targets=("attn", "mlp")) == L * (attn + mlp)
    assert add_lora(GPT(cfg), rank=r, targets="attn") == L * attn
    assert add_lora(GPT(cfg), rank=r, targets=("mlp.c_fc",)) == L * r * (C + 4 * C)
    clf = GPTClassifier(GPT(cfg), n_classes=K)
    assert add_lora(clf, rank=r) == L * (attn + mlp) + C * K + K              # the head trains too
    assert clf.num_parameters(trainable_only=True) == L * (attn + mlp) + C * K + K


def test_adapters_save_and_load_alone_and_are_small(tmp_path):
    from safetensors.numpy import save_file
    cfg = GPTConfig(vocab_size=65, block_size=32, n_layer=2, n_head=4, n_embd=64, dtype="float64")
    clf = GPTClassifier(GPT(cfg, seed=0), n_classes=2, seed=1)
    add_lora(clf, rank=2, alpha=4.0, targets=("attn", "mlp"))
    randomize(clf, seed=17)
    trained = GPTClassifier(GPT(cfg, seed=0), n_classes=2, seed=1)      # the base, before training:
    trained.gpt.load_state_dict({k[4:]: v for k, v in clf.state_dict().items()   # same GPT weights,
                                 if k.startswith("gpt.") and "lora_" not in k})  # another head
    idx = np.random.default_rng(18).integers(0, 65, (2, 10))
    expected, _ = clf.forward(idx)

    size = save_lora(clf, tmp_path / "adapters.safetensors")
    save_file({k: v for k, v in clf.state_dict().items()}, str(tmp_path / "full.safetensors"))
    full = (tmp_path / "full.safetensors").stat().st_size
    assert size < 0.1 * full, (size, full)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapters.safetensors", "full.safetensors"]

    base_logits, _ = trained.forward(idx)
    assert rel_error(base_logits, expected) > 1e-3                      # the adapters matter
    load_lora(trained, tmp_path / "adapters.safetensors")               # adds them from the file
    np.testing.assert_array_equal(trained.forward(idx)[0], expected)
    assert set(lora_state_dict(trained)) == {n for n, _ in clf.named_parameters()
                                             if n.startswith("head.") or "lora_" in n}

    other = GPT(cfg, seed=0)
    add_lora(other, rank=4)
    with pytest.raises(ValueError, match=r"rank.*expected the model's"):
        load_lora(other, tmp_path / "adapters.safetensors")
    with pytest.raises(KeyError, match="unexpected keys"):
        load_lora_state_dict(other, lora_state_dict(clf))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_lora(other, tmp_path / "missing.safetensors")


def test_lora_settings_are_read_off_the_layers_and_saved(tmp_path):
    model = tiny()
    assert lora_settings(model) is None
    add_lora(model, rank=2, alpha=3.0, dropout=0.1, targets=("mlp", "attn.c_proj"))
    settings = {"rank": 2, "alpha": 3.0, "dropout": 0.1,
                "targets": ["attn.c_proj", "mlp.c_fc", "mlp.c_proj"]}
    assert lora_settings(model) == settings
    assert not hasattr(model, "lora_config") and not hasattr(model, "merge_lora")
    save_lora(model, tmp_path / "a.safetensors")
    again = tiny()
    load_lora(again, tmp_path / "a.safetensors")
    assert lora_settings(again) == settings
    opt = AdamW(again.parameters())
    assert len(opt.runs) == 1                  # the adapters lie in one buffer of their own


@pytest.mark.parametrize("mismatch", ["n_layer", "classifier file into a GPT", "targets"])
def test_a_failed_load_lora_changes_nothing(tmp_path, mismatch):
    source = GPTClassifier(tiny(), n_classes=2) if mismatch == "classifier file into a GPT" else tiny()
    add_lora(source, rank=2, targets="mlp" if mismatch == "targets" else ("attn", "mlp"))
    save_lora(source, tmp_path / "a.safetensors")
    model = tiny(n_layer=3) if mismatch == "n_layer" else tiny()
    if mismatch == "targets":
        add_lora(model, rank=2, targets="attn")
    before = {n: (p.data.copy(), p.requires_grad) for n, p in model.named_parameters()}
    modules = [type(m) for m in model.modules()]
    with pytest.raises((KeyError, ValueError)):
        load_lora(model, tmp_path / "a.safetensors")
    after = {n: (p.data, p.requires_grad) for n, p in model.named_parameters()}
    assert after.keys() == before.keys() and [type(m) for m in model.modules()] == modules
    for name, (data, trains) in before.items():
        assert np.array_equal(after[name][0], data) and after[name][1] == trains, name


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


def test_bad_input_is_a_clear_error(tmp_path):
    model = tiny()
    with pytest.raises(ValueError, match=r"n_classes=1: expected an int >= 2"):
        GPTClassifier(model, n_classes=1)
    with pytest.raises(ValueError, match=r"aux_lm_weight=-1"):
        GPTClassifier(model, n_classes=2, aux_lm_weight=-1)
    with pytest.raises(ValueError, match=r"layer h\.0\.attn\.c_attn: rank=9 is larger than the layer "
                                         r"\(8 -> 24\): expected 1 <= rank <= min\(in, out\) = 8"):
        add_lora(model, rank=9)
    assert all(p.requires_grad for p in model.parameters())             # nothing half-way
    with pytest.raises(ValueError, match=r"rank=6 is larger than the layer \(4 -> 5\)"):
        LoRALinear(Linear(4, 5), rank=6)
    with pytest.raises(ValueError, match=r"target 'ffn' is unknown"):
        add_lora(model, targets=("ffn",))
    add_lora(model, rank=2)
    with pytest.raises(ValueError, match="already has LoRA adapters"):
        add_lora(model, rank=2)

    clf = GPTClassifier(tiny(), n_classes=2)
    idx, pad = padded_batch()
    pad[1, :] = True
    with pytest.raises(ValueError, match=r"pad row 1 is all padding: expected at least one real token"):
        clf.forward(idx, np.array([0, 1, 0]), pad)
    pad[1, :] = False
    pad[1, 2] = True
    with pytest.raises(ValueError, match=r"pad row 1 has a real token at position 3 after padding at 2"):
        clf.forward(idx, np.array([0, 1, 0]), pad)
    with pytest.raises(ValueError, match=r"labels contains 2: expected class ids in \[0, 2\)"):
        clf.forward(idx, np.array([0, 1, 2]))
    with pytest.raises(TypeError, match="pad has dtype int64: expected bool"):
        clf.forward(idx, pad=np.zeros(idx.shape, dtype=np.int64))

    (tmp_path / "a.csv").write_text("sentence,label\nhello,pos\n")
    with pytest.raises(ValueError, match=r"a\.csv: row 1 \(the header\) has no column 'text' "
                                         r"\(its columns: \['sentence', 'label'\]\)"):
        load_classification_file(tmp_path / "a.csv")
    (tmp_path / "b.jsonl").write_text('{"text": "good", "label": "pos"}\n{"text": "bad", "class": "neg"}\n')
    with pytest.raises(ValueError, match=r"b\.jsonl: line 2 has no field 'label'"):
        load_classification_file(tmp_path / "b.jsonl")
    (tmp_path / "c.csv").write_text("text,label\ngood,pos\nbad,neg\nfine,meh\n")
    with pytest.raises(ValueError, match=r"c\.csv: row 4: label 'meh' is unknown: expected one of "
                                         r"the classes \['neg', 'pos'\]"):
        load_classification_file(tmp_path / "c.csv", classes=["neg", "pos"])
    with pytest.raises(ValueError, match=r"y_true contains label id 2: expected ids in \[0, 2\)"):
        classification_report(np.array([0, 2]), np.array([0, 1]), ["neg", "pos"])


# ---------------------------------------------------------------------------------------------
# Data and evaluation
# ---------------------------------------------------------------------------------------------


def test_classification_files_jsonl_and_csv(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"text": "a b", "label": 10}\n\n{"text": "c", "label": 2}\n'
                                      '{"text": "d", "label": 10}\n')
    data = load_classification_file(tmp_path / "d.jsonl")
    assert data.classes == ["2", "10"] and data.labels.tolist() == [1, 0, 1]       # numeric order
    (tmp_path / "d.tsv").write_text("label\tbody\nzeta\tx y\nalpha\tz\n")
    data = load_classification_file(tmp_path / "d.tsv", text_field="body")
    assert data.texts == ["x y", "z"] and data.classes == ["alpha", "zeta"] and data.labels.tolist() == [1, 0]


def test_shuffled_words_task_is_balanced_held_out_and_seeded():
    train, test = shuffled_words_task(seed=0, test_fraction=0.2, min_words=5, max_words=12)
    assert train.classes == test.classes == ["original", "shuffled"]
    for part in (train, test):
        assert np.bincount(part.labels).tolist() == [len(part) // 2] * 2
        assert all(5 <= len(t.split()) <= 12 for t in part.texts)
    originals = {t for t, y in zip(train.texts, train.labels) if y == 0}
    assert not originals & {t for t, y in zip(test.texts, test.labels) if y == 0}
    for t, y in zip(test.texts, test.labels):                           # a shuffle is a reordering
        if y == 0:
            assert t == t.lower() and not t.endswith(".")
    assert len(train) > 500 and 0.15 < len(test) / (len(train) + len(test)) < 0.25
    again, _ = shuffled_words_task(seed=0, test_fraction=0.2, min_words=5, max_words=12)
    assert again.texts == train.texts
    assert shuffled_words_task(seed=1, test_fraction=0.2, min_words=5, max_words=12)[0].texts != train.texts


def test_classification_report_by_hand_and_its_table():
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 1, 0, 1, 0, 1])
    r = classification_report(y_true, y_pred, ["a", "b", "c"])
    assert r["confusion"] == [[2, 1, 0], [1, 1, 0], [0, 1, 0]]
    assert r["accuracy"] == pytest.approx(3 / 6)
    assert r["per_class"]["a"] == pytest.approx(dict(precision=2 / 3, recall=2 / 3, f1=2 / 3, support=3))
    assert r["per_class"]["b"] == pytest.approx(dict(precision=1 / 3, recall=1 / 2, f1=0.4, support=2))
    assert r["per_class"]["c"] == dict(precision=0.0, recall=0.0, f1=0.0, support=1)   # never predicted
    assert json.loads(json.dumps(r)) == r
    table = format_report(r)
    assert "accuracy" in table and "confusion (rows: true, columns: predicted)" in table
    assert table.splitlines()[-3].split() == ["a", "2", "1", "0"]


def test_a_lora_classifier_learns_a_toy_task_and_evaluates():
    from npgpt.tokenizers import CharTokenizer
    rng = np.random.default_rng(19)
    texts = ["".join(rng.choice(list("abcd"), size=rng.integers(2, 9))) for _ in range(64)]
    labels = np.array([int("d" in t) for t in texts])                 # does the text contain a "d"?
    tok = CharTokenizer.from_text("abcd")
    idx, pad = encode_texts(texts, tok, max_len=16)
    assert idx.shape == (64, 8) and (pad.sum(axis=1) == 8 - np.array([len(t) for t in texts])).all()
    clf = GPTClassifier(GPT(GPTConfig(vocab_size=4, block_size=16, n_layer=2, n_head=2, n_embd=32), seed=0),
                        n_classes=2, aux_lm_weight=0.2)
    n_trainable = add_lora(clf, rank=4, alpha=8)
    opt = AdamW(clf.parameters(), lr=1e-2, weight_decay=0.0)
    assert sum(p.size for p in opt.params) == n_trainable
    first = evaluate(clf, idx, pad, labels, ["no d", "d"])
    for epoch in range(40):
        for x, p, y in classification_batches(idx, pad, labels, 16, np.random.default_rng(epoch)):
            clf.forward(x, y, p)
            opt.zero_grad()
            clf.backward()
            opt.step()
    report = evaluate(clf, idx, pad, labels, ["no d", "d"])
    assert report["loss"] < 0.25 * first["loss"] and report["accuracy"] >= 0.95, (first, report)
    assert clf.training and report["n"] == 64


def test_the_lm_fine_tune_asks_the_trainer_to_skip_the_frozen_bottom(monkeypatch):
    """`npgpt finetune --task lm` trains a GPT through the generic Trainer: its backward_fn passes
    the skip explicitly, so frozen bottom blocks cost no backward work there either."""
    from npgpt.runs.finetune_tasks import LMTask

    model = tiny()
    freeze(model, "wte", "wpe", "h.0")
    monkeypatch.setattr(model.h[0], "backward", lambda *a, **k: pytest.fail("h.0 ran backward"))
    idx, targets = np.random.default_rng(0).integers(0, 11, (2, 2, 8))
    LMTask.loss_fn(model, (idx, targets))
    model.zero_grad()
    LMTask.backward_fn(model)
    assert model.h[1].attn.c_attn.weight.grad.any()
