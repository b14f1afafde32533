"""Data parallelism on this machine: P = 1 and 2 processes of one thread each against one
process of two threads, the time the all-reduce takes, and a cost model for larger P and slower
links.

    python benchmarks/bench_dist.py                    # 3 rounds, writes results/dist.md, dist.json
    python benchmarks/bench_dist.py --rounds 1 --steps 10 --no-write

The configurations (each a fresh process, or a fresh `mpiexec -n 2` job; they take turns, round
after round, so that a change in the machine's load hits all of them alike):

    1 proc x 1 thread          python, NUMBA_NUM_THREADS = OPENBLAS_NUM_THREADS = 1
    1 proc x 2 threads         the same with 2 threads: what one process gets from 2 cores
    2 procs x 1 thread, mpi    mpiexec -n 2, each its half of the batch, MPI_Allreduce
    2 procs x 1 thread, ring   the same with npgpt.dist.ring's all-reduce
    2 procs x 1 thread, ZeRO-1 MPI_Allreduce and ShardedAdamW (half the moments each)

A step is the training step of npgpt's Trainer, timed in phases: forward + backward of this
process's share ("compute"), the sum of the loss and the all-reduce of the gradient ("sync",
including any wait for the slower rank), the clip and AdamW ("update", with ZeRO-1 the update
of a half and the all-gather of the weights). The model is the baby GPT (4 layers, 4 heads, 128
wide, vocabulary 65; 0.8 M parameters), float32, Numba backend, a global batch of B = 16
sequences of T = 64 tokens (random ids: the speed does not depend on them).

The all-reduce alone, for buffers of 1 K to 4 M numbers (float32, both methods, 2 processes),
gives this machine's latency and bandwidth through shared memory: t = alpha + bytes / bw, where
bytes = 2 (P - 1) / P * n * 4 is what each rank sends. The cost model then predicts one step on P
processes of one core each, linked by a network of latency alpha and bandwidth bw:

    T(P) = C / P + U + 2 (P - 1) alpha + 2 (P - 1) / P * n * 4 / bw

with C the compute of the global batch on one core and U the update (every rank updates the whole
model), both measured here with 1 proc x 1 thread; the network's alpha and bw are nominal figures
of common links, not measured. Writes results/dist.md and dist.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("NPGPT_BENCH_NO_TORCH", "1")      # torch is no peer here: never imported
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import common  # noqa: E402

ROOT = HERE.parent
MODEL = dict(vocab_size=65, n_layer=4, n_head=4, n_embd=128, block_size=64)
B, T = 16, 64
CONFIGS = {   # name: (processes, threads, allreduce, shard)
    "1 proc x 1 thread": (1, 1, "mpi", False),
    "1 proc x 2 threads": (1, 2, "mpi", False),
    "2 procs x 1 thread, mpi": (2, 1, "mpi", False),
    "2 procs x 1 thread, ring": (2, 1, "ring", False),
    "2 procs x 1 thread, ZeRO-1": (2, 1, "mpi", True),
}
SIZES = (1_000, 10_000, 100_000, 1_000_000, 4_000_000)
# Nominal links (latency per message s, bandwidth bytes/s): typical figures, not measured here.
LINKS = {"100 Gb/s (InfiniBand, RoCE)": (2e-6, 12.5e9), "10 Gb/s Ethernet": (30e-6, 1.25e9),
         "1 Gb/s Ethernet": (50e-6, 0.125e9)}
P_MODEL = (1, 2, 4, 8, 16)
GPT2_PARAMS = 124_439_808        # GPT-2 small, for the cost model's second table


# --------------------------------------------------------------------------------------------
# Workers (run in their own processes)
# --------------------------------------------------------------------------------------------

def train_worker(allreduce: str, shard: bool, steps: int, warmup: int) -> None:
    """Time `steps` training steps in phases; rank 0 prints one JSON line."""
    import numpy as np

    from npgpt import GPT, GPTConfig, dist, kernels
    from npgpt.kernels import cpu
    from npgpt.optim import AdamW, clip_grad_norm

    kernels.use_backend("numba")
    cpu.warmup(("float32",))
    group = dist.DataParallel(dist.world(), allreduce) if dist.launched() else None
    model = GPT(GPTConfig(**MODEL), seed=0)
    opt = (dist.ShardedAdamW(model.parameters(), group.comm, allreduce) if group and shard
           else AdamW(model.parameters(), lr=1e-3, weight_decay=0.1))
    rng = np.random.default_rng(0)
    times = {"compute": [], "sync": [], "update": [], "step": []}
    for i in range(warmup + steps):
        ids = rng.integers(0, MODEL["vocab_size"], (B, T + 1))
        batch = (ids[:, :-1], ids[:, 1:])
        t0 = time.perf_counter()
        share = group.share(batch) if group else dist.Share(batch, 1.0, B * T)
        loss = model.forward(*share.batch)[1]
        opt.zero_grad()
        model.backward()
        t1 = time.perf_counter()
        if group:
            group.comm.sum([share.weight * loss])
            group.sync_gradients(opt, share)
        t2 = time.perf_counter()
        clip_grad_norm(opt, 1.0)
        opt.step()
        t3 = time.perf_counter()
        if i >= warmup:
            for key, dt in (("compute", t1 - t0), ("sync", t2 - t1), ("update", t3 - t2), ("step", t3 - t0)):
                times[key].append(dt)
    if group is None or group.writer:
        print(json.dumps({"n_params": int(sum(p.size for p in model.parameters())),
                          **{k: statistics.median(v) for k, v in times.items()},
                          "step_min": min(times["step"])}), flush=True)


def allreduce_worker(reps: int) -> None:
    """Time the all-reduce alone (after a barrier, so no wait for a slower rank is counted)."""
    import numpy as np

    from npgpt import dist
    comm = dist.world()
    rows = []
    for method in dist.METHODS:
        for n in SIZES:
            buf = np.ones(n, dtype=np.float32)
            samples = []
            for _ in range(reps):
                comm.comm.Barrier()
                t = time.perf_counter()
                comm.allreduce(buf, method)
                samples.append(time.perf_counter() - t)
            rows.append({"method": method, "n": n, "seconds": statistics.median(samples)})
    if comm.rank == 0:
        print(json.dumps(rows), flush=True)


# --------------------------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------------------------

def launch(procs: int, threads: int, worker_args: list[str], timeout: float = 600) -> str:
    """Run this script as a worker (under mpiexec -n procs when procs > 1); its last line."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NUMBA_NUM_THREADS": str(threads),
           "OPENBLAS_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
    python = [sys.executable, __file__, *worker_args]
    mpiexec = str(Path(sys.executable).parent / "mpiexec")
    cmd = [mpiexec, "-n", str(procs), *python] if procs > 1 else python
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return done.stdout.strip().splitlines()[-1]


