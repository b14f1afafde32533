"""Seq2seq: train the encoder-decoder Transformer on the reverse task and on 4-digit addition,
and measure held-out exact match (greedy and beam 4), steps and time.

    python benchmarks/bench_seq2seq.py                         # both tasks, writes the results
    python benchmarks/bench_seq2seq.py --task reverse --no-write --iters 100   # a quick check

The goal: at least 99% exact match on reverse (digits 0-9, sources of 10 to 20 digits) within
10 minutes on 2 cores. Each task trains through `npgpt.runs.seq2seq.run` (the code behind `npgpt
seq2seq train`) with the settings in SETTINGS; the equivalent command is written beside the numbers.
"wall s" is the whole run: data, model, training, the periodic evaluations, the final greedy
evaluation. "to 99%" is the training time (evaluations included) at the first evaluation that
reached 99% greedy exact match. "CPU s" is the process's CPU time: what the run cost on a
machine shared with other work, which wall time is not (the load average is sampled during the
run and reported).

Threads. The shapes are small (64-wide model, batches of 64 sequences of up to 21 tokens): with
OpenBLAS or Numba on two threads on a busy 2-core machine, every small matmul waits for a second
thread that the scheduler has given to another process, and a step gets several times slower.
Before training, the script times a few steps with 1 and with 2 threads (OPENBLAS_NUM_THREADS,
NUMBA_NUM_THREADS) in subprocesses, records both, and trains with --threads (default 1).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", choices=("reverse", "addition", "all"), default="all")
    p.add_argument("--threads", type=int, default=1,
                   help="BLAS and Numba threads of the training process (default: 1, see the docstring)")
    p.add_argument("--iters", type=int, default=None, help="override max_iters (quick checks)")
    p.add_argument("--backend", default="numba", help="npgpt kernel backend (default: numba)")
    p.add_argument("--no-probe", action="store_true", help="skip the 1- vs 2-thread step timing")
    p.add_argument("--no-write", action="store_true", help="print only; do not write results/")
    p.add_argument("--probe-worker", type=int, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


ARGS = _args()
# thread settings must be in the environment before numpy / numba start their pools
for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[var] = str(ARGS.probe_worker or ARGS.threads)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import common  # noqa: E402  (imports torch before npgpt: see common.py)
import numpy as np  # noqa: E402

# The settings of each task: Seq2SeqConfig fields (the rest are its defaults).
SETTINGS = {
    "reverse": dict(task="reverse", min_len=10, max_len=20, n_train=50_000, n_test=1000,
                    d_model=64, n_head=4, layers=2, d_ff=256, dropout=0.0, norm_first=True,
                    label_smoothing=0.1, batch_size=64, schedule="cosine", lr=1e-3, min_lr=1e-4,
                    warmup=100, max_iters=1500, eval_interval=100, checkpoint_interval=500, seed=0),
    "addition": dict(task="addition", n_digits=4, n_train=50_000, n_test=1000,
                     d_model=64, n_head=4, layers=2, d_ff=256, dropout=0.0, norm_first=True,
                     label_smoothing=0.1, batch_size=64, schedule="cosine", lr=1e-3, min_lr=1e-4,
                     warmup=100, max_iters=8000, eval_interval=500, checkpoint_interval=2000, seed=0),
}
GOAL = {"reverse": (0.99, 600.0)}      # exact match, within seconds
PROBE_STEPS = 30


def command(settings: dict) -> str:
    """The `npgpt seq2seq train` command line of settings."""
    parts = ["npgpt seq2seq train"]
    for k, v in settings.items():
        flag = "--" + k.replace("_", "-")
        if isinstance(v, bool):
            parts.append(flag if v else "--no-" + k.replace("_", "-"))
        else:
            parts += [flag, str(v)]
    return " ".join(parts)


# -- 1 vs 2 threads -------------------------------------------------------------------------------

def probe_worker() -> None:
    """Time PROBE_STEPS training steps of the reverse settings; print JSON (ms per step)."""
    from npgpt import kernels
    from npgpt.models.transformer import Transformer
    from npgpt.optim import AdamW
    from npgpt.runs.seq2seq import Seq2SeqConfig
    from npgpt.runs.seq2seq_data import batch_fn, fitted_seq_len, load_data

    kernels.use_backend(ARGS.backend)          # this worker process runs on it to the end
    cfg = Seq2SeqConfig(**{**SETTINGS["reverse"], "n_train": 2000, "n_test": 10})
    data = load_data(cfg)
    seq_len = fitted_seq_len(data.train + data.test)
    model = Transformer(cfg.model_config(data.vocab.size, seq_len), seed=0)
    opt = AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98), eps=1e-9, weight_decay=0.0)
    next_batch, rng = batch_fn(data.train, data.vocab, cfg.batch_size, seq_len), np.random.default_rng(0)
    times = []
    for _ in range(PROBE_STEPS + 3):
        t = time.perf_counter()
        model.forward(*next_batch(rng))
        opt.zero_grad()
        model.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    print(json.dumps({"threads": ARGS.probe_worker, "ms_per_step": 1000 * float(np.median(times[3:])),
                      "load": os.getloadavg()[0]}))


def probe_threads() -> list[dict]:
    rows = []
    for threads in (1, 2, 1):              # 1 again: the load moves; the two 1-thread runs bracket it
        out = subprocess.run([sys.executable, __file__, "--probe-worker", str(threads), "--backend",
                              ARGS.backend], capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"  {threads} thread(s): {rows[-1]['ms_per_step']:.1f} ms per step "
              f"(load {rows[-1]['load']:.2f})", flush=True)
    return rows


# -- one task ---------------------------------------------------------------------------------

def run_task(name: str) -> dict:
    from npgpt import kernels
    from npgpt.runs import seq2seq
    from npgpt.runs.seq2seq import Seq2SeqConfig, evaluate, load_data, load_seq2seq
    from npgpt.trainer import read_log

    kernels.use_backend(ARGS.backend)     # the training run and the beam evaluation after it
    settings = dict(SETTINGS[name])
    if ARGS.iters is not None:
        settings["max_iters"] = ARGS.iters
        settings["warmup"] = min(settings["warmup"], ARGS.iters)
    loads = [os.getloadavg()[0]]

    def on_step(trainer, rec):
        if rec["step"] % 50 == 0:
            loads.append(os.getloadavg()[0])

    with tempfile.TemporaryDirectory(prefix="npgpt-bench-seq2seq-") as tmp:
        cfg = Seq2SeqConfig(**settings, out=tmp, backend=ARGS.backend, examples=3)
        wall, cpu = time.perf_counter(), time.process_time()
        result = seq2seq.run(cfg, progress=False, on_step=on_step)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        elapsed = {r["step"]: r["elapsed"] for r in read_log(Path(tmp) / "log.jsonl")}
        model, _ = load_seq2seq(tmp)
    reached = [s for s, em in sorted(result.exact_match.items()) if em >= 0.99]
    t = time.perf_counter()
    beam = evaluate(model, load_data(cfg).test, beam_size=4, length_penalty=0.6)
    beam_s = time.perf_counter() - t
    print(f"  beam 4: {beam.exact_match:.2%} ({beam.correct}/{beam.n}), {beam_s:.1f} s", flush=True)
    return {
        "task": name, "backend": kernels.current_backend(), "threads": ARGS.threads,
        "params": model.num_parameters(), "steps": result.step, "train_s": result.elapsed, "wall_s": wall,
        "cpu_s": cpu, "ms_per_step": 1000 * result.elapsed / max(result.step, 1),
        "greedy": result.final.exact_match, "greedy_correct": result.final.correct,
        "beam4": beam.exact_match, "beam4_correct": beam.correct, "n_test": beam.n,
        "beam4_eval_s": beam_s, "step_99": reached[0] if reached else None,
        "train_s_99": elapsed[reached[0]] if reached else None,
        "final_train_loss": float(np.mean(result.losses[-50:])),
        "val_loss": result.val_losses.get(result.step),
        "exact_match_by_step": {str(k): v for k, v in sorted(result.exact_match.items())},
        "load_mean": float(np.mean(loads)), "load_max": float(np.max(loads)),
        "settings": settings, "command": command(settings),
    }


def main() -> None:
    if ARGS.probe_worker is not None:
        probe_worker()
        return
    env = common.environment()
    env["threads (OPENBLAS/OMP/NUMBA_NUM_THREADS)"] = ARGS.threads
    common.print_environment(env)
    probe = []
    if not ARGS.no_probe:
        print(f"\nsteps of the reverse model, median of {PROBE_STEPS}, 1 vs 2 threads:")
        probe = probe_threads()
    rows = []
    for name in (("reverse", "addition") if ARGS.task == "all" else (ARGS.task,)):
        print(f"\n== {name}: {command(SETTINGS[name])}", flush=True)
        rows.append(run_task(name))
    env["load_average_end"] = os.getloadavg()[0]
    columns = ["task", "params", "steps", "greedy", "beam 4", "to 99%: step, train s", "train s",
               "wall s", "CPU s", "ms/step", "load: mean, max"]
    table = common.markdown_table(columns, [{
        "task": r["task"], "params": f"{r['params']:,}", "steps": r["steps"],
        "greedy": f"{r['greedy']:.2%}", "beam 4": f"{r['beam4']:.2%}",
        "to 99%: step, train s": f"{r['step_99']}, {r['train_s_99']:.0f}" if r["step_99"] else "not reached",
        "train s": f"{r['train_s']:.0f}", "wall s": f"{r['wall_s']:.0f}", "CPU s": f"{r['cpu_s']:.0f}",
        "ms/step": f"{r['ms_per_step']:.0f}", "load: mean, max": f"{r['load_mean']:.1f}, {r['load_max']:.1f}",
    } for r in rows])
    print("\n" + table)
    for r in rows:
        if r["task"] in GOAL:
            target, seconds = GOAL[r["task"]]
            ok = r["greedy"] >= target and r["wall_s"] <= seconds
            print(f"goal ({r['task']}: >= {target:.0%} within {seconds / 60:.0f} min): "
                  f"{'met' if ok else 'missed'} ({r['greedy']:.2%} greedy in {r['wall_s']:.0f} s wall)")
    if ARGS.no_write:
        return
    notes = _notes(rows, probe)
    md, js = common.write_results("seq2seq", "Seq2seq: reverse and addition", env, table,
                                  rows + [{"thread_probe": probe}], notes)
    print(f"wrote {md} and {js}")


def _notes(rows, probe) -> str:
    argv = " ".join(sys.argv[1:])
    lines = [
        f"Written by `python benchmarks/bench_seq2seq.py{' ' + argv if argv else ''}`. Each task "
        "trains `npgpt seq2seq train` with the command below; held-out pairs are sources never "
        "seen in training, scored by exact match (the whole output equals the target).",
        "",
        "Times are on a 2-core machine shared with other work: wall times move with the load "
        "average (sampled every 50 steps, reported per run); CPU s is what the run itself used.",
    ]
    if probe:
        ms = {}
        for p in probe:
            ms.setdefault(p["threads"], []).append(p["ms_per_step"])
        lines += ["", f"Threads: a training step of the reverse model took "
                      f"{' / '.join(f'{x:.0f}' for x in ms.get(1, []))} ms with 1 thread and "
                      f"{' / '.join(f'{x:.0f}' for x in ms.get(2, []))} ms with 2 (OpenBLAS and Numba, "
                      f"median of {PROBE_STEPS} steps, load {probe[0]['load']:.1f}); the runs below use "
                      f"{ARGS.threads} thread{'s' if ARGS.threads > 1 else ''}."]
    worse = [r for r in rows if r["beam4"] < r["greedy"]]
    if worse:
        lines += ["", "Beam 4 below greedy (" + ", ".join(f"{r['task']}: {r['beam4']:.2%} vs {r['greedy']:.2%}"
                                                   for r in worse) + "): "
                  "beam search keeps the 4 outputs of highest length-normalised log-probability "
                  "(GNMT's penalty, alpha 0.6), which is not exact match: where the model prefers a "
                  "wrong output as a whole, greedy decoding can still be right token by token."]
    lines += ["", "\"train s\" counts the evaluations too (greedy decoding of the 1000 held-out sources "
                  "every --eval-interval steps); \"ms/step\" is train s / steps."]
    lines += [""] + [f"- {r['task']}: `{r['command']}`" for r in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
