"""One GPT training step (forward, backward, clip, AdamW): npgpt's NumPy and Numba backends
against PyTorch (eager), same shapes, same thread count, each in its own process.

    python benchmarks/bench_step.py                        # the three models, 3 rounds
    python benchmarks/bench_step.py --models baby --rounds 1 --steps 5 --no-write
    npgpt bench --model baby,small,gpt2 --test train       # the same step, llama-bench's table

Models (batch B, sequence T; float32; learned positions, tied head, biases, GELU-tanh):
    baby       4 layers, 4 heads, 128 wide, vocab 65,    B=12, T=64   (baby Shakespeare)
    gpt2-4l    4 layers, 12 heads, 768 wide, vocab 50257, B=4, T=64   (GPT-2's width and head)
    gpt2       12 layers, 12 heads, 768 wide, vocab 50257, B=4, T=64  (GPT-2 124M)

A step is: forward with targets (mean cross-entropy), zero the gradients, backward, clip the
global gradient norm to 1.0, one AdamW step (lr 3e-4, betas (0.9, 0.95), weight decay 0.1 on
the Linear weights only, npgpt's rule, given to torch as param groups). npgpt steps as its
Trainer does: the clip and the zeroing inside the AdamW pass (step(grad_scale=clip_coef(norm,
1.0), zero_grad=True): see npgpt/optim/clip.py). PyTorch's side is the fair twin,
npgpt/bench/twin.py: nanoGPT's model and loop (torch.nn modules, one Linear for q, k, v,
scaled_dot_product_attention, fused AdamW, clip_grad_norm_; see docs/speed.md). Both sides
start from the same weights (npgpt's GPT(cfg, seed=0), copied into the twin) and see the same
random batch: their first losses agree, printed as a check.

How it is timed. Each (model, implementation) runs in a fresh process: npgpt's processes never
import torch, and torch's never import npgpt's Numba kernels, so each library keeps the thread
settings it has on its own (npgpt's are set in npgpt/kernels/cpu.py; torch's are its defaults).
Only the thread count is made equal: NUMBA_NUM_THREADS and OPENBLAS_NUM_THREADS for npgpt,
torch.set_num_threads for torch (--threads, default: every core). In a process: the first step
alone ("first step s": for Numba, after `cpu.warmup()` compiled or loaded its kernels, timed
apart as "compile s"), --warmup more steps, then --steps timed steps: the median, and the CPU
time per step (time.process_time: all threads' work, spinning included). The implementations
take turns, round after round (--rounds), so that a change in the machine's load hits all of
them alike; a ratio is taken within each round (npgpt over the torch run next to it) and the
table gives the median of the rounds' ratios.

Model FLOP utilisation (MFU): (6 N + 12 L C T) FLOPs per token (nanoGPT's estimate: N the
parameters that multiply, i.e. all but the position table; 12 L C T the attention scores and
their weighted sum, forward and backward) times B T tokens, per second, over the measured GEMM
peak of this machine at the same thread count (the best float32 GFLOP/s of numpy's BLAS on
square products, npgpt.bench.peak, measured by each npgpt worker after its steps). Writes
results/step.md, step.json and step.png (--name: another name; the one-thread run is
results/step-1thread.*).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

MODELS = {
    "baby": dict(vocab_size=65, n_layer=4, n_head=4, n_embd=128, block_size=64, B=12, T=64),
    "gpt2-4l": dict(vocab_size=50257, n_layer=4, n_head=12, n_embd=768, block_size=1024, B=4, T=64),
    "gpt2": dict(vocab_size=50257, n_layer=12, n_head=12, n_embd=768, block_size=1024, B=4, T=64),
}
# npgpt (Numba) step time / the fair twin's: the targets of issue 15 (issue 4's were 1.0, 0.8,
# 0.65 against the old twin)
TARGETS = {"baby": 0.65, "gpt2-4l": 0.55, "gpt2": 0.60}
IMPLS = ("npgpt-numpy", "npgpt-numba", "torch")
HYPER = dict(lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1, grad_clip=1.0)


def batch(model: str, seed: int = 0):
    import numpy as np

    m = MODELS[model]
    rng = np.random.default_rng(seed)
    x = rng.integers(0, m["vocab_size"], (m["B"], m["T"]), dtype=np.int64)
    y = rng.integers(0, m["vocab_size"], (m["B"], m["T"]), dtype=np.int64)
    return x, y


def flops_per_step(model: str, n_params: int) -> float:
    """nanoGPT's estimate: (6 N + 12 L C T) per token, N without the position table."""
    m = MODELS[model]
    per_token = 6 * n_params + 12 * m["n_layer"] * m["n_embd"] * m["T"]
    return per_token * m["B"] * m["T"]


# -- the workers: one model, one implementation, one process ------------------------------------