def fit_link(rows: list[dict], method: str, n: int, procs: int = 2) -> tuple[float, float]:
    """(alpha per message, bw bytes/s) of this machine: alpha from the smallest buffer (its time
    is latency: 2 (P - 1) messages), bw from the buffer nearest n numbers (the model's gradient:
    a line fitted through all sizes would follow the largest, which no longer fit in cache)."""
    mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["n"])
    near = min(mine, key=lambda r: abs(r["n"] - n))
    return mine[0]["seconds"] / (2 * (procs - 1)), 2 * (procs - 1) / procs * near["n"] * 4 / near["seconds"]


def comm_model(n: int, P: int, alpha: float, bw: float) -> float:
    """The all-reduce's part of T(P) (seconds): exactly 0 for P = 1 (computed on its own, not as
    T(P) minus the rest, whose rounding printed -0.00)."""
    return 2 * (P - 1) * alpha + 2 * (P - 1) / P * n * 4 / bw


def step_model(compute: float, update: float, n: int, P: int, alpha: float, bw: float) -> float:
    """T(P) of the module docstring (seconds)."""
    return compute / P + update + comm_model(n, P, alpha, bw)


def model_rows(base: dict, links: dict) -> list[dict]:
    rows = []
    for link, (alpha, bw) in links.items():
        t1 = step_model(base["compute"], base["update"], base["n"], 1, alpha, bw)
        for P in P_MODEL:
            tp = step_model(base["compute"], base["update"], base["n"], P, alpha, bw)
            rows.append({"model": base["name"], "link": link, "P": P, "step ms": 1e3 * tp,
                         "comm ms": 1e3 * comm_model(base["n"], P, alpha, bw),
                         "tokens/s": base["tokens"] / tp, "speed-up": t1 / tp,
                         "efficiency %": 100 * t1 / tp / P})
    return rows


