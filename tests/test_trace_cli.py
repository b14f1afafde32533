"""`npgpt trace`: the terminal view, --depth, --json (to a file and to stdout, read back), --html,
--compare torch (and without PyTorch), a Transformer, a checkpoint's next step (a run's of `npgpt
train` or `npgpt seq2seq train`: its loss and weights are the resumed run's next step's, bit for
bit; only the run's own data), and the errors (one line, exit 2)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from npgpt import GPT, GPTConfig, Transformer, TransformerConfig
from npgpt import checkpoint as ckpt_io
from npgpt.cli import main
from npgpt.data import Seq2SeqVocab
from npgpt.optim import AdamW
from npgpt.trace.step import Trace
from npgpt.runs.trace import GRAD_CLIP, TraceConfig, prepare, run as run_trace, traced
from npgpt.tokenizers import CharTokenizer
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
    batch: sources "a+b" of the addition vocabulary, and the loss the run then logs for that step;
    its AdamW step (the run's learning rate and clip) leaves the weights of the run's step 3."""
    run = tmp_path / "run"
    exact = ["--dtype", "float64", "--backend", "numpy"]
    assert main(["seq2seq", "train", "--task", "addition", "--n-digits", "2", "--n-train", "200",
                 *SEQ2SEQ, *exact, "--max-iters", "2", "--out", str(run)]) == 0
    src = prepare(TraceConfig(checkpoint=str(run))).batch[0]
    plus = Seq2SeqVocab("0123456789+").encode("+")[0]
    assert src.shape[0] == 8 and ((src == plus).sum(axis=1) == 1).all()      # one '+' in every source
    page = tmp_path / "t.json"
    assert main(["trace", "--checkpoint", str(run), "--backend", "numpy", "--json", str(page)]) == 0
    meta = json.loads(page.read_text())["meta"]
    assert "task 'addition'" in meta["data"] and "the run's next batch" in meta["data"]
    trace, subject = traced(TraceConfig(checkpoint=str(run), backend="numpy"))
    assert main(["seq2seq", "train", "--resume", "--out", str(run), "--max-iters", "3"]) == 0
    step = read_log(run / "log.jsonl")[-1]                   # the run's own step 3, taken after
    assert step["step"] == 3 and meta["loss"] == trace.meta["loss"] == step["loss"]
    assert_weights_of_step(subject.model, run)


def assert_weights_of_step(model, run):
    """The model's weights are, bit for bit, those of the run's checkpoint."""
    saved = ckpt_io.load(run / "ckpt.safetensors").model_state
    ours = model.state_dict()
    assert set(ours) == set(saved)
    differ = [name for name, w in ours.items() if not np.array_equal(w, saved[name])]
    assert not differ, f"differ from the run's step {ckpt_io.load(run / 'ckpt.safetensors').meta['step']}: {differ}"


GPT_RUN = ["--n-layer", "1", "--n-head", "2", "--n-embd", "8", "--block-size", "8", "--batch-size", "3",
           "--dtype", "float64", "--backend", "numpy", "--eval-iters", "1", "--sample-tokens", "0"]


def gpt_run(tmp_path, *flags) -> tuple:
    """A tiny `npgpt train` run of 2 steps on a small text: (its folder, the text file)."""
    text, run = tmp_path / "text.txt", tmp_path / "run"
    text.write_text("".join(f"line {i}: the quick brown fox jumps over the lazy dog\n" for i in range(20)))
    assert main(["train", "--data", str(text), *GPT_RUN, *flags, "--max-iters", "2", "--out", str(run)]) == 0
    return run, text


