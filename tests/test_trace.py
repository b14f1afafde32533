"""npgpt.trace: the Tracer sees every module call in order, reads each equation from the layer's
docstring, and never changes a number; the one hook point leaves nothing behind."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from npgpt import GPT, GPTConfig, Transformer, TransformerConfig, nn
from npgpt.data import Seq2SeqVocab, pad_batch
from npgpt.finetune import add_lora
from npgpt.nn import module as module_py
from npgpt.optim import AdamW, clip_grad_norm
from npgpt.trace import Tracer
from npgpt.trace.equations import PHASES, blocks, documented_class, equation
from npgpt.trace.step import Trace, trace_step


def tiny_gpt(dtype="float32", dropout=0.0, **kw):
    cfg = GPTConfig.preset("gradcheck", vocab_size=13, dtype=dtype, dropout=dropout, **kw)
    model = GPT(cfg, seed=0)
    rng = np.random.default_rng(1)
    idx = rng.integers(0, 13, (2, 8))
    return model, (idx, np.roll(idx, -1, axis=1))


def tiny_transformer(dtype="float32", dropout=0.0, norm_first=False, share=False):
    cfg = TransformerConfig(src_vocab_size=14, tgt_vocab_size=14, d_model=8, n_head=2, n_encoder_layers=2,
                            n_decoder_layers=2, d_ff=16, max_len=10, dropout=dropout, norm_first=norm_first,
                            share_embeddings=share, dtype=dtype)
    rng = np.random.default_rng(1)
    pairs = [(rng.integers(4, 14, n).tolist(), rng.integers(4, 14, n).tolist()) for n in (5, 8)]
    return Transformer(cfg, seed=0), tuple(pad_batch(pairs, Seq2SeqVocab("0123456789"), 10))


MODELS = {"gpt": tiny_gpt, "gpt-untied-sinusoidal": lambda **kw: tiny_gpt(tie_weights=False,
                                                                         pos_encoding="sinusoidal", **kw),
          "transformer-post-ln": tiny_transformer,
          "transformer-pre-ln-shared": lambda **kw: tiny_transformer(norm_first=True, share=True, **kw)}


def traced_step(make, **kw):
    model, batch = make(**kw)
    with Tracer(model) as t:
        model.forward(*batch)
        model.zero_grad()
        model.backward()
    return model, t


@pytest.mark.parametrize("name", MODELS)
def test_every_module_once_forward_and_backward_in_opposite_orders(name):
    model, t = traced_step(MODELS[name])
    expected = {path for path, m in model.named_modules() if not isinstance(m, nn.ModuleList)}
    fwd = [(r.path, r.call) for r in t.forward]
    bwd = [(r.path, r.call) for r in t.backward]
    assert {p for p, _ in fwd} == expected == {p for p, _ in bwd}
    # each module once in each phase; the Transformer's one positional table serves the source
    # and the target, so it runs twice in each
    twice = {"pos"} if isinstance(model, Transformer) else set()
    for records in (t.forward, t.backward):
        counts = {}
        for r in records:
            counts[r.path] = counts.get(r.path, 0) + 1
        assert counts == {p: 2 if p in twice else 1 for p in expected}
    # opposite orders: the backward's calls, in the order they began, are the forward's in the
    # order they returned, reversed (a parent begins before its children and returns after them)
    fwd_by_return = sorted(t.forward, key=lambda r: r.end)
    n_calls = {p: sum(1 for r in t.forward if r.path == p) for p in expected}
    mirrored = [(r.path, n_calls[r.path] - 1 - r.call) for r in reversed(fwd_by_return)]
    assert mirrored == bwd


@pytest.mark.parametrize("name", MODELS)
def test_every_recorded_equation_is_a_line_of_its_layers_docstring(name):
    model, t = traced_step(MODELS[name])
    modules = dict(model.named_modules())
    for r in t.records:
        klass = documented_class(type(modules[r.path]))
        assert klass is not None, f"{r.kind} documents no forward/backward"
        assert r.equation, f"{r.phase} of {r.name} ({r.kind}) recorded no equation"
        doc_lines = {line.strip() for line in inspect.getdoc(klass).splitlines()}
        missing = [line for line in r.equation if line not in doc_lines]
        assert not missing, f"{r.name}: {missing} are not lines of {klass.__name__}'s docstring"


def _module_classes():
    seen, todo = [], [nn.Module]
    while todo:
        for sub in todo.pop().__subclasses__():
            todo.append(sub)
            if sub.__module__.startswith(("npgpt.nn", "npgpt.models")) and sub is not nn.ModuleList:
                seen.append(sub)
    return seen


@pytest.mark.parametrize("cls", _module_classes(), ids=lambda c: c.__name__)
def test_every_layer_docstring_states_its_forward_and_backward(cls):
    klass = documented_class(cls)
    assert klass is not None, f"{cls.__name__}'s docstring has no 'forward:' block"
    phases = {phase for phase, _, body in blocks(klass.__doc__) if body}
    assert phases == set(PHASES), f"{cls.__name__}: blocks for {sorted(phases)}, expected both"


def test_equations_follow_the_modules_variant():
    gelu, relu = nn.Activation("gelu"), nn.ReLU()
    assert equation(gelu, "forward") == [next(line.strip() for line in nn.Activation.__doc__.splitlines()
                                              if "Phi(x) = 0.5" in line)]
    assert equation(relu, "backward") == ["dx = dy where x > 0, else 0"]
    pre, post = nn.EncoderLayer(8, 2, 16, norm_first=True), nn.EncoderLayer(8, 2, 16)
    assert equation(pre, "forward")[0].startswith("h = x + dropout(sa(norm1(x)))")
    assert equation(post, "forward")[0].startswith("h = norm1(x + dropout(sa(x)))")
    cross = nn.MultiHeadAttention(8, 2, cross=True)
    assert any("memory" in line for line in equation(cross, "forward"))
    with pytest.raises(ValueError, match="phase"):
        equation(cross, "sideways")


def _step(make, traced: bool, **kw):
    model, batch = make(**kw)
    opt = AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1)
    losses = []
    for _ in range(2):
        if traced:
            trace = trace_step(model, batch, opt, grad_clip=0.5)
            losses.append(trace.meta["loss"])
        else:
            losses.append(float(model.forward(*batch)[1]))
            opt.zero_grad()
            model.backward()
            clip_grad_norm(opt, 0.5)
            opt.step()
    return losses, {n: p.grad.copy() for n, p in model.named_parameters()}, model.state_dict()


@pytest.mark.parametrize("name", ["gpt", "transformer-post-ln", "transformer-pre-ln-shared"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_traced_and_untraced_steps_are_equal_bit_for_bit(name, dtype):
    # with dropout on: tracing must not draw from (or reorder) any generator
    plain = _step(MODELS[name], traced=False, dtype=dtype, dropout=0.2)
    traced = _step(MODELS[name], traced=True, dtype=dtype, dropout=0.2)
    assert plain[0] == traced[0]
    for n in plain[1]:
        assert np.array_equal(plain[1][n], traced[1][n]), f"gradient of {n} differs"
        assert np.array_equal(plain[2][n], traced[2][n]), f"updated {n} differs"


def test_the_hook_point_leaves_nothing_behind():
    model, batch = tiny_gpt()
    before = {c: (c.__dict__.get("forward"), c.__dict__.get("backward")) for c in _module_classes()}
    with pytest.raises(ZeroDivisionError):
        with Tracer(model) as t:
            model.forward(*batch)
            raise ZeroDivisionError
    assert module_py._observer is None
    assert t.forward and not t.backward
    n = len(t.records)
    model.forward(*batch)                                  # after the block: nothing is observed
    assert len(t.records) == n
    for _, m in model.named_modules():                     # nothing patched onto instances
        assert "forward" not in vars(m) and "backward" not in vars(m)
    assert before == {c: (c.__dict__.get("forward"), c.__dict__.get("backward")) for c in _module_classes()}


def test_a_failing_call_is_recorded_with_its_error_and_the_slot_restored():
    model, (idx, _) = tiny_gpt()
    with pytest.raises(ValueError):
        with Tracer(model) as t:
            model.forward(idx + 100)                       # ids out of the vocabulary
    assert module_py._observer is None
    assert any(r.error and "ValueError" in r.error for r in t.records)


def test_nested_tracers_restore_each_other_and_a_tracer_is_not_reentrant():
    model, batch = tiny_gpt()
    outer, inner = Tracer(model), Tracer(model.h[0])
    with outer:
        with inner:
            model.forward(*batch)
        assert module_py._observer is outer
        with pytest.raises(RuntimeError, match="already tracing"):
            outer.__enter__()
    assert module_py._observer is None
    assert {r.path for r in inner.records} == {p for p, _ in model.h[0].named_modules()}
    assert not any(r.path.startswith("h.0") for r in outer.records)    # the inner one saw them


def test_super_calls_and_modules_outside_the_model_stay_inside_their_caller():
    class Scaled(nn.Linear):
        """forward:
            y = 2 (x @ W + b)
        backward:
            dx = 2 dY @ W^T
        """

        def forward(self, x):
            return 2 * super().forward(x)

        def backward(self, dout, need_dx=True):
            return super().backward(2 * dout, need_dx)

    layer = Scaled(4, 3, dtype="float64")
    lora = nn.LoRALinear(nn.Linear(4, 3, dtype="float64"), rank=2)
    x = np.ones((2, 4))
    for m in (layer, lora):
        with Tracer(m) as t:
            m.backward(m.forward(x))
        assert [(r.phase, r.path) for r in t.records] == [("forward", ""), ("backward", "")]
    assert t.records[0].equation[0].startswith("y = x @ W + b + s * dropout(x)")


def test_records_hold_shapes_statistics_saturation_and_parameter_gradients():
    model, batch = tiny_gpt(activation="relu")
    with Tracer(model) as t:
        model.forward(*batch)
        model.zero_grad()
        model.backward()
    rec = {(r.phase, r.path): r for r in t.records}
    c_attn = rec["forward", "h.0.attn.c_attn"]
    assert c_attn.inputs[0]["shape"] == [2, 8, 8] and c_attn.outputs[0]["shape"] == [2, 8, 24]
    out = c_attn.outputs[0]
    assert out["dtype"] == "float32" and out["min"] <= out["mean"] <= out["max"] and sum(out["hist"]) == 2 * 8 * 24
    assert 0.3 < rec["forward", "h.0.mlp.act"].saturation["dead"] < 0.7        # ReLU at init: about half
    assert "one_hot" in rec["forward", "h.0.attn"].saturation
    grads = rec["backward", "h.0.attn.c_attn"].params
    assert set(grads) == {"h.0.attn.c_attn.weight", "h.0.attn.c_attn.bias"}
    assert np.isclose(grads["h.0.attn.c_attn.weight"]["norm"],
                      np.linalg.norm(model.h[0].attn.c_attn.weight.grad.astype(np.float64)))
    # the tied table: its two uses each record their own contribution, which add up to its .grad
    head, lookup = rec["backward", "lm_head"].params["wte.weight"], rec["backward", "wte"].params["wte.weight"]
    assert head["norm"] > 0 and lookup["norm"] > 0
    assert rec["backward", "h.0"].outputs[0]["shape"] == [2, 8, 8]


def test_trace_step_reports_the_optimizer_phase_and_round_trips_through_json():
    import json
    model, batch = tiny_gpt()
    opt = AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1)
    w0 = model.state_dict()
    trace = trace_step(model, batch, opt, grad_clip=0.1)
    o = trace.optimizer
    assert o["step"] == 1 and o["clip"]["scale"] < 1 and o["clip"]["total_norm"] > 0.1
    row = next(r for r in o["params"] if r["name"] == "h.0.mlp.c_fc.weight")
    assert np.isclose(row["bc1"], 0.1) and np.isclose(row["bc2"], 1 - 0.99)
    update = model.state_dict()["h.0.mlp.c_fc.weight"].astype(np.float64) - w0["h.0.mlp.c_fc.weight"]
    assert np.isclose(row["update"]["norm"], np.linalg.norm(update))
    assert np.isclose(row["ratio"], np.linalg.norm(update) / np.linalg.norm(w0["h.0.mlp.c_fc.weight"]))
    # AdamW's first step moves every weight by about lr (plus the decay): the ratio says how much that is
    assert 0.5 < row["update"]["norm"] / (1e-2 * np.sqrt(8 * 32)) < 1.5
    assert [r.path for r in trace.blocks("backward")] == ["h.1", "h.0"]
    again = Trace.from_dict(json.loads(json.dumps(trace.to_dict())))
    assert again.to_dict() == json.loads(json.dumps(trace.to_dict()))
    with pytest.raises(ValueError, match="not an npgpt trace"):
        Trace.from_dict({"format": "something else"})


def test_frozen_bottom_and_lora_models_trace_what_runs():
    model, batch = tiny_gpt()
    add_lora(model, rank=2, alpha=4, targets=("attn",))
    with Tracer(model) as t:
        model.forward(*batch)
        model.zero_grad()
        model.backward()
    lora = [r for r in t.backward if r.kind == "LoRALinear"]
    assert lora and all(set(r.params) <= {f"{r.path}.lora_A", f"{r.path}.lora_B"} for r in lora)
