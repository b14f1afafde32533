"""`npgpt train` and `npgpt sample` end to end, with tiny settings in a temporary folder."""

import json

import pytest

from npgpt.cli import main
from npgpt.data import default_corpus

TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16", "--batch-size", "4",
        "--eval-iters", "2", "--warmup", "2"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "corpus.txt"
    path.write_text(default_corpus()[:20_000], encoding="utf-8")
    return str(path)


def test_train_then_sample(tmp_path, corpus, capsys):
    out = str(tmp_path / "run")
    rc = main(["train", "--data", corpus, "--out", out, "--max-iters", "6", "--eval-interval", "3",
               "--sample-tokens", "20", *TINY])
    printed = capsys.readouterr().out
    assert rc == 0
    assert "step 3: train loss" in printed and "val loss" in printed and "sample (20 tokens" in printed
    log = [json.loads(line) for line in open(f"{out}/log.jsonl")]
    assert [r["step"] for r in log] == list(range(1, 7))

    rc = main(["sample", "--checkpoint", out, "--prompt", "The ", "--max-new-tokens", "25", "--seed", "1"])
    text = capsys.readouterr().out
    assert rc == 0 and text.startswith("The ") and len(text) == len("The ") + 25 + 1    # + newline
    rc = main(["sample", "--checkpoint", f"{out}/ckpt.safetensors", "--prompt", "The ", "--max-new-tokens",
               "25", "--seed", "1", "--no-cache"])
    assert rc == 0 and capsys.readouterr().out == text     # the KV cache changes nothing

    # continue the same run for more steps
    rc = main(["train", "--resume", "--out", out, "--max-iters", "8", "--sample-tokens", "0"])
    assert rc == 0 and "resuming" in capsys.readouterr().out
    assert [json.loads(line)["step"] for line in open(f"{out}/log.jsonl")] == list(range(1, 9))


def test_bpe_tokenizer(tmp_path, corpus, capsys):
    out = str(tmp_path / "bpe")
    rc = main(["train", "--data", corpus, "--out", out, "--max-iters", "2", "--tokenizer", "bpe",
               "--vocab-size", "300", "--sample-tokens", "5", *TINY])
    assert rc == 0 and "bpe tokens (vocabulary 300)" in capsys.readouterr().out
    assert main(["sample", "--checkpoint", out, "--max-new-tokens", "5"]) == 0


@pytest.mark.parametrize("argv, message", [
    (["train", "--max-iters", "0"], "max_iters=0 (--max-iters): expected a positive integer"),
    (["train", "--dropout", "1.5"], "dropout=1.5 (--dropout): expected a number in [0, 1)"),
    (["train", "--data", "/no/such/file.txt"], "'/no/such/file.txt' does not exist"),
    (["sample", "--checkpoint", "/no/such/ckpt.safetensors"], "does not exist"),
    (["sample", "--gpt2", "/no/such/folder"], "is not a directory"),
])
def test_bad_input_is_one_clear_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_sample_errors_name_the_problem(tmp_path, corpus, capsys):
    out = str(tmp_path / "run")
    assert main(["train", "--data", corpus, "--out", out, "--max-iters", "2", "--sample-tokens", "0", *TINY]) == 0
    capsys.readouterr()
    assert main(["sample", "--checkpoint", out, "--prompt", "naïve ☃"]) == 2
    assert "text[2] is 'ï', a character this tokenizer does not know" in capsys.readouterr().err
    assert main(["sample", "--checkpoint", out, "--prompt", "x" * 40, "--no-window"]) == 2
    assert "at most block_size=16" in capsys.readouterr().err
    assert main(["sample", "--checkpoint", out, "--temperature", "-1"]) == 2
    assert "temperature=-1.0" in capsys.readouterr().err
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(open(f"{out}/ckpt.safetensors", "rb").read()[:1000])
    assert main(["sample", "--checkpoint", str(truncated)]) == 2
    assert "cut.safetensors" in capsys.readouterr().err
    # training again into the same folder would overwrite the run: refused
    assert main(["train", "--data", corpus, "--out", out, "--max-iters", "2", *TINY]) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert main(["train", "--resume", "--out", out, "--lr", "0.5"]) == 2
    assert "lr 0.5 (the run has" in capsys.readouterr().err


def test_bench_times_a_step_with_the_compile_apart(tmp_path, capfd):
    """`npgpt bench` runs benchmarks/bench_step.py (here the NumPy backend alone, one step) and
    prints the table, whose columns keep the first step and the compile time apart."""
    argv = ["bench", "--what", "step", "--out", str(tmp_path), "--", "--impls", "npgpt-numpy",
            "--steps", "1", "--warmup", "0", "--no-write"]
    assert main(argv) == 0
    out = capfd.readouterr().out
    assert "bench_step.py" in out.splitlines()[0]
    header = next(line for line in out.splitlines() if line.startswith("| model |"))
    assert "first step s" in header and "compile s" in header
    assert "| baby | npgpt-numpy |" in out


def test_bench_outside_a_checkout_says_where_it_looked(tmp_path, capsys, monkeypatch):
    import npgpt.cli as cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(cli._BENCH, "step", ("no_such_bench.py", []))
    assert main(["bench"]) == 2
    err = capsys.readouterr().err
    assert "benchmarks/no_such_bench.py not found" in err and str(tmp_path) in err


def test_bench_attention_runs_and_plots(tmp_path, capfd):
    """The attention benchmark end to end at a tiny size: every implementation timed, the table
    (and the plot, with matplotlib) written where --out says."""
    argv = ["bench", "--what", "attention", "--out", str(tmp_path), "--", "--T", "16", "--repeats", "1"]
    assert main(argv) == 0
    out = capfd.readouterr().out
    assert "T=   16" in out and "numba fused" in out and "torch" in out
    written = {p.name for p in tmp_path.iterdir()}
    assert written >= {"attention.md", "attention.json"}
    # the plot needs matplotlib (the bench extra, not the test extra): written, or said why not
    assert "attention.png" in written or "matplotlib is not installed: no plot" in out


def test_cuda_check_passes_under_the_simulator():
    """benchmarks/cuda_check.py --tiny: every CUDA kernel against the reference (exit 1 on a
    mismatch), here on numba's simulator."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "cuda_check.py"
    run = subprocess.run([sys.executable, str(script), "--tiny"], capture_output=True, text=True,
                         env={**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "checks passed" in run.stdout