def measure(args) -> tuple[list[dict], list[dict]]:
    """Rounds of every configuration, then the all-reduce sizes: (config rows, all-reduce rows)."""
    results = {name: [] for name in CONFIGS}
    for r in range(args.rounds):
        for name, (procs, threads, allreduce, shard) in CONFIGS.items():
            line = launch(procs, threads, ["--worker", "train", "--allreduce", allreduce,
                                           *(["--shard"] if shard else []), "--steps", str(args.steps),
                                           "--warmup", str(args.warmup)])
            results[name].append(json.loads(line))
            print(f"  round {r + 1}: {name:28s} step {1e3 * results[name][-1]['step']:7.1f} ms", flush=True)
    rows = []
    for name, runs in results.items():
        procs, threads, allreduce, shard = CONFIGS[name]
        med = {k: statistics.median(run[k] for run in runs) for k in ("compute", "sync", "update", "step")}
        rows.append({"config": name, "processes": procs, "threads": threads, "step ms": 1e3 * med["step"],
                     "range ms": f"{1e3 * min(x['step'] for x in runs):.1f}–{1e3 * max(x['step'] for x in runs):.1f}",
                     "compute ms": 1e3 * med["compute"], "sync ms": 1e3 * med["sync"] if procs > 1 else None,
                     "update ms": 1e3 * med["update"], "tokens/s": B * T / med["step"],
                     "n_params": runs[0]["n_params"]})
    base = rows[0]["step ms"]
    for row in rows:
        row["vs 1x1"] = base / row["step ms"]
    allreduce = json.loads(launch(2, 1, ["--worker", "allreduce", "--reps", str(args.reps)]))
    return rows, allreduce


