"""`npgpt seq2seq train | translate` end to end, exact resume, bad input, and a model that learns."""

import json
from dataclasses import replace

import numpy as np
import pytest

from npgpt import GPT, GPTConfig
from npgpt import checkpoint as ckpt_io
from npgpt import kernels
from npgpt.cli import main
from npgpt.runs import seq2seq
from npgpt.runs.seq2seq import (Seq2SeqConfig, check_pairs, evaluate, load_seq2seq, resume_config,
                                translate_ids, translate_texts)
from npgpt.trainer import read_log
from tests.helpers import interrupt_at, quiet

# a model small enough that a step takes milliseconds
TINY = ["--d-model", "16", "--n-head", "2", "--layers", "1", "--batch-size", "8", "--warmup", "2",
        "--n-train", "200", "--n-test", "20", "--min-len", "3", "--max-len", "6", "--examples", "2"]
# the same as a config; dropout on, so its generators must be restored on resume
TINY_CFG = dict(task="reverse", d_model=16, n_head=2, layers=1, batch_size=8, warmup=2, n_train=200,
                n_test=20, min_len=3, max_len=6, dropout=0.1, examples=0)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny reverse run made through the CLI: its folder."""
    out = str(tmp_path_factory.mktemp("runs") / "reverse")
    assert main(["seq2seq", "train", "--task", "reverse", "--out", out, "--max-iters", "6",
                 "--eval-interval", "3", *TINY]) == 0
    return out


def test_train_writes_logs_checkpoint_and_reports(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["seq2seq", "train", "--task", "reverse", "--out", out, "--max-iters", "6",
                 "--eval-interval", "3", *TINY]) == 0
    printed = capsys.readouterr().out
    assert "data: task 'reverse' (3 to 6 digits, seed 0): 200 train / 20 held-out pairs" in printed
    assert "step 3: held-out exact match" in printed and "val loss" in printed
    assert "held-out exact match:" in printed and "examples (source -> output):" in printed
    assert [r["step"] for r in read_log(f"{out}/log.jsonl")] == list(range(1, 7))
    evals = read_log(f"{out}/eval.jsonl")
    assert [r["step"] for r in evals] == [3, 6] and all(r["n"] == 20 for r in evals)
    meta = ckpt_io.load(f"{out}/ckpt.safetensors").meta
    assert meta["model"] == "Transformer" and meta["config"]["max_len"] == 7      # 6 digits + eos
    assert meta["vocab"] == {"type": "seq2seq", "symbols": "0123456789"}
    assert meta["seq2seq"]["task"] == "reverse" and meta["data"]["n_train"] == 200
    assert set(meta["exact_match"]) == {"3", "6"} and meta["step"] == 6

    # continue the same run for more steps
    assert main(["seq2seq", "train", "--resume", "--out", out, "--max-iters", "8"]) == 0
    assert "resuming" in capsys.readouterr().out
    assert [r["step"] for r in read_log(f"{out}/log.jsonl")] == list(range(1, 9))
    assert [r["step"] for r in read_log(f"{out}/eval.jsonl")] == [3, 6, 8]


def test_translate_from_the_checkpoint(run, tmp_path, capsys):
    capsys.readouterr()
    assert main(["seq2seq", "translate", "--checkpoint", run, "--input", "12345", "--input", "907"]) == 0
    lines = capsys.readouterr().out.split("\n")
    assert len(lines) == 3 and lines[2] == "" and all(set(x) <= set("0123456789") for x in lines[:2])
    model, vocab = load_seq2seq(run)
    assert lines[:2] == translate_texts(model, vocab, ["12345", "907"])       # greedy, the same

    sources = tmp_path / "sources.txt"
    sources.write_text("12345\n907\n")
    assert main(["seq2seq", "translate", "--checkpoint", f"{run}/ckpt.safetensors", "--input-file",
                 str(sources), "--beam-size", "3", "--length-penalty", "0", "--scores"]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    beams, scores = translate_texts(model, vocab, ["12345", "907"], beam_size=3, length_penalty=0.0,
                                    return_scores=True)
    assert [r[0] for r in rows] == beams and [float(r[1]) for r in rows] == pytest.approx(scores, abs=1e-4)


def test_resumed_run_equals_the_uninterrupted_run_exactly(tmp_path):
    cfg = Seq2SeqConfig(max_iters=12, eval_interval=4, checkpoint_interval=4, **TINY_CFG)
    whole = seq2seq.run(replace(cfg, out=str(tmp_path / "whole")), progress=False, print_fn=quiet)
    parts_cfg = replace(cfg, out=str(tmp_path / "parts"))
    first = seq2seq.run(parts_cfg, progress=False, print_fn=quiet, on_step=interrupt_at(7))
    assert first.interrupted and first.step == 7
    rest = seq2seq.run(resume_config(parts_cfg.out), resume=True, progress=False, print_fn=quiet)

    assert not rest.interrupted and rest.step == 12
    assert first.losses + rest.losses == whole.losses          # bit for bit, not approximately
    assert rest.val_losses == whole.val_losses and rest.exact_match == whole.exact_match
    assert rest.final.hypotheses == whole.final.hypotheses
    for name in ("log.jsonl", "eval.jsonl"):
        a, b = read_log(tmp_path / "whole" / name), read_log(tmp_path / "parts" / name)
        assert [r["step"] for r in a] == [r["step"] for r in b]
        assert [r.get("loss", r.get("val_loss")) for r in a] == [r.get("loss", r.get("val_loss")) for r in b]
    a = ckpt_io.load(tmp_path / "whole/ckpt.safetensors")
    b = ckpt_io.load(tmp_path / "parts/ckpt.safetensors")
    assert all(np.array_equal(a.model_state[k], b.model_state[k]) for k in a.model_state)
    assert all(np.array_equal(np.asarray(a.optimizer_state[k]), np.asarray(b.optimizer_state[k]))
               for k in a.optimizer_state)
    assert a.meta["rng"] == b.meta["rng"] and a.meta["batch_rng"] == b.meta["batch_rng"]


def test_tsv_end_to_end(tmp_path, capsys):
    rng = np.random.default_rng(0)
    words = ["".join(rng.choice(list("abcde"), size=rng.integers(2, 6))) for _ in range(50)]
    data = tmp_path / "pairs.tsv"
    data.write_text("".join(f"{w}\t{w[::-1].upper()}\n" for w in words) + "\n")  # a blank line at the end
    out = str(tmp_path / "tsv")
    assert main(["seq2seq", "train", "--data", str(data), "--test-fraction", "0.2", "--out", out,
                 "--max-iters", "4", "--eval-interval", "2", *TINY[:10]]) == 0
    printed = capsys.readouterr().out
    assert "40 train / 10 held-out pairs, vocabulary 14 (10 symbols + 4 specials)" in printed
    meta = ckpt_io.load(f"{out}/ckpt.safetensors").meta
    assert meta["vocab"]["symbols"] == "ABCDEabcde" and meta["data"]["n_test"] == 10
    assert main(["seq2seq", "translate", "--checkpoint", out, "--input", "abc"]) == 0
    assert set(capsys.readouterr().out.strip()) <= set("ABCDEabcde")
    # resuming checks the file is the same one
    data.write_text(data.read_text() + "ab\tBA\n")
    assert main(["seq2seq", "train", "--resume", "--out", out, "--max-iters", "6"]) == 2
    assert "SHA-256 differs" in capsys.readouterr().err


def test_the_config_does_not_rewrite_itself():
    """Neither task nor data: the run trains on "reverse", and the config says so without
    changing its own field."""
    cfg = Seq2SeqConfig()
    assert cfg.task is None and cfg.resolved_task == "reverse"
    assert Seq2SeqConfig(data="pairs.tsv").resolved_task is None


def test_the_run_uses_its_backend_and_restores_the_previous_one(tmp_path):
    before = kernels.current_backend()
    other = "numba" if before == "numpy" else "numpy"
    if other not in kernels.available_backends():
        pytest.skip(f"backend {other} is not available")
    seen = []
    cfg = Seq2SeqConfig(max_iters=2, backend=other, out=str(tmp_path / "run"), **TINY_CFG)
    seq2seq.run(cfg, progress=False, print_fn=quiet, on_step=lambda tr, rec: seen.append(kernels.current_backend()))
    assert seen == [other, other] and kernels.current_backend() == before
    assert ckpt_io.load(tmp_path / "run/ckpt.safetensors").meta["backend"] == other


def test_a_tiny_model_learns_copy(tmp_path):
    cfg = Seq2SeqConfig(task="copy", min_len=1, max_len=5, n_train=2000, n_test=100, d_model=32,
                             n_head=2, layers=1, max_iters=300, batch_size=32, lr=3e-3, warmup=20,
                             eval_interval=0, checkpoint_interval=0, out=str(tmp_path / "copy"), examples=0)
    result = seq2seq.run(cfg, progress=False, print_fn=quiet)
    assert result.final.exact_match >= 0.9, result.final[:3]     # 0.99 at seed 0, in a second or two


# -- bad input: one clear line, exit status 2 ----------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["train", "--task", "divide"], "task='divide' (--task): expected one of ['copy', 'reverse', 'sort', 'addition']"),
    (["train", "--task", "copy", "--data", "x.tsv"], "both given (--task, --data): expected one"),
    (["train", "--seq-len", "6", *TINY],
     "the target has 6 symbols (7 positions with its end-of-sequence token), longer than max_len=6"),
    (["train", "--seq-len", "5", *TINY], "the source has 6 symbols, longer than max_len=5"),
    (["train", "--schedule", "linear"], "schedule='linear' (--schedule): expected one of ['noam', 'cosine', 'constant']"),
    (["train", "--d-model", "30", "--n-head", "4"], "n_head=4 (--n-head): expected a divisor of d-model=30"),
    (["train", "--max-iters", "0"], "max_iters=0 (--max-iters): expected a positive integer"),
    (["train", "--data", "/no/such/pairs.tsv"], "'/no/such/pairs.tsv' does not exist"),
    (["train", "--resume", "--out", "nowhere"], "there is no checkpoint 'nowhere/ckpt.safetensors' to resume"),
    (["translate", "--checkpoint", "/no/such/ckpt.safetensors", "--input", "1"], "does not exist"),
    (["translate", "--checkpoint", "x"], "--input TEXT (repeatable) or --input-file FILE, exactly one"),
])
def test_bad_input_is_one_clear_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["seq2seq", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err


def test_bad_tsv_lines_name_their_line(tmp_path, capsys):
    bad = tmp_path / "bad.tsv"
    bad.write_text("ab\tba\n\nabc\n")
    assert main(["seq2seq", "train", "--data", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "line 3 is 'abc': it has no tab" in capsys.readouterr().err
    long = tmp_path / "long.tsv"
    long.write_text("ab\tba\n" * 5 + "abcdefgh\thgfedcba\n" + "ab\tba\n" * 5)
    assert main(["seq2seq", "train", "--data", str(long), "--seq-len", "5", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"{str(long)!r} line 6: the source has 8 symbols, longer than max_len=5" in err


def test_translate_errors_name_the_problem(run, tmp_path, capsys):
    capsys.readouterr()
    cases = [
        (["--input", "12a4"], "--input ('12a4'): character 'a' at position 2 is not in the model's vocabulary"),
        (["--input", "1", "--input", "1 2"], "--input 2 ('1 2'): character ' ' at position 1"),
        (["--input", "1" * 30], "--input has 30 symbols: longer than the model's max_len=7"),
        (["--input", "12", "--max-len", "50"], "--max-len 50: expected an integer in [1, 7]"),
        (["--input", "12", "--beam-size", "0"], "--beam-size 0: expected an integer >= 1"),
    ]
    for args, message in cases:
        assert main(["seq2seq", "translate", "--checkpoint", run, *args]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    sources = tmp_path / "src.txt"
    sources.write_text("12\n\n34\n")
    assert main(["seq2seq", "translate", "--checkpoint", run, "--input-file", str(sources)]) == 2
    assert "line 2 is empty: expected one source per line" in capsys.readouterr().err
    sources.write_text("12\n3x4\n")
    assert main(["seq2seq", "translate", "--checkpoint", run, "--input-file", str(sources)]) == 2
    assert f"{str(sources)!r} line 2 ('3x4'): character 'x' at position 1" in capsys.readouterr().err


def test_a_checkpoint_that_is_not_seq2seq_is_refused(run, tmp_path, capsys):
    gpt = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8))
    path = ckpt_io.save(tmp_path / "gpt.safetensors", gpt, tokenizer={"type": "char", "chars": "abc"})
    capsys.readouterr()
    assert main(["seq2seq", "translate", "--checkpoint", str(path), "--input", "1"]) == 2
    assert "is not a seq2seq checkpoint: it holds a 'GPT' model (saved by `npgpt train`?)" in capsys.readouterr().err
    (tmp_path / "gptrun").mkdir()
    (tmp_path / "gptrun/ckpt.safetensors").write_bytes(path.read_bytes())
    assert main(["seq2seq", "train", "--resume", "--out", str(tmp_path / "gptrun")]) == 2
    assert "was not saved by `npgpt seq2seq train`" in capsys.readouterr().err
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(open(f"{run}/ckpt.safetensors", "rb").read()[:1000])
    assert main(["seq2seq", "translate", "--checkpoint", str(truncated), "--input", "1"]) == 2
    assert "cut.safetensors" in capsys.readouterr().err
    # training again into the same folder would overwrite the run: refused
    assert main(["seq2seq", "train", "--out", run, "--max-iters", "2", *TINY]) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert main(["seq2seq", "train", "--resume", "--out", run, "--lr", "0.5"]) == 2
    assert "lr 0.5 (the run has 0.001)" in capsys.readouterr().err


def test_token_ids_out_of_range_are_named(run):
    model, vocab = load_seq2seq(run)
    with pytest.raises(ValueError, match=r"sources\[1\]: source token 2 is 99, expected a token id in \[0, 14\)"):
        translate_ids(model, [[4, 5], [4, 5, 99]])
    with pytest.raises(ValueError, match=r"sources\[0\]: source token 0 is -1"):
        translate_ids(model, [[-1]])
    with pytest.raises(ValueError, match=r"pairs\[1\]: target token 0 is 14, expected a token id in \[0, 14\)"):
        evaluate(model, [([4], [5]), ([4], [14])])
    with pytest.raises(ValueError, match=r"pairs\[0\]: the source is empty"):
        check_pairs([([], [4])], 14, 7)
    assert json.dumps(translate_ids(model, [[4, 5, 6]]))          # plain ints
