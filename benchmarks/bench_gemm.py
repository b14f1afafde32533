"""GEMM throughput: numpy's BLAS, npgpt's Numba GEMM, torch, in GFLOP/s (float32).

    python benchmarks/bench_gemm.py                 # squares and the GPT models' own shapes
    python benchmarks/bench_gemm.py --quick         # fewer repeats, squares up to 1024

Shapes (M, K) @ (K, N): squares 256 ... 2048, then the matmuls of one training step of the
"baby" GPT (B*T = 768 rows, C = 128, 4C = 512, V = 65) and of GPT-2 124M (B*T = 256 rows,
C = 768, 3C = 2304, 4C = 3072, V = 50257). GFLOP/s = 2 M N K / median seconds; the first call
(Numba's compile or cache load) is reported apart. torch runs with torch.set_num_threads equal
to Numba's thread count. The "numba / blas" column is why cpu.matmul takes BLAS (the study
GEMM, kernels/cpu/gemm.py, is slower on every shape measured). Writes results/gemm.md, gemm.json
and gemm.png.
"""

from __future__ import annotations

import argparse
import statistics
import time

import common  # noqa: F401  (imports torch before npgpt: see common.py)
import numpy as np
from common import torch

from npgpt.kernels import cpu

SQUARES = [(n, n, n) for n in (256, 512, 1024, 2048)]
MODEL_SHAPES = [
    ("baby qkv", (768, 128, 384)), ("baby mlp up", (768, 128, 512)),
    ("baby mlp down", (768, 512, 128)), ("baby head", (768, 128, 65)),
    ("gpt2 qkv", (256, 768, 2304)), ("gpt2 mlp up", (256, 768, 3072)),
    ("gpt2 mlp down", (256, 3072, 768)), ("gpt2 head", (256, 768, 50257)),
]


def bench_shape(name, M, K, N, repeats, one_thread=False, dtype=np.float32) -> dict:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((M, K)).astype(dtype)
    b = rng.standard_normal((K, N)).astype(dtype)
    flop = 2.0 * M * N * K
    row = {"shape": name, "M": M, "K": K, "N": N}
    calls = {"blas": lambda: a @ b, "numba": lambda: cpu.gemm(a, b)}
    if torch is not None:
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        calls["torch"] = lambda: ta @ tb
    if one_thread:
        for impl, fn in calls.items():
            row[f"{impl} 1-thread"] = flop / one_thread_seconds(fn, repeats) / 1e9
        return row
    for impl, fn in calls.items():
        t = common.time_call(fn, repeats=repeats, min_seconds=0.3)
        row[f"{impl} GFLOP/s"] = flop / t["median"] / 1e9
        row[f"{impl} first ms"] = t["first"] * 1e3
    row["numba / blas"] = row["numba GFLOP/s"] / row["blas GFLOP/s"]
    return row


def one_thread_seconds(fn, repeats) -> float:
    """Median CPU time (time.process_time) of fn() with BLAS, Numba and torch on one thread each
    (set by the caller): the work each does, which other processes cannot inflate."""
    fn()
    samples = []
    for _ in range(repeats):
        t = time.process_time()
        fn()
        samples.append(time.process_time() - t)
    return statistics.median(samples)


def set_threads(n: int) -> bool:
    """All three libraries on n threads; False if numpy's BLAS could not be set."""
    import numba
    numba.set_num_threads(n)
    if torch is not None:
        torch.set_num_threads(n)
    return common.set_blas_threads(n)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="3 repeats, squares up to 1024 only")
    parser.add_argument("--no-one-thread", action="store_true",
                        help="skip the one-thread CPU-time columns")
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                        help="first wait up to SECONDS for the load average to fall below 1")
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else args.repeats
    shapes = [(f"{m}x{k}x{n}", (m, k, n)) for m, k, n in SQUARES]
    shapes = shapes[:3] if args.quick else shapes + MODEL_SHAPES

    common.wait_for_quiet(timeout=args.wait_quiet)
    compile_seconds = cpu.warmup(("float32",))
    env = common.environment()
    common.match_torch_threads()
    env["torch_threads"] = torch.get_num_threads() if torch is not None else None
    env["compile or cache-load seconds (cpu.warmup)"] = {k: round(v, 3) for k, v in compile_seconds.items()}
    print("GEMM float32, GFLOP/s (median)")
    common.print_environment(env)
    rows = []
    for name, (M, K, N) in shapes:
        row = bench_shape(name, M, K, N, repeats)
        if not args.no_one_thread:
            import numba
            threads = numba.get_num_threads()
            if set_threads(1):
                row.update(bench_shape(name, M, K, N, 3, one_thread=True))
            set_threads(threads)
        rows.append(row)
        print(f"  {name:14s} ({M:5d},{K:5d})@({K:5d},{N:6d})  blas {row['blas GFLOP/s']:6.1f}  "
              f"numba {row['numba GFLOP/s']:6.1f}  torch {row.get('torch GFLOP/s', float('nan')):6.1f}"
              f"  numba/blas {row['numba / blas']:.2f}  1-thread: blas "
              f"{row.get('blas 1-thread', float('nan')):5.1f} numba {row.get('numba 1-thread', float('nan')):5.1f}"
              f" torch {row.get('torch 1-thread', float('nan')):5.1f}", flush=True)

    columns = ["shape", "M", "K", "N", "blas GFLOP/s", "numba GFLOP/s", "torch GFLOP/s",
               "numba / blas", "numba first ms"]
    if not args.no_one_thread:
        columns += ["blas 1-thread", "numba 1-thread", "torch 1-thread"]
    formats = {c: "{:.1f}" for c in columns[4:]}
    formats["numba / blas"] = "{:.2f}"
    notes = f"""
(M, K) @ (K, N) in float32, GFLOP/s = 2 M N K / median time of at least {repeats} calls after a
first call ("numba first ms": the first call of that shape, after `cpu.warmup` compiled or
loaded the kernels). "numba" is `npgpt.kernels.cpu.gemm` (the 4 x 4 register tile over
packed B^T, cache-blocked; it includes packing b transposed); "blas" is numpy's `a @ b`; torch is
`torch.from_numpy(a) @ torch.from_numpy(b)`. `cpu.matmul` takes BLAS: "numba / blas" is below 1
on every shape measured. "1-thread" columns: GFLOP/s from the CPU time of one call with BLAS,
Numba and torch each on one thread, which other processes on the shared machine cannot inflate
(wall-clock GFLOP/s can: the load average is recorded below).
"""
    md, js = common.write_results("gemm", "GEMM throughput (float32)", env,
                                  common.markdown_table(columns, rows, formats), rows, notes)
    print(f"wrote {md} and {js}")
    plot(rows)


def plot(rows) -> None:
    plt = common.pyplot()
    if plt is None:
        return
    names = [r["shape"] for r in rows]
    x = np.arange(len(rows))
    impls = [i for i in ("blas", "numba", "torch") if f"{i} GFLOP/s" in rows[0]]
    width = 0.8 / len(impls)
    fig, ax = plt.subplots(figsize=(max(7, len(rows) * 0.9), 4))
    for n, impl in enumerate(impls):
        ax.bar(x + (n - (len(impls) - 1) / 2) * width, [r[f"{impl} GFLOP/s"] for r in rows], width,
               label=impl)
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=30, ha="right")
    ax.set_ylabel("GFLOP/s (float32)")
    ax.set_title("GEMM: numpy BLAS, npgpt Numba, torch")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend()
    common.save_figure(fig, "gemm.png")


if __name__ == "__main__":
    main()
