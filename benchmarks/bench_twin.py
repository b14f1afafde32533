"""Why the old PyTorch twin was slow: the fair twin (npgpt/bench/twin.py) against variants that
each bring back one thing the old benchmarks did, each variant in its own process.

    python benchmarks/bench_twin.py                       # baby and gpt2, 3 rounds
    python benchmarks/bench_twin.py --models baby --rounds 1 --steps 5 --no-write

Variants of one training step (bench_step.py's: forward, backward, clip 1.0, AdamW):
    twin            the fair twin: fused AdamW, the environment as the user left it
    adamw-default   torch.optim.AdamW's default implementation on the CPU (a Python loop over the
                    parameters: torch picks foreach and fused kernels only on GPUs), as the old
                    twin and nanoGPT on a CPU get it
    adamw-foreach   foreach=True (one call per operation over all parameters)
    passive         the twin with OMP_WAIT_POLICY=PASSIVE in its environment: what the old
                    bench_shakespeare.py handed its torch worker (the driver had imported npgpt's
                    Numba kernels, which set it in os.environ for Numba's threads)
    head-transposed the old twin's head, ln_f(x) @ wte.weight.T, instead of F.linear
Writes results/twin.md and twin.json: the median step time per variant, its ratio to the
twin's in the same round, and the CPU time per step (all threads, spinning included; with
--threads 1 it is the work itself, and holds up on a busy machine where wall times do not).
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
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import common  # noqa: E402  (torch before npgpt, and the user's environment: see common.py)

VARIANTS = ("twin", "adamw-default", "adamw-foreach", "passive", "head-transposed")
MODELS = {"baby": dict(vocab_size=65, n_layer=4, n_head=4, n_embd=128, block_size=64, B=12, T=64),
          "gpt2": dict(vocab_size=50257, n_layer=12, n_head=12, n_embd=768, block_size=1024, B=4, T=64)}


def worker(variant: str, model: str, steps: int, threads: int) -> dict:
    import numpy as np
    import torch

    from npgpt import GPT, GPTConfig
    from npgpt.bench import twin

    torch.set_num_threads(threads)
    m = MODELS[model]
    cfg = GPTConfig(**{k: m[k] for k in ("vocab_size", "n_layer", "n_head", "n_embd", "block_size")})
    net = twin.torch_gpt(cfg, GPT(cfg, seed=0).state_dict())
    if variant == "head-transposed":
        net.forward = types.MethodType(_transposed_head_forward, net)
    kind = {"adamw-default": {}, "adamw-foreach": {"foreach": True}}.get(variant, {"fused": True})
    opt = torch.optim.AdamW(twin.decay_groups(net, 0.1), lr=3e-4, betas=(0.9, 0.95), **kind)
    step = twin.train_step(net, opt, 1.0)
    rng = np.random.default_rng(0)
    x, y = (torch.from_numpy(rng.integers(0, m["vocab_size"], (m["B"], m["T"]))) for _ in range(2))
    for _ in range(3):
        step(x, y)
    times, cpu = [], []
    for _ in range(steps):
        t, c = time.perf_counter(), time.process_time()
        step(x, y)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return {"variant": variant, "model": model, "median_s": statistics.median(times),
            "cpu_s": statistics.median(cpu),
            "load": os.getloadavg()[0], "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}


def _transposed_head_forward(self, idx, targets=None):
    import torch
    from torch.nn import functional as F

    x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
    for block in self.h:
        x = block(x)
    logits = self.ln_f(x) @ self.wte.weight.T                     # the old twin's head
    return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


def launch(variant: str, model: str, args) -> dict:
    extra = {"OMP_WAIT_POLICY": "PASSIVE"} if variant == "passive" else {}
    env = common.worker_env(**extra)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        subprocess.run([sys.executable, __file__, "--worker", variant, "--models", model, "--steps",
                        str(args.steps), "--threads", str(args.threads), "--result", str(out)], env=env, check=True)
        return json.loads(out.read_text())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="baby,gpt2", help="comma-separated, of baby, gpt2 (default: both)")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"of {', '.join(VARIANTS)} (default: all)")
    p.add_argument("--rounds", type=int, default=3, help="rounds, the variants in turn (default: 3)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per process (default: 20)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: every core)")
    p.add_argument("--name", default="twin", help="results/NAME.md and NAME.json (default: twin)")
    p.add_argument("--no-write", action="store_true", help="print, but do not write results/")
    p.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    models = args.models.split(",")
    if args.worker:
        Path(args.result).write_text(json.dumps(worker(args.worker, models[0], args.steps, args.threads)))
        return 0
    variants = args.variants.split(",")
    load = os.getloadavg()[0]
    runs = []
    for rnd in range(args.rounds):
        for model in models:
            for variant in variants:
                runs.append({**launch(variant, model, args), "round": rnd})
                print(f"  round {rnd + 1} {model:5s} {variant:16s} {runs[-1]['median_s'] * 1e3:8.1f} ms "
                      f"(load {runs[-1]['load']:.2f})", flush=True)
    rows = []
    for model in models:
        base = {r["round"]: r["median_s"] for r in runs if r["model"] == model and r["variant"] == "twin"}
        for variant in variants:
            rs = [r for r in runs if r["model"] == model and r["variant"] == variant]
            rows.append({"model": model, "variant": variant, "step ms": statistics.median(r["median_s"] for r in rs) * 1e3,
                         "/ twin": statistics.median(r["median_s"] / base[r["round"]] for r in rs) if base else None,
                         "cpu ms": statistics.median(r["cpu_s"] for r in rs) * 1e3})
    table = common.markdown_table(["model", "variant", "step ms", "/ twin", "cpu ms"], rows,
                                  {"step ms": "{:.1f}", "/ twin": "{:.2f}", "cpu ms": "{:.1f}"})
    print("\n" + table)
    if not args.no_write:
        command = "python benchmarks/bench_twin.py " + " ".join(argv if argv is not None else sys.argv[1:])
        loads = [r["load"] for r in runs]
        notes = (f"Command: `{command.strip()}`\n\nMedian step time per process ({args.steps} steps after 3 "
                 f"untimed), median over {args.rounds} rounds; '/ twin': the median over rounds of the ratio "
                 f"to the fair twin in the same round; 'cpu ms': CPU time per step, all {args.threads} "
                 f"thread(s). Load average {load:.2f} at the start, "
                 f"{min(loads):.2f}–{max(loads):.2f} during. See the script's docstring for the variants.")
        common.write_results(args.name, "The PyTorch twin: what made the old one slow", {"command": command.strip()},
                             table, runs, notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
