"""The training loop: exact resume, Ctrl-C, the NaN guard, the log, and bad input."""

import os
import signal
from dataclasses import replace

import numpy as np
import pytest

from npgpt import GPT, GPTConfig
from npgpt import checkpoint as ckpt_io
from npgpt.data import default_corpus
from npgpt.optim import AdamW, Constant
from npgpt.train import (RunLog, TrainConfig, Trainer, TrainingDiverged, graceful_interrupt,
                         read_log, resume_config, train)
from tests.helpers import interrupt_at, quiet

# a model small enough that a step takes milliseconds; dropout on, so its generators matter
TINY = dict(n_layer=1, n_head=2, n_embd=16, block_size=16, dropout=0.1, batch_size=4,
            eval_iters=2, warmup=2, sample_tokens=0)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "corpus.txt"
    path.write_text(default_corpus()[:20_000], encoding="utf-8")
    return str(path)


def test_resumed_run_equals_the_uninterrupted_run_exactly(tmp_path, corpus):
    cfg = TrainConfig(data=corpus, max_iters=12, eval_interval=4, checkpoint_interval=4, **TINY)
    whole = train(replace(cfg, out=str(tmp_path / "whole")), progress=False, print_fn=quiet)
    parts_cfg = replace(cfg, out=str(tmp_path / "parts"))
    first = train(parts_cfg, progress=False, print_fn=quiet, on_step=interrupt_at(7))
    assert first.interrupted and first.step == 7
    assert ckpt_io.load(first.checkpoint).meta["step"] == 7
    rest = train(resume_config(parts_cfg.out), resume=True, progress=False, print_fn=quiet)

    assert not rest.interrupted and rest.step == 12
    assert first.losses + rest.losses == whole.losses          # bit for bit, not approximately
    assert rest.val_losses == whole.val_losses
    whole_log, parts_log = read_log(tmp_path / "whole/log.jsonl"), read_log(tmp_path / "parts/log.jsonl")
    assert [r["step"] for r in parts_log] == list(range(1, 13))
    assert [r["loss"] for r in parts_log] == [r["loss"] for r in whole_log]
    a = ckpt_io.load(tmp_path / "whole/ckpt.safetensors")
    b = ckpt_io.load(tmp_path / "parts/ckpt.safetensors")
    assert all(np.array_equal(a.model_state[k], b.model_state[k]) for k in a.model_state)
    assert a.meta["rng"] == b.meta["rng"] and a.meta["batch_rng"] == b.meta["batch_rng"]


def test_log_has_every_step_and_the_validation_losses(tmp_path, corpus):
    cfg = TrainConfig(data=corpus, max_iters=5, eval_interval=2, out=str(tmp_path), **TINY)
    result = train(cfg, progress=False, print_fn=quiet)
    log = read_log(tmp_path / "log.jsonl")
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5]
    assert {"step", "loss", "lr", "grad_norm", "tokens_per_s", "elapsed"} <= set(log[0])
    assert [r["step"] for r in log if "val_loss" in r] == [2, 4, 5]     # every 2 steps and the last
    assert result.val_losses == {r["step"]: r["val_loss"] for r in log if "val_loss" in r}
    assert [r["lr"] for r in log[:2]] == pytest.approx([cfg.lr / 2, cfg.lr])   # warmup 2
    assert all(b["elapsed"] > a["elapsed"] for a, b in zip(log, log[1:]))


def test_validation_loss_uses_the_same_batches_each_time(tmp_path, corpus):
    """Without training in between, two validation losses are equal (fixed, seeded batches)."""
    cfg = TrainConfig(data=corpus, max_iters=2, eval_interval=1, lr=1e-12, min_lr=0.0, out=str(tmp_path),
                      **{**TINY, "dropout": 0.0, "warmup": 0})
    result = train(cfg, progress=False, print_fn=quiet)
    assert result.val_losses[1] == pytest.approx(result.val_losses[2], abs=1e-6)


# -- the NaN guard ----------------------------------------------------------------------------

def tiny_trainer(out, model=None, **kw):
    cfg = GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=8)
    model = model or GPT(cfg, seed=0)
    data = np.random.default_rng(0).integers(0, 10, 500)

    def batch_fn(rng):
        o = rng.integers(0, len(data) - 9, 4)[:, None] + np.arange(8)
        return data[o], data[o + 1]
    opt = AdamW(model.parameters(), lr=1e-2)
    return Trainer(model, opt, batch_fn, schedule=Constant(1e-2), out_dir=out, progress=False, **kw)


def test_a_nan_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    snapshots = {}

    def poison(trainer, rec):
        snapshots[rec["step"]] = trainer.model.state_dict()
        if rec["step"] == 5:
            trainer.model.h[0].mlp.c_fc.weight.data[0, 0] = np.nan
    trainer = tiny_trainer(tmp_path, max_iters=20, checkpoint_interval=2, on_step=poison)
    with pytest.raises(TrainingDiverged, match=r"step 6: loss is nan.*last good checkpoint is kept"):
        trainer.run()
    ck = ckpt_io.load(tmp_path / "ckpt.safetensors")
    assert ck.meta["step"] == 4
    assert all(np.array_equal(ck.model_state[k], v) for k, v in snapshots[4].items())
    assert read_log(tmp_path / "log.jsonl")[-1]["error"].startswith("step 6: loss is nan")