def npgpt_step(model: str):
    """(step function, first loss, multiplying parameters, settings) for npgpt on the current backend."""
    from npgpt import GPT, GPTConfig
    from npgpt.optim import AdamW, clip_coef, grad_norm

    m = MODELS[model]
    cfg = GPTConfig(**{k: m[k] for k in ("vocab_size", "n_layer", "n_head", "n_embd", "block_size")})
    net = GPT(cfg, seed=0)
    opt = AdamW(net.parameters(), lr=HYPER["lr"], betas=HYPER["betas"], weight_decay=HYPER["weight_decay"])
    x, y = batch(model)

    def step():                    # as the Trainer steps: the gradients are 0 on entry
        _, loss = net.forward(x, y)
        net.backward()
        norm = grad_norm(opt)
        opt.step(grad_scale=clip_coef(norm, HYPER["grad_clip"]), zero_grad=True)   # clip, update, zero
        return loss
    n_params = net.num_parameters() - net.wpe.weight.size
    return step, n_params


def torch_step(model: str):
    """The same step for the PyTorch twin (npgpt/bench/twin.py: nanoGPT's model and loop, fused
    AdamW), started from npgpt's initial weights: the two first losses agree."""
    import torch

    from npgpt import GPT, GPTConfig
    from npgpt.bench import twin

    m = MODELS[model]
    cfg = GPTConfig(**{k: m[k] for k in ("vocab_size", "n_layer", "n_head", "n_embd", "block_size")})
    net = twin.torch_gpt(cfg, GPT(cfg, seed=0).state_dict())
    opt = twin.adamw(net, lr=HYPER["lr"], betas=HYPER["betas"], weight_decay=HYPER["weight_decay"])
    train_step = twin.train_step(net, opt, HYPER["grad_clip"])
    x, y = (torch.from_numpy(a) for a in batch(model))

    def step():
        return train_step(x, y)
    n_params = sum(p.numel() for p in net.parameters()) - net.wpe.weight.numel()
    return step, n_params


def worker(impl: str, model: str, steps: int, warmup: int, threads: int) -> dict:
    """(In a fresh process.) Build, compile, time; return the measurements and the settings."""
    import numpy as np

    out = {"impl": impl, "model": model, "load_before": os.getloadavg()[0]}
    if impl == "torch":
        import common
        import torch
        torch.set_num_threads(threads)
        step, n_params = torch_step(model)
        out.update(threads=torch.get_num_threads(), blas=common.torch_blas_info(), compile_s=0.0)
    else:
        import numba

        import common
        from npgpt import kernels
        out["backend"] = kernels.current_backend()
        if out["backend"] == "numba":
            from npgpt.kernels import cpu
            t = time.perf_counter()
            cpu.warmup(("float32",))
            out["compile_s"] = time.perf_counter() - t
            out["numba_threading_layer"] = numba.threading_layer()
        else:
            out["compile_s"] = 0.0
        step, n_params = npgpt_step(model)
        out.update(threads=numba.get_num_threads(), blas=common.blas_info(),
                   thread_env={k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT",
                                                              "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS",
                                                              "OPENBLAS_THREAD_TIMEOUT")})
    t = time.perf_counter()
    out["first_loss"] = float(step())
    out["first_step_s"] = time.perf_counter() - t
    for _ in range(warmup):
        step()
    wall, cpu_s = [], []
    for _ in range(steps):
        t, c = time.perf_counter(), time.process_time()
        step()
        wall.append(time.perf_counter() - t)
        cpu_s.append(time.process_time() - c)
    out.update(n_params=n_params, step_s=wall, median_s=statistics.median(wall),
               cpu_s=statistics.median(cpu_s), load_after=os.getloadavg()[0],
               flops=flops_per_step(model, n_params))
    if impl.startswith("npgpt"):
        from npgpt.bench.peak import sgemm_gflops
        out["sgemm_gflops"] = sgemm_gflops()[0]     # the compute roof at this thread count, for MFU
    del np
    return out


