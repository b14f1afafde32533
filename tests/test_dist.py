"""Data-parallel training under a real `mpiexec -n P` (npgpt.dist): the collectives, the same
trajectory as one process, resuming with another P, faults that end the job, refusals.

Each test starts mpiexec on tests/dist_script.py (or `python -m npgpt`) as a subprocess with a
timeout, one thread per process; the one-process references run here, in the test's process.
Weights are compared with the one-process run on the same global batches:

    float64: max |w_P - w_1| <= 1e-12. The shares' gradients are summed in another order than
             one process's single GEMM over the batch, so the two differ by rounding, ~1e-16
             relative; AdamW's update lr m / (sqrt(v) + eps) divides out the gradient's scale,
             so a few steps carry that to ~1e-15 on most weights (measured: 2e-15). The worst
             are the attention key biases, whose gradient is zero in exact arithmetic (a
             softmax row does not change when one number is added to all its scores): they get
             rounding noise of ~1e-17, and Adam moves them by up to lr * noise / eps per step,
             ~1e-12 with eps 1e-9 (seq2seq's default, the paper's; measured 2.5e-12 after 4
             steps), ~1e-13 with eps 1e-8. The seq2seq case therefore runs with eps 1e-8.
    float32: max |w_P - w_1| <= 2e-5: rounding of ~6e-8 relative in the gradient; where an
             entry is near eps, the update moves by up to lr * its rounding / eps, ~1e-6 per
             step at lr 2e-3 (measured: 8e-7 after 6 steps, on those same key biases).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pytest

from npgpt import checkpoint as ckpt_io
from npgpt.kernels.cpu.blas import blas_threads, openblas_api
from npgpt.runs import finetune, pretrain, seq2seq
from npgpt.runs.skeleton import THREAD_VARIABLES
from npgpt.trainer import read_log

pytest.importorskip("mpi4py")      # the package only: MPI is not started in this process

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "dist_script.py"
MPIEXEC = next((str(p) for p in (Path(sys.executable).parent / "mpiexec",) if p.exists()),
               shutil.which("mpiexec"))
pytestmark = pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec (pip install '.[dist]')")

# A GPT small enough that a run takes a fraction of a second, on a batch 2 processes cannot
# split evenly (5 rows: 2 + 3), so the shares' weights matter.
GPT_RUN = dict(n_layer=1, n_head=2, n_embd=16, block_size=16, batch_size=5, max_iters=6, warmup=1,
               eval_interval=3, eval_iters=1, checkpoint_interval=3, sample_tokens=0,
               dtype="float64", backend="numpy")
SEQ2SEQ_RUN = dict(n_train=200, n_test=10, min_len=3, max_len=8, d_model=16, n_head=2, layers=1,
                   max_iters=4, batch_size=7, warmup=1, eval_interval=4, checkpoint_interval=4,
                   eps=1e-8, examples=0, dtype="float64", backend="numpy")
# A classifier with LoRA adapters: many small runs of parameters (one buffer: dist.Packed).
FINETUNE_RUN = dict(init="none", task="classify", n_layer=1, n_head=2, n_embd=16, block_size=24,
                    lora_rank=2, batch_size=5, max_iters=4, eval_interval=4, checkpoint_interval=4,
                    dtype="float64", backend="numpy")
TOLERANCE = {"float64": 1e-12, "float32": 2e-5}      # see the module docstring


def mpiexec(n: int, *args, cwd, timeout: float = 90, env: dict | None = None, script=True, unset=()):
    """Run `mpiexec -n n python [tests/dist_script.py] args` in cwd; the CompletedProcess.
    One thread per process, unless env says otherwise; unset: variables removed (before env)."""
    base = {**os.environ, "PYTHONPATH": str(ROOT), "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1"}
    env = {**{k: v for k, v in base.items() if k not in unset}, **(env or {})}
    cmd = [MPIEXEC, "-n", str(n), sys.executable, *([str(SCRIPT)] if script else []), *map(str, args)]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def runs_file(tmp_path, entries: list[dict]) -> Path:
    path = tmp_path / f"runs-{len(list(tmp_path.glob('runs-*')))}.json"
    path.write_text(json.dumps(entries))
    return path


def one_process(run: str, settings: dict):
    """The reference: the same run in this process (no MPI)."""
    module, config = {"pretrain": (pretrain, pretrain.PretrainConfig),
                      "seq2seq": (seq2seq, seq2seq.Seq2SeqConfig),
                      "finetune": (finetune, finetune.FinetuneConfig)}[run]
    return module.run(config(**settings), progress=False, print_fn=lambda *a, **k: None)


def assert_same_weights(ours, reference, dtype: str) -> float:
    a, b = ckpt_io.load(ours).model_state, ckpt_io.load(reference).model_state
    assert a.keys() == b.keys()
    worst = max(float(np.max(np.abs(a[k] - b[k]))) for k in a)
    assert worst <= TOLERANCE[dtype], f"{ours}: weights differ from one process's by {worst:.3g}"
    return worst


def test_collectives_two_and_three_processes(tmp_path):
    """The ring and MPI all-reduce equal np.sum for sizes that P does and does not divide (0 and
    1 included), every rank ends with the same bits; the all-gathers; ZeRO-1's moment bytes per
    rank are 1/P of AdamW's (to one number)."""
    for n in (2, 3):          # 3 on 2 cores: mpich runs oversubscribed
        done = mpiexec(n, "collectives", cwd=tmp_path, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "ok: moments" in done.stdout


def test_same_weights_as_one_process(tmp_path):
    """P = 2 with the MPI and the ring all-reduce, with the sharded optimizer, float64 and
    float32 (Numba's fused AdamW), a GPT, a seq2seq Transformer (shares weighted by their target
    tokens) and a LoRA classifier: the same weights as one process on the same global batches (to
    the module docstring's bounds), and the same losses; every rank the same bits."""
    cases = [("pretrain", {**GPT_RUN, "allreduce": "mpi"}),
             ("pretrain", {**GPT_RUN, "allreduce": "ring"}),
             ("pretrain", {**GPT_RUN, "allreduce": "ring", "shard_optimizer": True}),
             ("pretrain", {**GPT_RUN, "dtype": "float32", "shard_optimizer": True, "backend": "numba"}),
             ("seq2seq", {**SEQ2SEQ_RUN, "allreduce": "ring"}),
             ("finetune", {**FINETUNE_RUN, "allreduce": "ring", "shard_optimizer": True})]
    entries = [{"run": run, "settings": {**s, "out": str(tmp_path / f"p2-{i}")}} for i, (run, s) in enumerate(cases)]
    done = mpiexec(2, "runs", runs_file(tmp_path, entries), cwd=tmp_path, timeout=300)   # Numba may compile
    assert done.returncode == 0, done.stderr
    for i, (run, settings) in enumerate(cases):
        one = {k: v for k, v in settings.items() if k not in ("allreduce", "shard_optimizer")}
        one_process(run, {**one, "out": str(tmp_path / f"p1-{i}")})
        assert_same_weights(tmp_path / f"p2-{i}" / "ckpt.safetensors", tmp_path / f"p1-{i}" / "ckpt.safetensors",
                            settings["dtype"])
        ours, ref = read_log(tmp_path / f"p2-{i}" / "log.jsonl"), read_log(tmp_path / f"p1-{i}" / "log.jsonl")
        assert [r["step"] for r in ours] == [r["step"] for r in ref]       # rank 0 alone wrote it
        np.testing.assert_allclose([r["loss"] for r in ours], [r["loss"] for r in ref],
                                   rtol=1e-12 if settings["dtype"] == "float64" else 1e-5)


def test_killed_rank_ends_the_job_and_another_p_resumes(tmp_path):
    """Rank 1 SIGKILLs itself at step 4: the job ends (no hang) with the launcher's message, the
    checkpoint is step 3's, and one process resuming it ends where an uninterrupted one-process
    run does."""
    out = tmp_path / "killed"
    entry = {"run": "pretrain", "settings": {**GPT_RUN, "out": str(out)}}
    done = mpiexec(2, "fault", "kill", 4, runs_file(tmp_path, [entry]), cwd=tmp_path, timeout=60)
    assert done.returncode != 0
    assert "signal 9" in done.stdout + done.stderr or "KILLED" in done.stdout + done.stderr, done.stderr
    assert ckpt_io.load(out / "ckpt.safetensors").meta["step"] == 3
    pretrain.run(pretrain.resume_config(out), resume=True, progress=False, print_fn=lambda *a, **k: None)
    one_process("pretrain", {**GPT_RUN, "out": str(tmp_path / "one")})
    assert_same_weights(out / "ckpt.safetensors", tmp_path / "one" / "ckpt.safetensors", "float64")


def test_raising_rank_ends_the_job_and_three_processes_resume(tmp_path):
    """Rank 1 raises at step 4 of a sharded run: every process ends with a message naming rank
    1 and the error, the checkpoint is step 3's (gathered from the shards, readable by one
    process), and 3 processes resuming it end where one process does."""
    out = tmp_path / "raised"
    settings = {**GPT_RUN, "out": str(out), "shard_optimizer": True, "allreduce": "ring"}
    done = mpiexec(2, "fault", "raise", 4, runs_file(tmp_path, [{"run": "pretrain", "settings": settings}]),
                   cwd=tmp_path, timeout=60)
    assert done.returncode != 0
    assert "rank 1 of 2" in done.stderr and "rank 1 fails on purpose at step 4" in done.stderr, done.stderr
    saved = ckpt_io.load(out / "ckpt.safetensors")
    assert saved.meta["step"] == 3 and saved.meta["optimizer"]["type"] == "AdamW"
    resumed = {"run": "pretrain", "resume": True, "settings": {"out": str(out)}}
    done = mpiexec(3, "runs", runs_file(tmp_path, [resumed]), cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
    one_process("pretrain", {**GPT_RUN, "out": str(tmp_path / "one")})
    assert_same_weights(out / "ckpt.safetensors", tmp_path / "one" / "ckpt.safetensors", "float64")


def test_hanging_rank_ends_the_job_after_the_timeout(tmp_path):
    """Rank 1 sleeps at step 2: rank 0's watchdog ends the job after NPGPT_DIST_TIMEOUT s."""
    entry = {"run": "pretrain", "settings": {**GPT_RUN, "out": str(tmp_path / "hung")}}
    done = mpiexec(2, "fault", "hang", 2, runs_file(tmp_path, [entry]), cwd=tmp_path, timeout=60,
                   env={"NPGPT_DIST_TIMEOUT": "3"})
    assert done.returncode != 0
    assert "rank 0 of 2): waited" in done.stderr and "died or hangs" in done.stderr, done.stderr




def test_processes_on_one_machine_share_its_cores(tmp_path):
    """mpiexec -n 2 with no thread variable set: each rank runs Numba and OpenBLAS on
    cores // 2 threads (not on every core each: 2 ranks x all the cores take turns and run
    several times slower), said once, by rank 0; a NUMBA_NUM_THREADS the user set is kept, and
    then nothing is said."""
    share = max(1, os.cpu_count() // 2)
    default = numba.config.NUMBA_DEFAULT_NUM_THREADS          # what each rank would start with
    entry = runs_file(tmp_path, [{"run": "pretrain", "settings": {**GPT_RUN, "out": str(tmp_path / "a"),
                                                                  "max_iters": 2}}])
    done = mpiexec(2, "threads", entry, cwd=tmp_path, timeout=120, unset=THREAD_VARIABLES)
    assert done.returncode == 0, done.stderr
    counts = json.loads(done.stdout.split("threads: ", 1)[1].splitlines()[0])
    assert counts["numba"] == [min(share, default)] * 2, done.stdout
    if share < default:
        assert counts["blas"] in ([share] * 2, [None] * 2), done.stdout
        assert done.stderr.count(f"note: 2 processes on {os.cpu_count()} cores: {share} thread") == 1, done.stderr
    entry = runs_file(tmp_path, [{"run": "pretrain", "settings": {**GPT_RUN, "out": str(tmp_path / "b"),
                                                                  "max_iters": 2}}])
    done = mpiexec(2, "threads", entry, cwd=tmp_path, timeout=120, unset=THREAD_VARIABLES,
                   env={"NUMBA_NUM_THREADS": "2"})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.split("threads: ", 1)[1].splitlines()[0])["numba"] == [2, 2], done.stdout
    assert "processes on" not in done.stderr, done.stderr


def test_blas_threads_without_threadpoolctl(monkeypatch):
    """Without threadpoolctl (not a dependency of npgpt) the BLAS threads are set through
    OpenBLAS's own openblas_set_num_threads, and put back on leaving."""
    get = openblas_api("get_num_threads")
    if get is None:
        pytest.skip("numpy's BLAS is not OpenBLAS")
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)      # `import threadpoolctl` fails
    before = get()
    target = 2 if before == 1 else 1
    with blas_threads(target):
        assert get() == target
    assert get() == before


def test_cost_model_prints_no_negative_zero(monkeypatch):
    """benchmarks/bench_dist.py's cost model: one process sends nothing, so its comm ms is 0.00,
    never the -0.00 of a difference of rounded times (GPT-2's compute minus itself)."""
    monkeypatch.setenv("NPGPT_BENCH_NO_TORCH", "1")       # what the script sets on import, undone after
    monkeypatch.setattr(sys, "path", list(sys.path))      # the script puts benchmarks/ on it
    spec = importlib.util.spec_from_file_location("bench_dist", ROOT / "benchmarks" / "bench_dist.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    n, scale = 814_720, bench.GPT2_PARAMS / 814_720       # the baby's parameters; its measured times
    bases = [{"name": "baby", "compute": 0.0741, "update": 0.0015, "n": n, "tokens": 1024},
             {"name": "gpt2", "compute": 0.0741 * scale * 8, "update": 0.0015 * scale,
              "n": bench.GPT2_PARAMS, "tokens": 8192}]
    rows = [r for base in bases for r in bench.model_rows(base, bench.LINKS)]
    assert ["{:,.2f}".format(r["comm ms"]) for r in rows if r["P"] == 1] == ["0.00"] * 6
    assert all(r["comm ms"] > 0 for r in rows if r["P"] > 1)
