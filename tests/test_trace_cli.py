"""`npgpt trace`: the terminal view, --depth, --json (to a file and to stdout, read back), --html,
--compare torch (and without PyTorch), a Transformer, a checkpoint's next step (a seq2seq run's:
its own task and next batch), and the errors (one line, exit 2)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from npgpt import Transformer, TransformerConfig
from npgpt import checkpoint as ckpt_io
from npgpt.cli import main
from npgpt.data import Seq2SeqVocab
from npgpt.optim import AdamW
from npgpt.trace.step import Trace
from npgpt.runs.trace import TraceConfig, prepare
from npgpt.trace.terminal import render_terminal
from npgpt.trainer import read_log

SMALL = ["--n-embd", "8", "--block-size", "8"]


def test_default_trace_prints_every_phase(capsys):
    assert main(["trace", *SMALL]) == 0
    out = capsys.readouterr().out
    assert out.startswith("npgpt trace: GPT, 2 layers, 2 heads, 8 wide")
    for heading in ("forward: 33 calls", "backward: 33 calls", "residual stream", "optimizer: AdamW step t=1",
                    "clip: total gradient norm", "bias corrections: 1 - beta1^t = 0.1"):
        assert heading in out, heading
    assert "    h.0.attn.c_attn" in out and "| y = x @ W + b" in out           # nested, with its equation
    assert "+ dweight" in out and "(into h.0.mlp.c_fc.weight)" in out
    assert "h.1.mlp.c_proj.bias" in out.split("optimizer:")[1]


def test_depth_folds_sub_modules(capsys):
    assert main(["trace", *SMALL, "--depth", "1"]) == 0
    out = capsys.readouterr().out
    assert "(9 shown, --depth 1)" in out
    assert "\n  h.0 " in out and "h.0.attn" not in out.split("residual stream")[0]


def test_json_round_trip_and_html(tmp_path, capsys):
    path, page = tmp_path / "t.json", tmp_path / "t.html"
    assert main(["trace", *SMALL, "--json", str(path), "--html", str(page)]) == 0
    printed = capsys.readouterr().out
    trace = Trace.from_dict(json.loads(path.read_text()))
    assert render_terminal(trace) in printed                 # the file holds what was shown
    assert page.read_text().startswith("<!doctype html>") and "http" not in page.read_text().replace(
        "http://www.w3.org/2000/svg", "")                     # self-contained: nothing to fetch
    assert main(["trace", *SMALL, "--json", "-"]) == 0
    captured = capsys.readouterr()
    again = json.loads(captured.out)                        # stdout holds the JSON alone
    untimed = lambda d: [{k: v for k, v in r.items() if k != "seconds"} for r in d["records"]]  # noqa: E731
    first = json.loads(path.read_text())
    assert untimed(again) == untimed(first) and again["optimizer"] == first["optimizer"]   # same step
    assert "forward:" not in captured.out


def test_transformer_and_compare_torch(capsys):
    pytest.importorskip("torch")
    assert main(["trace", "--model", "transformer", *SMALL, "--dtype", "float64", "--compare", "torch",
                 "--depth", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("npgpt trace: Transformer, 2+2 layers") and "torch diff" in out
    assert "decoder.0.cross_attn" in out and "note: dropout set to 0 for --compare torch" in out
    summary = out.rsplit("compared with PyTorch", 1)[1]
    largest = float(summary.split("largest difference ")[1].split()[0])
    assert largest < 1e-10


def test_a_checkpoints_next_step_continues_its_adamw(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--max-iters", "3", "--warmup", "1", "--n-layer", "1",
                 "--n-head", "2", "--n-embd", "8", "--block-size", "8", "--batch-size", "2",
                 "--eval-iters", "1", "--sample-tokens", "0"]) == 0
    capsys.readouterr()
    assert main(["trace", "--checkpoint", str(run), "--depth", "0"]) == 0
    out = capsys.readouterr().out
    assert "npgpt checkpoint" in out and "AdamW state restored from the checkpoint: this is its step 4" in out
    assert "optimizer: AdamW step t=4" in out


def test_a_transformer_checkpoint(tmp_path, capsys):
    vocab = Seq2SeqVocab("abc")
    cfg = TransformerConfig(src_vocab_size=vocab.size, tgt_vocab_size=vocab.size, d_model=8, n_head=2,
                            n_encoder_layers=1, n_decoder_layers=1, d_ff=16, max_len=6)
    model = Transformer(cfg)
    path = ckpt_io.save(tmp_path / "ckpt.safetensors", model, AdamW(model.parameters()),
                        vocab=vocab.to_dict(), step=0)
    assert main(["trace", "--checkpoint", str(path), "--depth", "1"]) == 0
    out = capsys.readouterr().out
    assert "Transformer, 1+1 layers" in out and "post-LN" in out and "encoder.0" in out
    assert "records no `npgpt seq2seq train` run" in out              # hence the reverse task
    assert main(["trace", "--checkpoint", str(path), "--data", "x.txt"]) == 2   # a GPT's flag: refused
    err = capsys.readouterr().err
    assert err.startswith("npgpt trace: error: --data 'x.txt'") and err.count("\n") == 1


SEQ2SEQ = ["--n-test", "4", "--d-model", "16", "--n-head", "2", "--layers", "1", "--batch-size", "8",
           "--eval-interval", "0", "--examples", "0"]


def test_a_seq2seq_checkpoint_traces_its_runs_next_batch(tmp_path, capsys):
    """The trace of an `npgpt seq2seq train --task addition` checkpoint draws the run's own next
    batch: sources "a+b" of the addition vocabulary, and the loss the run then logs for that step."""
    run = tmp_path / "run"
    assert main(["seq2seq", "train", "--task", "addition", "--n-digits", "2", "--n-train", "200",
                 *SEQ2SEQ, "--max-iters", "2", "--out", str(run)]) == 0
    src = prepare(TraceConfig(checkpoint=str(run))).batch[0]
    plus = Seq2SeqVocab("0123456789+").encode("+")[0]
    assert src.shape[0] == 8 and ((src == plus).sum(axis=1) == 1).all()      # one '+' in every source
    page = tmp_path / "t.json"
    assert main(["trace", "--checkpoint", str(run), "--json", str(page)]) == 0
    meta = json.loads(page.read_text())["meta"]
    assert "task 'addition'" in meta["data"] and "the run's next batch" in meta["data"]
    assert main(["seq2seq", "train", "--resume", "--out", str(run), "--max-iters", "3"]) == 0
    step = read_log(run / "log.jsonl")[-1]                   # the run's own step 3, taken after
    assert step["step"] == 3 and np.isclose(meta["loss"], step["loss"], rtol=1e-6, atol=0)


def test_a_seq2seq_checkpoint_whose_data_is_gone(tmp_path, capsys):
    tsv, run = tmp_path / "pairs.tsv", tmp_path / "run"
    tsv.write_text("".join(f"{w}\t{w[::-1]}\n" for w in ("abc", "ab", "ba", "cab", "bca", "acb", "cc", "a")))
    assert main(["seq2seq", "train", "--data", str(tsv), "--test-fraction", "0.25", *SEQ2SEQ[2:],
                 "--max-iters", "1", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["trace", "--checkpoint", str(run), "--depth", "0"]) == 0
    assert f"pairs of {str(tsv)!r}" in capsys.readouterr().out
    tsv.unlink()
    assert main(["trace", "--checkpoint", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("npgpt trace: error: --checkpoint") and "was trained on --data" in err
    assert str(tsv) in err and err.count("\n") == 1


def test_compare_torch_without_pytorch(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)           # as if it were not installed
    assert main(["trace", *SMALL, "--compare", "torch"]) == 2
    err = capsys.readouterr().err
    assert err == "npgpt trace: error: --compare torch needs PyTorch, which is not installed: pip install torch\n"


@pytest.mark.parametrize("argv, message", [
    (["--checkpoint", "no/such/ckpt.safetensors"], "--checkpoint 'no/such/ckpt.safetensors' does not exist"),
    (["--checkpoint", "x", "--n-layer", "2"], "no size flags with it"),
    (["--n-embd", "9", "--n-head", "2"], "n_embd=9 is not divisible by n_head=2"),
    (["--batch-size", "0"], "batch_size=0 (--batch-size): expected a positive integer"),
    (["--data", "no/such.txt"], "no/such.txt"),
    (["--model", "transformer", "--data", "x.txt"], "(--data): expected no --data with --model transformer"),
    (["--checkpoint", "x", "--preset", "baby"], "no --preset with it"),
])
def test_errors_are_one_line_and_exit_2(argv, message, capsys):
    assert main(["trace", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("npgpt trace: error:") and message in err and err.count("\n") == 1


def test_model_and_checkpoint_must_agree(tmp_path, capsys):
    vocab = Seq2SeqVocab("ab")
    cfg = TransformerConfig(src_vocab_size=vocab.size, tgt_vocab_size=vocab.size, d_model=8, n_head=2,
                            n_encoder_layers=1, n_decoder_layers=1, d_ff=16, max_len=6)
    path = ckpt_io.save(tmp_path / "t.safetensors", Transformer(cfg), vocab=vocab.to_dict())
    assert main(["trace", "--checkpoint", str(path), "--model", "gpt"]) == 2
    assert "holds a 'Transformer' model" in capsys.readouterr().err


def test_trace_config_checks_its_values():
    with pytest.raises(ValueError, match="--depth"):
        TraceConfig(depth=-1)
    with pytest.raises(ValueError, match="--compare"):
        TraceConfig(compare="jax")
    assert np.isclose(TraceConfig().grad_clip, 1.0)
