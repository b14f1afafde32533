"""npgpt bench: the roofline's counts, the reports' formats, and the command end to end at tiny
sizes (each test type, every output format, bad arguments, and from an installed copy)."""

from __future__ import annotations

import builtins
import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from npgpt import GPT, GPTConfig
from npgpt.bench import machine, roofline, runner
from npgpt.bench.report import Report, Result
from npgpt.bench.roofline import Roofs
from npgpt.bench.worker import decode_lengths
from npgpt.bench.workloads import MODELS
from npgpt.cli import main

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--threads", "1", "-r", "2", "--prompt", "8", "--gen", "4", "--peak-mib", "4", "--gemm", "64"]


@pytest.mark.parametrize("cfg", [MODELS["baby"].config, MODELS["small"].config,
                                 GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8,
                                           tie_weights=False)])
def test_the_roofline_counts_every_parameter(cfg):
    n, nw = roofline.weights(cfg)
    model = GPT(cfg)
    assert n == model.num_parameters() and nw == n - model.wpe.weight.size


def test_decode_is_bound_by_memory_and_training_by_compute():
    roofs = Roofs(gflops=200.0, gbs=30.0)
    cfg = MODELS["gpt2"].config
    assert roofs.bound(*roofline.decode(cfg, 100))[0] == "memory"
    assert roofs.bound(*roofline.train_step(cfg, 4, 64))[0] == "compute"
    assert roofs.bound(*roofline.prefill(cfg, 64))[0] == "compute"
    flops, nbytes = roofline.decode(cfg, 0)
    # reading every weight once at 30 GB/s takes nbytes / 30e9 seconds: that speed is 100%
    assert roofs.fraction(flops, nbytes, nbytes / 30e9) == pytest.approx(1.0)


def test_decode_lengths_fit_the_context():
    assert decode_lengths(MODELS["gpt2"], 64, 64) == (64, 64)
    assert decode_lengths(MODELS["baby"], 64, 64) == (32, 32)
    assert decode_lengths(MODELS["baby"], 8, 100) == (8, 56)


def test_the_machine_is_described():
    d = machine.describe()
    assert d["cores"] >= 1 and d["cpu"] and d["simd"] and d["blas"]
    assert machine.simd_width({"flags": "sse2 avx avx2 fma"}) == "AVX2 (256-bit)"
    assert machine.simd_width({"flags": "avx2 avx512f"}) == "AVX-512 (512-bit)"


def _report():
    results = [Result("baby", "npgpt-numba", 2, "train", "train 12x64", unit_tokens=768, seconds=[0.05, 0.06],
                      first_s=0.3, flops=5e9, nbytes=4e7, params=810_000, extra={"first_loss": 4.2}),
               Result("-", "npgpt-numba", 2, "peak", "triad", rate=30.5)]
    return Report({"cpu": "x", "cores": 2, "load_average": [1.0, 1.0, 1.0]}, {"2": {"gflops": 200.0, "gbs": 30.5}},
                  results, "npgpt bench --threads 2")


def test_the_table_says_the_threads_each_worker_ran():
    report = _report()
    report.machine["settings"] = {"npgpt-numba 2": {"blas": "openblas 0.3.31 (SkylakeX, 2 threads)"},
                                  "torch-torch 2": {"torch": "2.13.0", "torch_threads": 2}}
    md = Report.from_json(report.to_json()).markdown()
    assert ("Threads as run: npgpt-numba 2: openblas 0.3.31 (SkylakeX, 2 threads); "
            "torch-torch 2: torch, 2 threads\n") in md
    assert "Threads as run" not in _report().markdown()


def test_a_report_round_trips_through_json_and_prints_md_and_csv():
    report = _report()
    assert Report.from_json(report.to_json()) == report
    md = report.markdown()
    assert "| baby | 810 k | npgpt-numba | 2 | train 12x64 | 14080 ± 1810 | 55 | 90.9 | 0.7 | compute | 45% | 0.30 |" in md
    assert "npgpt bench --threads 2" in md
    rows = list(csv.DictReader(io.StringIO(report.csv())))
    assert rows[0]["test"] == "train 12x64" and float(rows[0]["mean t/s"]) == pytest.approx(14080)
    assert rows[1]["GB/s"] == "30.5"