def report(rows, allreduce, args, load_before: float) -> None:
    n = rows[0]["n_params"]
    ar_table = common.markdown_table(
        ["method", "n", "MB sent per rank", "ms", "GB/s"],
        [{**r, "MB sent per rank": r["n"] * 4 / 1e6, "ms": 1e3 * r["seconds"],
          "GB/s": r["n"] * 4 / r["seconds"] / 1e9} for r in allreduce],
        {"n": "{:,}", "MB sent per rank": "{:.3f}", "ms": "{:.3f}", "GB/s": "{:.2f}"})
    alpha, bw = fit_link(allreduce, "mpi", n)
    one = next(r for r in rows if r["config"] == "1 proc x 1 thread")
    links = {"this machine (shared memory, fitted)": (alpha, bw), **LINKS}
    baby = {"name": "baby, B=16", "compute": one["compute ms"] / 1e3, "update": one["update ms"] / 1e3,
            "n": n, "tokens": B * T}
    # GPT-2 small at 8 x 1024 tokens per step: the compute scaled from the baby's by parameters
    # (6 N FLOPs per token; the attention's share is ignored), the update by parameters
    scale = GPT2_PARAMS / n
    gpt2 = {"name": "GPT-2 124M, B=8 x 1024", "compute": baby["compute"] * scale * 8 * 1024 / (B * T),
            "update": baby["update"] * scale, "n": GPT2_PARAMS, "tokens": 8 * 1024}
    predicted = model_rows(baby, links) + model_rows(gpt2, links)
    table = common.markdown_table(
        ["config", "step ms", "range ms", "compute ms", "sync ms", "update ms", "tokens/s", "vs 1x1"], rows,
        {"step ms": "{:.1f}", "compute ms": "{:.1f}", "sync ms": "{:.2f}", "update ms": "{:.1f}",
         "tokens/s": "{:,.0f}", "vs 1x1": "{:.2f}x"})
    model_table = common.markdown_table(
        ["model", "link", "P", "step ms", "comm ms", "tokens/s", "speed-up", "efficiency %"], predicted,
        {"step ms": "{:,.1f}", "comm ms": "{:,.2f}", "tokens/s": "{:,.0f}", "speed-up": "{:.2f}",
         "efficiency %": "{:.0f}"})
    env = common.environment()
    env.update(load_average_before=round(load_before, 2), load_average_after=round(os.getloadavg()[0], 2),
               mpich=_mpich_version(), rounds=args.rounds, steps=args.steps)
    notes = (f"Command: `python benchmarks/bench_dist.py{' ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else ''}`"
             f"\n\nThe baby GPT ({n:,} parameters, float32, Numba), a global batch of {B} x {T} tokens, "
             f"median of {args.steps} steps per run after {args.warmup}, median of {args.rounds} rounds. "
             f"This machine is shared with other work (load average {load_before:.2f} before, "
             f"{env['load_average_after']} after): the spread is the range over rounds.")
    more = (f"The all-reduce alone (2 processes, shared memory; 'MB sent per rank' = 2 (P-1)/P n 4 bytes "
             f"= n 4 bytes at P = 2). The cost model takes this machine's link as {alpha * 1e6:.1f} us "
             f"a message (the smallest buffer's time over its 2 messages) and {bw / 1e9:.2f} GB/s (MPI's "
             f"rate at the size nearest the model's gradient, {n:,} numbers):"
             f"\n\n{ar_table}\n\nThe cost model (see the script): one step on P processes of one core, "
             f"compute C = {one['compute ms']:.1f} ms and update U = {one['update ms']:.1f} ms measured "
             f"with 1 proc x 1 thread; GPT-2's scaled by parameters and tokens; the links' latency and "
             f"bandwidth are nominal (100 Gb/s: 2 us, 12.5 GB/s; 10 GbE: 30 us, 1.25 GB/s; 1 GbE: 50 us, "
             f"0.125 GB/s).\n\n{model_table}")
    print(table + "\n\n" + more)
    if not args.no_write:
        md, js = common.write_results("dist", "Data-parallel training over MPI: 2 cores", env,
                                      table + "\n\n" + more,
                                      {"configs": rows, "allreduce": allreduce, "model": predicted}, notes)
        print(f"wrote {md} and {js}")


def _mpich_version() -> str | None:
    try:
        out = subprocess.run([str(Path(sys.executable).parent / "mpiexec"), "--version"],
                             capture_output=True, text=True, timeout=30).stdout
        return next((line.split(":", 1)[1].strip() for line in out.splitlines() if "Version" in line), None)
    except (OSError, subprocess.SubprocessError):
        return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--reps", type=int, default=20, help="repetitions per all-reduce size")
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--wait", type=float, default=120,
                   help="seconds to wait for a load average under 2.5 first (a shared machine)")
    p.add_argument("--worker", choices=("train", "allreduce"), help=argparse.SUPPRESS)
    p.add_argument("--allreduce", default="mpi", help=argparse.SUPPRESS)
    p.add_argument("--shard", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker == "train":
        return train_worker(args.allreduce, args.shard, args.steps, args.warmup)
    if args.worker == "allreduce":
        return allreduce_worker(args.reps)
    load = common.wait_for_quiet(max_load=2.5, timeout=args.wait)
    launch(1, 1, ["--worker", "train", "--steps", "1", "--warmup", "0"])   # Numba's cache, once
    rows, allreduce = measure(args)
    report(rows, allreduce, args, load)


if __name__ == "__main__":
    main()
