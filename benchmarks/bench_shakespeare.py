"""Baby Shakespeare: train the same char-level GPT with npgpt (NumPy and Numba backends) and
PyTorch, and compare validation loss and training time.

    python benchmarks/bench_shakespeare.py                       # all three, seed 0, 2000 steps
    python benchmarks/bench_shakespeare.py --seeds 0,1,2 --only torch
    python benchmarks/bench_shakespeare.py --iters 50 --no-write  # a quick check that it runs

The setting (nanoGPT's shakespeare_char, smaller): tinyshakespeare, one id per character (65),
the first 90% to train on and the last 10% to validate; GPT with n_layer 4, n_head 4, n_embd 128,
block 64, batch 12, dropout 0, tied head; AdamW lr 1e-3, betas (0.9, 0.99), weight decay 0.1 on
the Linear weights only (npgpt's rule; PyTorch gets the same param groups), gradient clip 1.0;
100 warmup steps, then cosine decay to 1e-4 at the last step.

PyTorch's side is the fair twin, npgpt/bench/twin.py (nanoGPT's model and loop: torch.nn
modules, one Linear for q, k, v, scaled_dot_product_attention, fused AdamW, clip_grad_norm_),
started from npgpt's initial weights for the same seed. Both sides draw the same batches (npgpt.data.get_batch with the same seeded Generator) and are
scored on the same 200 validation batches. Each run is its own process, so each library keeps
the thread settings it has on its own (npgpt chooses its backend as `npgpt train --backend` does,
and its processes never import torch); PyTorch runs with torch.set_num_threads(--threads), Numba
with NUMBA_NUM_THREADS=--threads, numpy's BLAS with its default or --blas-threads. "train s" is
the wall time of the training steps alone; start-up (imports, Numba's compile or cache load,
building the model) is reported apart, and the final validation is not timed. Writes
results/shakespeare.md and shakespeare.json (or --name's).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

T_START = time.perf_counter()

import numpy as np  # noqa: E402

# benchmarks/common.py imports torch; the npgpt workers must not (torch's OpenMP runtime would
# share the two cores with npgpt's threads), so it is imported only by the driver and torch's worker
sys.path.insert(0, str(Path(__file__).resolve().parent))

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
IMPLS = ("npgpt-numpy", "npgpt-numba", "torch")
SETTINGS = dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=12, lr=1e-3,
                min_lr=1e-4, warmup=100, betas=(0.9, 0.99), weight_decay=0.1, grad_clip=1.0,
                val_batches=200, val_fraction=0.1)
GOAL_VAL_LOSS = 1.88


def load_data(path):
    from npgpt.data import load_text, split
    from npgpt.tokenizers import CharTokenizer

    text = load_text(path)
    tok = CharTokenizer.from_text(text)
    train, val = split(np.array(tok.encode(text), dtype=np.int64), SETTINGS["val_fraction"])
    return tok, train, val


def val_batches(val, seed):
    """The validation batches every implementation is scored on (same seed, same windows)."""
    from npgpt.data import get_batch

    rng = np.random.default_rng(10_000 + seed)
    s = SETTINGS
    return [get_batch(val, s["batch_size"], s["block_size"], rng, "val") for _ in range(s["val_batches"])]


# -- npgpt ---------------------------------------------------------------------------------------

def run_npgpt(data, iters, seed, backend) -> dict:
    from npgpt import GPT, GPTConfig, kernels
    from npgpt.optim import AdamW, WarmupCosine
    from npgpt.runs.pretrain import lm_batch_fn
    from npgpt.trainer import Trainer

    kernels.use_backend(backend)                 # as `npgpt train --backend` does
    s = SETTINGS
    tok, train, val = load_data(data)
    if kernels.current_backend() == "numba":
        from npgpt.kernels import cpu
        cpu.warmup(("float32",))                 # compile (or load the cache) before the clock
    cfg = GPTConfig.preset("baby", vocab_size=tok.vocab_size, dropout=0.0)
    model = GPT(cfg, seed=seed)
    opt = AdamW(model.parameters(), lr=s["lr"], betas=s["betas"], weight_decay=s["weight_decay"])
    trainer = Trainer(model, opt, lm_batch_fn(train, s["batch_size"], s["block_size"]),
                      schedule=WarmupCosine(s["lr"], min(s["warmup"], iters), iters, s["min_lr"]),
                      max_iters=iters, grad_clip=s["grad_clip"], seed=seed, progress=False)
    startup = time.perf_counter() - T_START
    t0 = time.perf_counter()
    result = trainer.run()
    train_s = time.perf_counter() - t0
    model.eval()
    val_loss = float(np.mean([model.forward(x, y)[1] for x, y in val_batches(val, seed)]))
    return {"backend": kernels.current_backend(), "losses": result.losses, "val_loss": val_loss,
            "train_s": train_s, "startup_s": startup}


# -- PyTorch --------------------------------------------------------------------------------------

def run_torch(data, iters, seed, threads) -> dict:
    import common  # noqa: F401  (torch first, as the other benchmarks import it)
    import torch

    from npgpt import GPT, GPTConfig
    from npgpt.bench import twin
    from npgpt.optim import WarmupCosine

    torch.set_num_threads(threads)
    s = SETTINGS
    tok, train, val = load_data(data)
    # the fair twin (npgpt/bench/twin.py) from npgpt's initial weights for this seed
    cfg = GPTConfig.preset("baby", vocab_size=tok.vocab_size, dropout=0.0)
    model = twin.torch_gpt(cfg, GPT(cfg, seed=seed).state_dict())
    opt = twin.adamw(model, lr=s["lr"], betas=s["betas"], weight_decay=s["weight_decay"])
    schedule = WarmupCosine(s["lr"], min(s["warmup"], iters), iters, s["min_lr"])
    from npgpt.data import get_batch
    rng = np.random.default_rng(seed)
    startup = time.perf_counter() - T_START
    losses = []
    t0 = time.perf_counter()
    for step in range(1, iters + 1):
        x, y = get_batch(train, s["batch_size"], s["block_size"], rng, "train")
        loss = model(torch.from_numpy(x), torch.from_numpy(y))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), s["grad_clip"])
        for group in opt.param_groups:
            group["lr"] = schedule(step)
        opt.step()
        losses.append(loss.item())
    train_s = time.perf_counter() - t0
    model.eval()
    with torch.no_grad():
        val_loss = float(np.mean([model(torch.from_numpy(x), torch.from_numpy(y)).item()
                                  for x, y in val_batches(val, seed)]))
    return {"losses": losses, "val_loss": val_loss, "train_s": train_s, "startup_s": startup,
            "torch_threads": torch.get_num_threads()}


# -- the driver ---------------------------------------------------------------------------------

def worker(args) -> None:
    if args.worker == "torch":
        out = run_torch(args.data, args.iters, args.seed, args.threads)
    else:
        out = run_npgpt(args.data, args.iters, args.seed, args.worker.split("-", 1)[1])
    Path(args.result).write_text(json.dumps(out))


def launch(impl, seed, args) -> dict:
    """Run one implementation and seed in a fresh process; return its row."""
    import tempfile

    import common
    # the user's environment, not os.environ: the driver's npgpt import set OMP_WAIT_POLICY
    # there, which would slow torch's threads (common.worker_env)
    env = common.worker_env(NUMBA_NUM_THREADS=args.threads)
    if args.blas_threads is not None:
        env.update(OPENBLAS_NUM_THREADS=str(args.blas_threads), MKL_NUM_THREADS=str(args.blas_threads))
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        cmd = [sys.executable, __file__, "--worker", impl, "--seed", str(seed), "--iters", str(args.iters),
               "--data", str(args.data), "--threads", str(args.threads), "--result", str(result)]
        t = time.perf_counter()
        subprocess.run(cmd, env=env, check=True)
        wall = time.perf_counter() - t
        out = json.loads(result.read_text())
    tokens = args.iters * SETTINGS["batch_size"] * SETTINGS["block_size"]
    return {"impl": impl, "seed": seed, "iters": args.iters, "val loss": out["val_loss"],
            "train loss": float(np.mean(out["losses"][-100:])), "train s": out["train_s"],
            "tokens/s": tokens / out["train_s"], "startup s": out["startup_s"], "process s": wall}


def summary(rows) -> list[dict]:
    """Mean (and range) over seeds, per implementation."""
    out = []
    for impl in dict.fromkeys(r["impl"] for r in rows):
        rs = [r for r in rows if r["impl"] == impl]
        vals = [r["val loss"] for r in rs]
        out.append({"impl": impl, "seeds": len(rs), "val loss": float(np.mean(vals)),
                    "val range": f"{min(vals):.3f}–{max(vals):.3f}",
                    "train s": float(np.mean([r["train s"] for r in rs])),
                    "tokens/s": float(np.mean([r["tokens/s"] for r in rs])),
                    "startup s": float(np.mean([r["startup s"] for r in rs]))})
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"default: {DEFAULT_DATA}")
    p.add_argument("--iters", type=int, default=2000, help="training steps (default: 2000)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (default: 0)")
    p.add_argument("--only", choices=("npgpt", "torch"), default=None, help="run only one side")
    p.add_argument("--backends", default="numpy,numba", help="npgpt backends (default: numpy,numba)")
    p.add_argument("--threads", type=int, default=2, help="threads for torch and Numba (default: 2)")
    p.add_argument("--blas-threads", type=int, default=None,
                   help="OPENBLAS_NUM_THREADS for every run (default: the library's own choice; "
                        "1 keeps numpy's BLAS from stalling on a busy machine)")
    p.add_argument("--name", default="shakespeare", help="results/NAME.md and NAME.json (default: "
                   "shakespeare; e.g. shakespeare-2800 for a run with --iters 2800)")
    p.add_argument("--no-write", action="store_true", help="print, but do not write results/")
    p.add_argument("--worker", choices=IMPLS, help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)
    import common
    if not args.data.is_file():
        p.error(f"--data {str(args.data)!r} is not a file: expected tinyshakespeare.txt")
    seeds = [int(s) for s in args.seeds.split(",")]
    impls = [f"npgpt-{b}" for b in args.backends.split(",")] if args.only != "torch" else []
    impls += ["torch"] if args.only != "npgpt" else []

    env = common.environment()
    common.print_environment(env)
    rows = []
    for seed in seeds:
        for impl in impls:
            print(f"{impl}, seed {seed}, {args.iters} steps ...", flush=True)
            rows.append(launch(impl, seed, args))
            r = rows[-1]
            print(f"  val loss {r['val loss']:.4f}, train loss {r['train loss']:.4f}, "
                  f"{r['train s']:.1f} s ({r['tokens/s']:,.0f} tokens/s), start-up {r['startup s']:.1f} s",
                  flush=True)
    fmt = {"val loss": "{:.4f}", "train loss": "{:.4f}", "train s": "{:.1f}", "tokens/s": "{:,.0f}",
           "startup s": "{:.1f}", "process s": "{:.1f}"}
    table = common.markdown_table(["impl", "seeds", "val loss", "val range", "train s", "tokens/s",
                                   "startup s"], summary(rows), fmt)
    runs = common.markdown_table(["impl", "seed", "val loss", "train loss", "train s", "tokens/s",
                                  "startup s", "process s"], rows, fmt)
    print("\n" + table + "\n\n" + runs)
    if args.no_write:
        return
    command = "python benchmarks/bench_shakespeare.py " + " ".join(argv if argv is not None else sys.argv[1:])
    notes = (f"Command: `{command.strip()}`\n\n"
             f"Goal: npgpt's validation loss at or below {GOAL_VAL_LOSS} in less training time than "
             f"PyTorch's. Validation loss: mean cross-entropy (nats per character) over "
             f"{SETTINGS['val_batches']} fixed batches of the held-out 10%; train loss: mean of the last "
             f"100 steps. {args.iters} steps of batch {SETTINGS['batch_size']} x block "
             f"{SETTINGS['block_size']}; BLAS threads: "
             f"{'the default' if args.blas_threads is None else args.blas_threads}. The machine may be "
             f"shared with other work (see load_average below, taken at the start), so times carry "
             f"noise.\n\nEach run (seed {', '.join(map(str, seeds))}):\n\n{runs}")
    env = {**env, "command": command.strip(), "settings": SETTINGS}
    md, js = common.write_results(args.name, "Baby Shakespeare: npgpt vs PyTorch, char-level GPT",
                                  env, table, rows, notes)
    print(f"\nwrote {md} and {js}")


if __name__ == "__main__":
    main()
