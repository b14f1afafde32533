"""The driver: one worker process per side and thread count, their results in one Report.

    plan = Plan(models=["baby"], tests=["train", "decode", "peak"], threads=[1, 2])
    report = run(plan)                         # progress on stderr
    print(report.markdown())

For each thread count, in turn: npgpt on each backend (the first also measures the machine's
peaks, the roofs every workload is held against), then the PyTorch peer where torch is
installed. Each is a fresh process (worker.py) whose thread pools are sized by the environment
it starts with; the rest of the environment is the user's as it was when this module was
imported, so nothing npgpt sets for its own threads (OMP_WAIT_POLICY) reaches the peer's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from . import machine, peer
from .report import Report, Result
from .workloads import MODELS

USER_ENV = dict(os.environ)       # before anything in this process could change it
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


@dataclass
class Plan:
    models: list = field(default_factory=lambda: ["baby"])
    tests: list = field(default_factory=lambda: ["train", "prefill", "decode", "peak"])
    threads: list = field(default_factory=lambda: [os.cpu_count() or 1])
    repetitions: int = 5
    prompt: int = 64                  # prefill: prompt tokens (shortened to fit a model's context)
    gen: int = 64                     # decode: new tokens after the first
    backends: list = field(default_factory=lambda: ["numba"])
    peer: bool = True                 # time PyTorch too, where it is installed
    peak_elements: int = 1 << 26      # the triad's arrays (float32 elements each)
    gemm: list = field(default_factory=lambda: [1024, 2048])


def jobs(plan: Plan, threads: int) -> list[dict]:
    """The worker jobs for one thread count: npgpt per backend, then the peer (if any)."""
    base = {"threads": threads, "models": plan.models, "tests": plan.tests, "repetitions": plan.repetitions,
            "prompt": plan.prompt, "gen": plan.gen}
    out = [{**base, "side": "npgpt", "backend": b,
            "peak": {"elements": plan.peak_elements, "gemm": plan.gemm} if i == 0 else None}
           for i, b in enumerate(plan.backends)]
    if plan.peer and peer.available()["torch"] and set(plan.tests) - {"peak"}:
        out.append({**base, "side": "torch", "backend": "torch", "peak": None})
    return out


def launch(job: dict) -> dict:
    """Run one worker with job's thread count; return what it wrote. A failed worker is a
    RuntimeError naming the side and its exit status (its own error went to stderr)."""
    env = {**USER_ENV, **{v: str(job["threads"]) for v in THREAD_VARIABLES}}
    with tempfile.TemporaryDirectory(prefix="npgpt-bench-") as tmp:
        job_path, out_path = Path(tmp) / "job.json", Path(tmp) / "out.json"
        job_path.write_text(json.dumps(job))
        cmd = [sys.executable, "-m", "npgpt.bench.worker", str(job_path), str(out_path)]
        done = subprocess.run(cmd, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"the {job['side']} worker ({job['threads']} threads) failed with exit "
                               f"status {done.returncode} (its error is above)")
        return json.loads(out_path.read_text())


def run(plan: Plan, command: str = "") -> Report:
    """Every job of the plan, thread count by thread count; the machine described around them."""
    described = machine.describe()
    results, roofs, settings = [], {}, {}
    for threads in plan.threads:
        for job in jobs(plan, threads):
            out = launch(job)
            results += [Result(**r) for r in out["results"]]
            if out["roofs"]:
                roofs[str(threads)] = out["roofs"]
            settings[f"{job['side']}-{job['backend']} {threads}"] = out["settings"]
    if "peak" not in plan.tests:
        results = [r for r in results if r.test != "peak"]
    described["load_average_after"] = machine.load_average()
    described["settings"] = settings
    return Report(described, roofs, results, command)


def command_of(plan: Plan) -> str:
    """The `npgpt bench` command line that runs plan again."""
    def join(xs):
        return ",".join(map(str, xs))
    flags = [f"--model {join(plan.models)}", f"--test {join(plan.tests)}", f"--threads {join(plan.threads)}",
             f"--repetitions {plan.repetitions}", f"--prompt {plan.prompt}", f"--gen {plan.gen}",
             f"--backend {join(plan.backends)}", f"--peak-mib {plan.peak_elements * 4 // 2 ** 20}",
             f"--gemm {join(plan.gemm)}"] + ([] if plan.peer else ["--no-peer"])
    return "npgpt bench " + " ".join(flags)


def check_tokens(report: Report) -> list[str]:
    """Where npgpt's greedy tokens differ from transformers' on the same weights: one line each."""
    lines = []
    decodes = [r for r in report.results if r.test == "decode"]
    for r in decodes:
        if r.impl != "transformers":
            continue
        for mine in (m for m in decodes if m.impl.startswith("npgpt") and (m.model, m.threads) == (r.model, r.threads)):
            if mine.extra.get("tokens") != r.extra.get("tokens"):
                lines.append(f"{r.model}, {r.threads} threads: {mine.impl}'s greedy tokens differ from "
                             f"transformers' ({mine.extra.get('tokens')[:8]}... vs {r.extra.get('tokens')[:8]}...)")
    return lines


def known(kind: str, given: list, choices) -> list:
    """given, if every entry is one of choices; else a ValueError naming the bad ones."""
    bad = [g for g in given if g not in choices]
    if bad or not given:
        raise ValueError(f"--{kind} {','.join(map(str, given))!r}: expected some of {', '.join(map(str, choices))}")
    return given


MODEL_NAMES = tuple(MODELS)
