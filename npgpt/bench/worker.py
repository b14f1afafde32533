"""One side of a benchmark in a process of its own: `python -m npgpt.bench.worker JOB OUT`.

The driver (runner.py) starts one worker per side and thread count: npgpt on one backend, or
the PyTorch peer. A thread pool is fixed when its library loads, so the thread count is set in
the environment before the worker starts (OMP_NUM_THREADS, OPENBLAS_NUM_THREADS,
MKL_NUM_THREADS, NUMBA_NUM_THREADS) and checked here; and npgpt's processes never import torch,
nor torch's npgpt's Numba kernels: two libraries' thread pools in one process slow both.

JOB is a json file: {"side": "npgpt" | "torch", "backend", "threads", "models", "tests",
"repetitions", "prompt", "gen", "peak": {"elements", "gemm"}}; OUT receives {"results": [...],
"roofs": {"gflops", "gbs"} or null, "settings": {...}}. Progress goes to stderr.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import asdict
from pathlib import Path

import numba

from .. import kernels
from . import machine, peak, peer, workloads
from .report import Result
from .workloads import MODELS


def say(job: dict, what: str) -> None:
    side = f"npgpt-{job['backend']}" if job["side"] == "npgpt" else "torch"
    print(f"npgpt bench: {side}, {job['threads']} threads: {what}", file=sys.stderr, flush=True)


def decode_lengths(spec, prompt: int, gen: int) -> tuple[int, int]:
    """The prompt and the new tokens, shortened to fit the model's context (prompt + gen <=
    block_size, so that every step uses the KV cache): for baby (64), 32 and 32."""
    block = spec.config.block_size
    if prompt + gen <= block:
        return prompt, gen
    prompt = min(prompt, block // 2)
    return prompt, min(gen, block - prompt)


def run_npgpt(job: dict) -> tuple[list[Result], dict | None, dict]:
    """npgpt's workloads on job's backend: the peak first (the roofs), then each model's tests."""
    kernels.use_backend(job["backend"])      # the numba backend sets OMP_WAIT_POLICY, then loads
    if numba.get_num_threads() != job["threads"]:     # the triad and the kernels run on these
        raise RuntimeError(f"Numba runs {numba.get_num_threads()} threads: expected {job['threads']}")
    if job["backend"] == "numba" and set(job["tests"]) - {"peak"}:
        say(job, "compiling (or loading) the Numba kernels")
        kernels.get("warmup")(("float32",))
    results, roofs = [], None
    if job.get("peak"):
        results, roofs = measure_peak(job)
    for name in job["models"]:
        for test in job["tests"]:
            if test != "peak":
                results.append(workload(job, name, test, f"npgpt-{job['backend']}"))
    blas = machine.blas()
    ran = re.search(r"(\d+) threads", blas)
    if ran and int(ran.group(1)) != job["threads"]:
        say(job, f"warning: numpy's BLAS runs {blas}, not {job['threads']} threads")
    return results, roofs, {"blas": blas}


def measure_peak(job: dict) -> tuple[list[Result], dict]:
    size = job["peak"]
    say(job, f"peak: sgemm {size['gemm']}, triad over 3 x {4 * size['elements'] / 2**20:.0f} MiB")
    gflops, n = peak.sgemm_gflops(size["gemm"])
    triad = peak.triad_gbs(size["elements"])
    read = peak.read_gbs(3 * size["elements"])          # as many bytes as the triad moves
    rows = [Result("-", f"npgpt-{job['backend']}", job["threads"], "peak", label, rate=rate, extra=extra)
            for label, rate, extra in (("sgemm", gflops, {"n": n}), ("triad", triad, {"elements": size["elements"]}),
                                       ("read", read, {"elements": 3 * size["elements"]}))]
    return rows, {"gflops": gflops, "gbs": triad}


def workload(job: dict, name: str, test: str, impl: str) -> Result:
    spec, reps, threads = MODELS[name], job["repetitions"], job["threads"]
    prompt, gen = decode_lengths(spec, job["prompt"], job["gen"])
    say(job, f"{name} {test}")
    if impl == "torch":
        if test == "train":
            return peer.train(spec, reps, threads)
        if test == "prefill":
            return peer.prefill(spec, prompt, reps, threads)
        return peer.decode(spec, prompt, gen, reps, threads)
    if test == "train":
        return workloads.train(spec, reps, impl, threads)
    if test == "prefill":
        return workloads.prefill(spec, prompt, reps, impl, threads)
    return workloads.decode(spec, prompt, gen, reps, impl, threads)


def run_torch(job: dict) -> tuple[list[Result], None, dict]:
    """The peer's workloads: the twin's training step; transformers' generate where installed."""
    import torch  # optional heavy dependency: the peer, in this process only

    torch.set_num_threads(job["threads"])
    has = peer.available()
    results = []
    for name in job["models"]:
        for test in job["tests"]:
            if test == "peak" or (test != "train" and not has["transformers"]):
                continue
            results.append(workload(job, name, test, "torch"))
    return results, None, {"torch": torch.__version__, "torch_threads": torch.get_num_threads()}


def main(argv=None) -> int:
    job_path, out_path = argv if argv is not None else sys.argv[1:]
    job = json.loads(Path(job_path).read_text())
    run = run_npgpt if job["side"] == "npgpt" else run_torch
    results, roofs, settings = run(job)
    settings["env"] = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                      "MKL_NUM_THREADS", "NUMBA_NUM_THREADS", "OMP_WAIT_POLICY")}
    Path(out_path).write_text(json.dumps({"results": [asdict(r) for r in results], "roofs": roofs,
                                          "settings": settings}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