def launch(impl: str, model: str, args) -> dict:
    """Run one worker in a fresh process with its thread settings; return its measurements."""
    import common
    env = common.worker_env()                # the user's environment: see common.py
    if impl.startswith("npgpt"):
        env.update(NPGPT_BACKEND=impl.split("-", 1)[1], NPGPT_BENCH_NO_TORCH="1",
                   NUMBA_NUM_THREADS=str(args.threads), OPENBLAS_NUM_THREADS=str(args.threads))
    steps = args.steps
    if impl == "npgpt-numpy" and model != "baby":
        steps = max(3, steps // 3)           # the NumPy backend is slow on the large models
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        cmd = [sys.executable, __file__, "--worker", impl, "--models", model, "--steps", str(steps),
               "--warmup", str(args.warmup), "--threads", str(args.threads), "--result", str(result)]
        subprocess.run(cmd, env=env, check=True)
        return json.loads(result.read_text())


# -- the driver ------------------------------------------------------------------------------

def gemm_peak(runs: list[dict]) -> float | None:
    """The best float32 GFLOP/s of numpy's BLAS on square products (npgpt.bench.peak), measured
    by the npgpt workers after their steps, at the same thread count."""
    peaks = [r["sgemm_gflops"] for r in runs if r.get("sgemm_gflops")]
    return max(peaks) if peaks else None


def summarise(runs: list[dict], models: list[str], impls: list[str], peak: float | None) -> list[dict]:
    rows = []
    for model in models:
        torch_runs = [r for r in runs if r["model"] == model and r["impl"] == "torch"]
        for impl in impls:
            rs = [r for r in runs if r["model"] == model and r["impl"] == impl]
            if not rs:
                continue
            med = statistics.median(r["median_s"] for r in rs)
            row = {"model": model, "impl": impl, "step ms": med * 1e3,
                   "range ms": f"{min(r['median_s'] for r in rs) * 1e3:.1f}–{max(r['median_s'] for r in rs) * 1e3:.1f}",
                   "cpu ms": statistics.median(r["cpu_s"] for r in rs) * 1e3,
                   "tokens/s": MODELS[model]["B"] * MODELS[model]["T"] / med,
                   "first step s": statistics.median(r["first_step_s"] for r in rs),
                   "compile s": statistics.median(r["compile_s"] for r in rs),
                   "first loss": rs[0]["first_loss"], "threads": rs[0]["threads"], "rounds": len(rs)}
            if peak:
                row["MFU %"] = 100 * rs[0]["flops"] / med / (peak * 1e9)
            if torch_runs and impl != "torch":
                # the ratio within each round (npgpt over the torch run of the same round)
                ratios = [r["median_s"] / t["median_s"] for r, t in zip(rs, torch_runs)]
                row["/ torch"] = statistics.median(ratios)
                # the same for CPU time: with --threads 1, a view that other processes on a
                # shared machine inflate far less than the wall time
                row["cpu / torch"] = statistics.median(r["cpu_s"] / t["cpu_s"] for r, t in zip(rs, torch_runs))
                if impl == "npgpt-numba":
                    target = TARGETS[model]
                    row["target"] = f"<= {target:.2f}"
                    miss = row["/ torch"] / target - 1
                    row["result"] = "met" if miss <= 0 else f"missed by {100 * miss:.0f}%"
            rows.append(row)
    return rows


def plot(rows: list[dict], models: list[str], name: str) -> None:
    import common
    plt = common.pyplot()
    if plt is None:
        return
    import numpy as np

    impls = [i for i in IMPLS if any(r["impl"] == i for r in rows)]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    x = np.arange(len(models))
    width = 0.8 / len(impls)
    for n, impl in enumerate(impls):
        ms = [next((r["step ms"] for r in rows if r["model"] == m and r["impl"] == impl), np.nan) for m in models]
        axes[0].bar(x + (n - (len(impls) - 1) / 2) * width, ms, width, label=impl)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("ms per training step (median, log scale)")
    axes[0].set_title("One training step: forward, backward, clip, AdamW")
    ratio_impls = [i for i in impls if i != "torch"]
    width = 0.8 / max(1, len(ratio_impls))
    for n, impl in enumerate(ratio_impls):
        ratios = [next((r.get("/ torch", np.nan) for r in rows if r["model"] == m and r["impl"] == impl), np.nan)
                  for m in models]
        axes[1].bar(x + (n - (len(ratio_impls) - 1) / 2) * width, ratios, width, label=f"{impl} / torch",
                    color=f"C{impls.index(impl)}")
    axes[1].scatter(x, [TARGETS[m] for m in models], marker="_", s=900, color="black", zorder=3,
                    label="target (npgpt-numba)")
    axes[1].axhline(1.0, color="gray", lw=0.8)
    axes[1].set_ylabel("step time / torch's (lower is faster)")
    axes[1].set_title("Relative to PyTorch eager")
    for ax in axes:
        ax.set_xticks(x)
        ax.set_xticklabels(models)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    common.save_figure(fig, name)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)} "
                                                              f"(default: all)")
    p.add_argument("--impls", default=",".join(IMPLS), help=f"comma-separated, of {', '.join(IMPLS)} (default: all)")
    p.add_argument("--rounds", type=int, default=3, help="times each implementation runs, in turns (default: 3)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per run (default: 10; a third for "
                                                         "npgpt-numpy on the GPT-2 models)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps after the first (default: 2)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for every library "
                                                                       "(default: every core)")
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                   help="first wait up to SECONDS for the load average to fall below 1")
    p.add_argument("--no-write", action="store_true", help="print, but do not write results/")
    p.add_argument("--name", default="step", help="results/NAME.md, .json and .png (default: step)")
    p.add_argument("--worker", choices=IMPLS, help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    impls = [i for i in args.impls.split(",") if i]
    for name, given, known in (("--models", models, MODELS), ("--impls", impls, IMPLS)):
        bad = [g for g in given if g not in known]
        if bad or not given:
            p.error(f"{name} {','.join(given)!r}: expected some of {', '.join(known)}")
    if args.worker:
        Path(args.result).write_text(json.dumps(worker(args.worker, models[0], args.steps, args.warmup,
                                                       args.threads)))
        return 0

    import common
    if common.torch is None and "torch" in impls:
        print("torch is not installed: timing npgpt only")
        impls.remove("torch")
    load = common.wait_for_quiet(timeout=args.wait_quiet)
    print(f"GPT training step: {', '.join(impls)}; {args.threads} threads; load average {load:.2f}",
          flush=True)
    runs = []
    for rnd in range(args.rounds):
        for model in models:
            for impl in impls:
                r = launch(impl, model, args)
                runs.append(r)
                print(f"  round {rnd + 1} {model:8s} {impl:12s} {r['median_s'] * 1e3:9.1f} ms/step  "
                      f"(cpu {r['cpu_s'] * 1e3:.0f} ms, first {r['first_step_s']:.2f} s, compile "
                      f"{r['compile_s']:.2f} s, loss {r['first_loss']:.4f}, load {r['load_after']:.2f})",
                      flush=True)
    peak = gemm_peak(runs)
    peak_from = f"numpy's BLAS at 1024^3 and 2048^3 on {args.threads} threads, measured by the npgpt workers"
    rows = summarise(runs, models, impls, peak)
    fmt = {"step ms": "{:.1f}", "cpu ms": "{:.0f}", "tokens/s": "{:,.0f}", "first step s": "{:.2f}",
           "compile s": "{:.2f}", "first loss": "{:.4f}", "MFU %": "{:.1f}", "/ torch": "{:.2f}",
           "cpu / torch": "{:.2f}"}
    columns = ["model", "impl", "step ms", "range ms", "/ torch", "target", "result", "cpu ms", "cpu / torch",
               "tokens/s",
               "MFU %", "first step s", "compile s", "first loss", "threads", "rounds"]
    table = common.markdown_table(columns, rows, fmt)
    print("\n" + table)
    settings = {r["impl"]: {k: r.get(k) for k in ("threads", "blas", "thread_env", "numba_threading_layer")}
                for r in runs}
    for impl, s in settings.items():
        print(f"  {impl}: {s}")
    if args.no_write:
        return 0
    command = "python benchmarks/bench_step.py " + " ".join(argv if argv is not None else sys.argv[1:])
    loads = [r["load_before"] for r in runs] + [r["load_after"] for r in runs]
    notes = f"""
Command: `{command.strip()}`

One training step (forward, backward, clip to norm 1.0, AdamW) in float32, B x T tokens;
median of {args.steps} timed steps per process after {args.warmup} warm-up steps, {args.rounds}
rounds in turns, each run a fresh process (see the script's docstring). "/ torch": the median
over rounds of npgpt's step time over torch's in the same round (lower is faster); "target":
issue 15's goal for the Numba backend, and by how much it was missed where it was. "cpu ms": CPU
time per step, all threads (spinning included); "cpu / torch": the same ratio of CPU times (with
--threads 1 the noise-robust view on a shared machine; with more, spinning threads count). "first step s": the first step alone (allocation,
caches; for Numba after "compile s", the compile or cache load of every kernel by
`cpu.warmup()`). MFU: model FLOPs per second (nanoGPT's 6 N + 12 L C T per token) over the GEMM
peak, {peak or float('nan'):.0f} GFLOP/s ({peak_from}). Load average during the runs:
{min(loads):.2f}–{max(loads):.2f}.

Thread settings per implementation: {json.dumps(settings)}
"""
    md, js = common.write_results(args.name, "GPT training step: npgpt vs PyTorch",
                                  {"load_average": [min(loads), max(loads)], "command": command.strip(),
                                   "gemm_peak_gflops": peak, "settings": settings,
                                   **{k: v for k, v in _platform().items()}},
                                  table, rows, notes)
    # keep every run in the json, too
    data = json.loads(js.read_text())
    data["runs"] = runs
    js.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {md} and {js}")
    plot(rows, models, f"{args.name}.png")
    return 0


def _platform() -> dict:
    import importlib.metadata
    import platform

    import numpy as np
    import common
    return {"cpu": common._cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "numba": importlib.metadata.version("numba"),
            "torch": common.torch.__version__ if common.torch is not None else None}


if __name__ == "__main__":
    raise SystemExit(main())