@pytest.mark.parametrize("dropout", ["0", "0.2"])
def test_a_train_checkpoint_traces_its_runs_next_step(tmp_path, capsys, dropout):
    """The trace of an `npgpt train` checkpoint is the run's step 3, bit for bit: the loss the
    resumed run logs for it and the weights it saves. The batch (the run's text, tokenizer and
    sampler), the learning rate (its schedule's at step 3, 1e-3, not step 2's 1e-2), the clip
    (0.05, not 1.0) and, with dropout, the masks (its generators) are the run's."""
    run, _ = gpt_run(tmp_path, "--warmup", "2", "--lr", "1e-2", "--min-lr", "1e-3", "--grad-clip", "0.05",
                     "--dropout", dropout)
    trace, subject = traced(TraceConfig(checkpoint=str(run), backend="numpy"))
    assert trace.meta["data"].startswith(f"3 x 8 tokens of {str(run.parent / 'text.txt')!r} (CharTokenizer), "
                                         f"the run's next batch;")
    assert trace.optimizer["step"] == 3 and trace.optimizer["hyper"]["lr"] == 1e-3
    assert trace.optimizer["clip"]["max_norm"] == 0.05 and trace.optimizer["clip"]["scale"] < 1
    assert main(["train", "--resume", "--out", str(run), "--max-iters", "3"]) == 0
    step = read_log(run / "log.jsonl")[-1]
    assert step["step"] == 3 and trace.meta["loss"] == step["loss"] and step["lr"] == 1e-3
    assert_weights_of_step(subject.model, run)


def test_a_train_checkpoint_takes_only_its_own_text(tmp_path, capsys):
    """--data must hold the run's text (a copy elsewhere will do; other content is refused in
    one line); without it, the run's file must still be there. --batch-size draws with the run's
    sampler, but says that this is not the run's next batch."""
    run, text = gpt_run(tmp_path)
    copy, other = tmp_path / "copy.txt", tmp_path / "other.txt"
    copy.write_text(text.read_text())
    other.write_text(text.read_text().replace("fox", "cat"))
    own = run_trace(TraceConfig(checkpoint=str(run)))
    assert run_trace(TraceConfig(checkpoint=str(run), data=str(copy))).meta["loss"] == own.meta["loss"]
    five = run_trace(TraceConfig(checkpoint=str(run), batch_size=5)).meta["data"]
    assert five.startswith("5 x 8 tokens of") and "drawn by the run's batch sampler (its next batch is 3 x 8)" in five
    capsys.readouterr()
    assert main(["trace", "--checkpoint", str(run), "--data", str(other)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"npgpt trace: error: --data {str(other)!r} is not the text --checkpoint {str(run)!r}")
    assert "SHA-256" in err and err.count("\n") == 1
    text.unlink()
    assert main(["trace", "--checkpoint", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("npgpt trace: error: --checkpoint") and "was trained on --data" in err
    assert str(text) in err and err.count("\n") == 1
    assert main(["trace", "--checkpoint", str(run), "--data", str(copy), "--depth", "0"]) == 0


def test_a_checkpoint_of_no_train_run_reads_random_windows(tmp_path):
    """A GPT checkpoint without a run's settings (here one saved as `npgpt finetune` saves its
    settings) keeps random windows of the text drawn with --seed, and the checkpoint's last
    learning rate, and says why."""
    tok = CharTokenizer.from_text("abcdefgh ")
    model = GPT(GPTConfig.preset("gradcheck", vocab_size=tok.vocab_size, n_embd=8, block_size=8))
    opt = AdamW(model.parameters(), lr=3e-4)
    path = ckpt_io.save(tmp_path / "ckpt.safetensors", model, opt, tokenizer=tok.to_dict(),
                        finetune={"task": "lm"}, step=0)
    (tmp_path / "t.txt").write_text("abc defg hab cde fgh " * 10)
    one, two = (prepare(TraceConfig(checkpoint=str(path), data=str(tmp_path / "t.txt"), seed=s)) for s in (0, 1))
    assert "random windows of" in one.meta["data"] and "`npgpt finetune`: its task and batches" in one.meta["data"]
    assert not np.array_equal(one.batch[0], two.batch[0])
    assert one.optimizer.lr == 3e-4 and one.grad_clip == GRAD_CLIP


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
    with pytest.raises(ValueError, match="--grad-clip"):
        TraceConfig(grad_clip=-1.0)
    assert TraceConfig().grad_clip is None           # 1.0, or the run's: a new model's step clips at 1.0
    assert run_trace(TraceConfig(n_embd=8, block_size=8)).optimizer["clip"]["max_norm"] == GRAD_CLIP == 1.0
