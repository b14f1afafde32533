"""The GPT pre-training run (npgpt.runs.pretrain): exact resume, the log, bad input, and the
backend it runs on."""

from dataclasses import replace

import numpy as np
import pytest

from npgpt import checkpoint as ckpt_io
from npgpt import kernels
from npgpt.data import default_corpus
from npgpt.runs.pretrain import PretrainConfig, resume_config, run
from npgpt.trainer import read_log
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
    cfg = PretrainConfig(data=corpus, max_iters=12, eval_interval=4, checkpoint_interval=4, **TINY)
    whole = run(replace(cfg, out=str(tmp_path / "whole")), progress=False, print_fn=quiet)
    parts_cfg = replace(cfg, out=str(tmp_path / "parts"))
    first = run(parts_cfg, progress=False, print_fn=quiet, on_step=interrupt_at(7))
    assert first.interrupted and first.step == 7
    assert ckpt_io.load(first.checkpoint).meta["step"] == 7
    rest = run(resume_config(parts_cfg.out), resume=True, progress=False, print_fn=quiet)

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
    cfg = PretrainConfig(data=corpus, max_iters=5, eval_interval=2, out=str(tmp_path), **TINY)
    result = run(cfg, progress=False, print_fn=quiet)
    log = read_log(tmp_path / "log.jsonl")
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5]
    assert {"step", "loss", "lr", "grad_norm", "tokens_per_s", "elapsed"} <= set(log[0])
    assert [r["step"] for r in log if "val_loss" in r] == [2, 4, 5]     # every 2 steps and the last
    assert result.val_losses == {r["step"]: r["val_loss"] for r in log if "val_loss" in r}
    assert [r["lr"] for r in log[:2]] == pytest.approx([cfg.lr / 2, cfg.lr])   # warmup 2
    assert all(b["elapsed"] > a["elapsed"] for a, b in zip(log, log[1:]))


def test_validation_loss_uses_the_same_batches_each_time(tmp_path, corpus):
    """Without training in between, two validation losses are equal (fixed, seeded batches)."""
    cfg = PretrainConfig(data=corpus, max_iters=2, eval_interval=1, lr=1e-12, min_lr=0.0, out=str(tmp_path),
                      **{**TINY, "dropout": 0.0, "warmup": 0})
    result = run(cfg, progress=False, print_fn=quiet)
    assert result.val_losses[1] == pytest.approx(result.val_losses[2], abs=1e-6)


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
        PretrainConfig(**{field: value})


def test_empty_and_too_short_corpus(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty.txt.*is empty"):
        run(PretrainConfig(data=str(empty), out=str(tmp_path / "a"), **TINY), progress=False, print_fn=quiet)
    short = tmp_path / "short.txt"
    short.write_text("just a few words of text, " * 4)
    with pytest.raises(ValueError, match=r"short.txt' is too short: 104 tokens give 11 validation tokens, "
                                         r"expected at least block-size \+ 1 = 17"):
        run(PretrainConfig(data=str(short), out=str(tmp_path / "b"), **TINY), progress=False, print_fn=quiet)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_resume_refuses_changed_settings_and_other_data(tmp_path, corpus):
    cfg = PretrainConfig(data=corpus, max_iters=2, lr=2e-3, out=str(tmp_path / "run"), **TINY)
    run(cfg, progress=False, print_fn=quiet)
    with pytest.raises(FileExistsError, match="pass --resume"):
        run(cfg, progress=False, print_fn=quiet)
    with pytest.raises(ValueError, match=r"lr 0.5 \(the run has 0.002\)"):
        resume_config(cfg.out, {"lr": 0.5})
    assert resume_config(cfg.out, {"max_iters": 4}).max_iters == 4
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        resume_config(tmp_path / "elsewhere")
    other = tmp_path / "other.txt"
    other.write_text(default_corpus()[5_000:25_000], encoding="utf-8")
    moved = replace(cfg, data=str(other), max_iters=4)
    with pytest.raises(ValueError, match="not the data the run .* was trained on"):
        run(moved, resume=True, progress=False, print_fn=quiet)


# -- the backend --------------------------------------------------------------------------------

def other_backend() -> str:
    """A backend other than the current one (numpy, or numba where numpy is current)."""
    other = "numba" if kernels.current_backend() == "numpy" else "numpy"
    if other not in kernels.available_backends():
        pytest.skip(f"backend {other} is not available")
    return other


def test_the_run_uses_its_backend_and_restores_the_previous_one(tmp_path, corpus):
    before, other = kernels.current_backend(), other_backend()
    seen = []
    cfg = PretrainConfig(data=corpus, max_iters=2, backend=other, out=str(tmp_path / "a"), **TINY)
    run(cfg, progress=False, print_fn=quiet, on_step=lambda tr, rec: seen.append(kernels.current_backend()))
    assert seen == [other, other] and kernels.current_backend() == before
    assert ckpt_io.load(tmp_path / "a/ckpt.safetensors").meta["backend"] == other
    # also when the run fails
    with pytest.raises(ValueError, match="too short"):
        run(replace(cfg, block_size=10_000, out=str(tmp_path / "b")), progress=False, print_fn=quiet)
    assert kernels.current_backend() == before
