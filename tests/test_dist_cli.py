"""`mpiexec -n P python -m npgpt ...`: the command line under MPI, its refusals, and the plain
command that never loads MPI (tests/test_dist.py has the trajectories and the faults)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from npgpt import checkpoint as ckpt_io
from npgpt.cli import main
from npgpt.trainer import read_log
from tests.test_dist import MPIEXEC, ROOT, mpiexec

pytestmark = pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec (pip install '.[dist]')")

FLAGS = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16", "--batch-size", "4",
         "--warmup", "0", "--eval-interval", "2", "--eval-iters", "1", "--sample-tokens", "0",
         "--backend", "numpy"]


def npgpt_mpmd(*programs, cwd):
    """mpiexec -n 1 [-wdir D] python -m npgpt ARGS : -n 1 ... (one program per rank)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NUMBA_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    cmd = [MPIEXEC]
    for i, (wdir, args) in enumerate(programs):
        cmd += ([":"] if i else []) + ["-n", "1", *(["-wdir", str(wdir)] if wdir else []),
                                       sys.executable, "-m", "npgpt", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def test_train_on_two_processes_from_the_command_line(tmp_path):
    """`mpiexec -n 2 python -m npgpt train --allreduce ring --shard-optimizer`: rank 0 alone
    prints and writes (one log line per step), the checkpoint is a plain AdamW one; --resume
    with more steps continues it."""
    out = tmp_path / "out"
    args = ["-m", "npgpt", "train", *FLAGS, "--max-iters", "4", "--checkpoint-interval", "2",
            "--out", out, "--allreduce", "ring", "--shard-optimizer"]
    done = mpiexec(2, *args, cwd=tmp_path, script=False, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("processes: 2 (mpiexec), each with 2 of the 4 rows") == 1, done.stdout
    assert done.stdout.count("done: step 4") == 1
    assert [r["step"] for r in read_log(out / "log.jsonl")] == [1, 2, 3, 4]
    saved = ckpt_io.load(out / "ckpt.safetensors")
    assert saved.meta["optimizer"]["type"] == "AdamW" and saved.meta["train"]["shard_optimizer"] is True
    done = mpiexec(2, "-m", "npgpt", "train", "--resume", "--out", out, "--max-iters", "6",
                   "--allreduce", "mpi", cwd=tmp_path, script=False, timeout=60)
    assert done.returncode == 0, done.stderr
    assert [r["step"] for r in read_log(out / "log.jsonl")] == [1, 2, 3, 4, 5, 6]


def test_processes_that_disagree_refuse_to_start(tmp_path):
    """Other settings, or other data under the same name, on rank 1: one message, from rank 0,
    naming rank 1 and what differs; nothing written."""
    base = ["train", *FLAGS, "--max-iters", "2", "--out", "out"]
    done = npgpt_mpmd((None, [*base, "--lr", "0.001"]), (None, [*base, "--lr", "0.002"]), cwd=tmp_path)
    assert done.returncode != 0
    assert "rank 1's settings lr=0.002 is not rank 0's 0.001" in done.stderr, done.stderr
    assert done.stderr.count("disagree") == 1
    for name, text in (("a", "one text to learn from. " * 40), ("b", "quite another text here. " * 40)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "in.txt").write_text(text)
    done = npgpt_mpmd((tmp_path / "a", [*base, "--data", "in.txt"]),
                      (tmp_path / "b", [*base, "--data", "in.txt"]), cwd=tmp_path)
    assert done.returncode != 0
    assert "rank 1's data (SHA-256)" in done.stderr, done.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "a" / "out").exists()


@pytest.mark.parametrize("args, message", [
    (["--n-layer", "0"], "n_layer=0 (--n-layer): expected a positive integer"),
    (["--allreduce", "tree"], "allreduce='tree' (--allreduce): expected one of ['mpi', 'ring']"),
    (["--resume"], "--resume: there is no checkpoint"),
])
def test_bad_input_is_said_once(args, message, tmp_path):
    """An error every process meets alike (a setting, a missing checkpoint): one line, from
    rank 0 (not one per process), exit status 2."""
    done = mpiexec(2, "-m", "npgpt", "train", *FLAGS, *args, "--out", tmp_path / "out", cwd=tmp_path,
                   script=False, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count(message) == 1 and done.stderr.count("error:") == 1, done.stderr
    assert "rank 0 of 2" in done.stderr


@pytest.mark.parametrize("args, message", [
    (["--max-iters", "abc"], "argument --max-iters: invalid int value: 'abc'"),
    (["--max-itres", "5"], "unrecognized arguments: --max-itres 5 (did you mean --max-iters?)"),
    (["--help"], "usage: npgpt train"),
])
def test_the_command_lines_own_words_are_said_once(args, message, tmp_path):
    """argparse's usage, help and mistakes, which every process meets alike before any MPI
    starts: printed by rank 0 alone, and every process exits with the same status."""
    done = mpiexec(2, "-m", "npgpt", "train", *args, cwd=tmp_path, script=False, timeout=60)
    assert done.returncode == (0 if args == ["--help"] else 2), done.stderr
    said = done.stdout + done.stderr
    assert said.count(message) == 1 and said.count("usage: npgpt train") == 1, said
    assert not [*tmp_path.iterdir()]


def test_parallel_flags_without_mpiexec_are_noted(tmp_path, capsys, monkeypatch):
    """--shard-optimizer and --allreduce ring in one process change nothing: one note on stderr
    says they apply only under mpiexec; without them, no note."""
    monkeypatch.chdir(tmp_path)
    for name in [*os.environ]:
        if name.startswith(("PMI_", "OMPI_", "MV2_")):
            monkeypatch.delenv(name)
    args = ["train", *FLAGS, "--max-iters", "1", "--eval-interval", "0"]
    assert main([*args, "--out", "a", "--shard-optimizer", "--allreduce", "ring"]) == 0
    noted = [line for line in capsys.readouterr().err.splitlines() if "only under mpiexec" in line]
    assert noted == ["npgpt train: note: --shard-optimizer and --allreduce ring apply only under mpiexec "
                     "-n P (P > 1): this run is one process"]
    assert main([*args, "--out", "b", "--allreduce", "ring"]) == 0
    noted = [line for line in capsys.readouterr().err.splitlines() if "only under mpiexec" in line]
    assert noted == ["npgpt train: note: --allreduce ring applies only under mpiexec -n P (P > 1): this "
                     "run is one process"]
    assert main([*args, "--out", "c"]) == 0
    assert "only under mpiexec" not in capsys.readouterr().err


def test_a_plain_run_never_loads_mpi(tmp_path):
    """Without mpiexec nothing changes: importing npgpt and a whole run load no mpi4py."""
    code = ("import sys, npgpt, npgpt.runs.pretrain as p, npgpt.cli\n"
            "assert 'mpi4py' not in sys.modules\n"
            f"p.run(p.PretrainConfig(out={str(tmp_path / 'o')!r}, n_layer=1, n_head=2, n_embd=16, "
            "block_size=16, batch_size=4, max_iters=2, warmup=0, eval_iters=1, sample_tokens=0, "
            "backend='numpy'), progress=False, print_fn=lambda *a, **k: None)\n"
            "assert 'mpi4py' not in sys.modules, 'a plain run imported mpi4py'\n"
            "print('mpi4py modules:', sorted(m for m in sys.modules if m.split('.')[0] == 'mpi4py'))")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "MV2_"))}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, env={**env, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert "mpi4py modules: []" in done.stdout, done.stdout


def test_ctrl_c_stops_every_process_at_the_same_step(tmp_path):
    """Ctrl-C to mpiexec (which passes SIGINT to every process): all ranks agree on the step to
    stop after, the sharded optimizer's state is gathered, rank 0 saves it; exit status 130."""
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NUMBA_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    cmd = [MPIEXEC, "-n", "2", sys.executable, "-m", "npgpt", "train", *FLAGS, "--max-iters", "100000",
           "--eval-interval", "0", "--checkpoint-interval", "0", "--shard-optimizer", "--out", str(out)]
    with open(tmp_path / "stdout", "w") as stdout, open(tmp_path / "stderr", "w") as stderr:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=stdout, stderr=stderr)
        try:
            deadline = time.monotonic() + 60
            while not ((out / "log.jsonl").exists() and len(read_log(out / "log.jsonl")) >= 2):
                assert time.monotonic() < deadline and proc.poll() is None, (tmp_path / "stderr").read_text()
                time.sleep(0.2)
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=60) == 130, (tmp_path / "stderr").read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
    step = ckpt_io.load(out / "ckpt.safetensors").meta["step"]
    assert step == read_log(out / "log.jsonl")[-1]["step"]
    stopped = re.findall(rf"interrupted by SIG\w+ at step {step}\b", (tmp_path / "stdout").read_text())
    assert len(stopped) == 1, stopped                        # said once, by rank 0