def test_a_bad_parameter_is_never_saved(tmp_path):
    def poison(trainer, rec):
        if rec["step"] == 4:       # right before the checkpoint of step 4
            trainer.model.wte.weight.data[1, 1] = np.inf
    trainer = tiny_trainer(tmp_path, max_iters=20, checkpoint_interval=2, on_step=poison)
    with pytest.raises(TrainingDiverged, match=r"step 4: parameter wte.weight holds NaN or infinite"):
        trainer.run()
    assert ckpt_io.load(tmp_path / "ckpt.safetensors").meta["step"] == 2


def test_an_infinite_gradient_norm_stops_before_the_update(tmp_path):
    class Exploding(GPT):
        def backward(self, dlogits=None):
            super().backward(dlogits)
            if trainer.step + 1 == 3:
                self.ln_f.bias.grad[0] = np.inf
    model = Exploding(GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=8))
    trainer = tiny_trainer(tmp_path, model=model, max_iters=20, checkpoint_interval=1)
    with pytest.raises(TrainingDiverged, match=r"step 3: gradient norm is inf"):
        trainer.run()
    ck = ckpt_io.load(tmp_path / "ckpt.safetensors")
    assert ck.meta["step"] == 2
    assert np.array_equal(ck.model_state["ln_f.bias"], model.ln_f.bias.data)   # no update happened


# -- Ctrl-C ------------------------------------------------------------------------------------

def test_ctrl_c_finishes_the_step_and_saves(tmp_path):
    trainer = tiny_trainer(tmp_path, max_iters=50, checkpoint_interval=100, on_step=interrupt_at(3))
    result = trainer.run()
    assert result.interrupted and result.step == 3
    assert ckpt_io.load(tmp_path / "ckpt.safetensors").meta["step"] == 3
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_second_ctrl_c_raises_at_once():
    with graceful_interrupt() as flag:
        os.kill(os.getpid(), signal.SIGINT)
        assert flag["requested"]
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)


def test_runlog_resume_drops_the_steps_that_will_be_recomputed(tmp_path):
    path = tmp_path / "log.jsonl"
    log = RunLog(path, total=6, progress=False)
    for s in range(1, 6):
        log.record({"step": s, "loss": 1.0 / s, "tokens_per_s": 1.0})
    log.close()
    RunLog(path, total=6, start_step=3, progress=False).close()
    assert [r["step"] for r in read_log(path)] == [1, 2, 3]


# -- bad input -----------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value, message", [
    ("max_iters", 0, r"max_iters=0 \(--max-iters\): expected a positive integer"),
    ("lr", -1.0, r"lr=-1.0 \(--lr\): expected a finite number >= 0"),
    ("min_lr", 1.0, r"min_lr=1.0 \(--min-lr\): expected a number <= lr"),
    ("dropout", 1.0, r"dropout=1.0 \(--dropout\): expected a number in \[0, 1\)"),
    ("tokenizer", "word", r"tokenizer='word' \(--tokenizer\): expected one of \['char', 'bpe'\]"),
    ("preset", "huge", r"preset='huge' \(--preset\): expected one of"),
    ("warmup", 5000, r"warmup=5000 \(--warmup\): expected at most max-iters"),
    ("batch_size", 2.5, r"batch_size=2.5 \(--batch-size\): expected a positive integer"),
])
def test_bad_settings_name_the_flag(field, value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{field: value})


def test_empty_and_too_short_corpus(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty.txt.*is empty"):
        train(TrainConfig(data=str(empty), out=str(tmp_path / "a"), **TINY), progress=False, print_fn=quiet)
    short = tmp_path / "short.txt"
    short.write_text("just a few words of text, " * 4)
    with pytest.raises(ValueError, match=r"short.txt' is too short: 104 tokens give 11 validation tokens, "
                                         r"expected at least block-size \+ 1 = 17"):
        train(TrainConfig(data=str(short), out=str(tmp_path / "b"), **TINY), progress=False, print_fn=quiet)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_resume_refuses_changed_settings_and_other_data(tmp_path, corpus):
    cfg = TrainConfig(data=corpus, max_iters=2, lr=2e-3, out=str(tmp_path / "run"), **TINY)
    train(cfg, progress=False, print_fn=quiet)
    with pytest.raises(FileExistsError, match="pass --resume"):
        train(cfg, progress=False, print_fn=quiet)
    with pytest.raises(ValueError, match=r"lr 0.5 \(the run has 0.002\)"):
        resume_config(cfg.out, {"lr": 0.5})
    assert resume_config(cfg.out, {"max_iters": 4}).max_iters == 4
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        resume_config(tmp_path / "elsewhere")
    other = tmp_path / "other.txt"
    other.write_text(default_corpus()[5_000:25_000], encoding="utf-8")
    moved = replace(cfg, data=str(other), max_iters=4)
    with pytest.raises(ValueError, match="not the text the run .* was trained on"):
        train(moved, resume=True, progress=False, print_fn=quiet)
