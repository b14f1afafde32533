"""The scripts of benchmarks/ that build on npgpt.bench, end to end at tiny sizes: they run, print
their tables and write their results where NPGPT_BENCH_RESULTS says."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from npgpt.bench.report import Report

ROOT = Path(__file__).resolve().parents[2]


def _script(name, *flags, results):
    env = {**os.environ, "NPGPT_BENCH_RESULTS": str(results)}
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), *flags], capture_output=True,
                         text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    return run


def test_bench_cpu_writes_the_table_the_report_and_the_plot(tmp_path):
    _script("bench_cpu.py", "--model", "baby", "--test", "train,decode,peak", "--threads", "1", "-r", "1",
            "--prompt", "4", "--gen", "2", "--peak-mib", "4", "--gemm", "64", "--no-peer", results=tmp_path)
    report = Report.from_json((tmp_path / "bench.json").read_text())
    assert {r.test for r in report.results} == {"train", "decode", "peak"}
    assert "| baby |" in (tmp_path / "bench.md").read_text()
    assert "bench_cpu.py --model baby" in report.command


def test_bench_decode_compares_the_tokens(tmp_path):
    pytest.importorskip("transformers")
    run = _script("bench_decode.py", "--model", "baby", "--prompt", "8", "--gen", "4", "--rounds", "1",
                  "--repetitions", "1", "--threads", "1", results=tmp_path)
    text = (tmp_path / "decode.md").read_text()
    assert "| npgpt-numba | tg4 |" in text and "| transformers | tg4 |" in text
    assert "Same greedy tokens: yes" in text and text in run.stdout


def test_bench_twin_times_each_variant(tmp_path):
    pytest.importorskip("torch")
    run = _script("bench_twin.py", "--models", "baby", "--rounds", "1", "--steps", "1", "--threads", "1",
                  "--variants", "twin,passive,head-transposed", results=tmp_path)
    assert "| baby | passive |" in run.stdout and (tmp_path / "twin.md").is_file()