def test_bench_runs_each_test_type_and_its_json_round_trips(capfd, tmp_path):
    """The whole command at tiny sizes: npgpt's side and PyTorch's (where installed), every
    test; the json on stdout loads back into the same report; the plot is drawn."""
    assert main(["bench", "--model", "baby", "--output", "json", "--plot", str(tmp_path / "r.png")] + TINY) == 0
    out, err = capfd.readouterr()
    report = Report.from_json(out)
    assert Report.from_json(report.to_json()) == report
    tests = {(r.impl, r.test) for r in report.results}
    assert {("npgpt-numba", t) for t in ("train", "prefill", "decode", "peak")} <= tests
    assert {r.label for r in report.results if r.test == "peak"} == {"sgemm", "triad", "read"}
    assert all(r.seconds and len(r.seconds) == 2 for r in report.results if r.test != "peak")
    assert report.roofs["1"]["gbs"] > 0 and "baby decode" in err
    if runner.peer.available()["torch"]:
        assert ("torch", "train") in tests
        assert not runner.check_tokens(report)            # greedy: transformers' tokens are npgpt's
    assert (tmp_path / "r.png").is_file() or "needs matplotlib" in err


def test_bench_prints_md_and_csv(capfd):
    assert main(["bench", "--test", "peak"] + TINY) == 0
    out = capfd.readouterr().out
    assert "| - | – | npgpt-numba | 1 | triad | – | – | – |" in out
    assert main(["bench", "--test", "peak", "--output", "csv"] + TINY) == 0
    rows = list(csv.DictReader(io.StringIO(capfd.readouterr().out)))
    assert [r["test"] for r in rows] == ["sgemm", "triad", "read"] and rows[0]["cpu"]


@pytest.mark.parametrize("flags, says", [(["--model", "gpt3"], "--model 'gpt3': expected some of baby"),
                                         (["--test", "train,fly"], "--test 'train,fly': expected some of"),
                                         (["--threads", "0"], "--threads '0': expected numbers >= 1"),
                                         (["--threads", "two"], "--threads 'two': expected comma-separated"),
                                         (["--output", "xml"], "--output 'xml': expected one of md, csv, json"),
                                         (["-r", "0"], "--repetitions '0': expected numbers >= 1")])
def test_bad_arguments_are_one_line_and_exit_2(flags, says, capsys):
    assert main(["bench"] + flags) == 2
    out, err = capsys.readouterr()
    assert not out and err.count("\n") == 1 and says in err


def test_bench_runs_from_an_installed_copy_without_a_checkout(tmp_path):
    """pip install . into a folder, then npgpt bench from elsewhere: no benchmarks/ needed."""
    target = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-q",
                          "--target", str(target), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr[-2000:]
    assert not (target / "benchmarks").exists()
    env = {**os.environ, "PYTHONPATH": str(target)}
    where = subprocess.run([sys.executable, "-c", "import npgpt; print(npgpt.__file__)"], capture_output=True,
                           text=True, cwd=tmp_path, env=env).stdout
    assert where.startswith(str(target))                   # the installed copy, not the checkout
    run = subprocess.run([sys.executable, "-m", "npgpt", "bench", "--test", "peak", "--output", "json"] + TINY,
                         capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert {r["label"] for r in json.loads(run.stdout)["results"]} == {"sgemm", "triad", "read"}
    table = subprocess.run([sys.executable, "-m", "npgpt", "bench", "--model", "baby", "--test", "decode",
                            "--backend", "numpy", "--no-peer"] + TINY, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert table.returncode == 0, table.stderr[-2000:]
    assert "| model | params | impl | threads | test | t/s |" in table.stdout
    assert "| baby | 810 k | npgpt-numpy | 1 | tg4 |" in table.stdout     # numpy: no compile in a fresh copy


def test_the_blas_threads_are_known_without_threadpoolctl(monkeypatch):
    real_import = builtins.__import__

    def no_threadpoolctl(name, *args, **kwargs):
        if name == "threadpoolctl":
            raise ImportError("no threadpoolctl")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_threadpoolctl)
    own = machine.openblas_info()
    if own is None:
        pytest.skip("numpy's BLAS here is not OpenBLAS: nothing to ask")
    assert re.search(r"\d+ threads$", own) and machine.blas() == own


def test_a_plot_into_a_missing_folder_is_refused_before_the_run(capsys, tmp_path):
    missing = tmp_path / "no-such-folder" / "roofline.png"
    assert main(["bench", "--test", "peak", "--plot", str(missing)] + TINY) == 2
    err = capsys.readouterr().err
    assert "--plot" in err and "no-such-folder" in err and "does not exist" in err
    assert "peak:" not in err                                 # nothing was run
