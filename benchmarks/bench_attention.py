"""Attention forward + backward: the NumPy reference, the Numba kernels, torch's SDPA.

    python benchmarks/bench_attention.py                  # B=8, H=8, D=64, T = 64 ... 1024, causal
    python benchmarks/bench_attention.py --T 128 --repeats 3 --no-memory

For each T it times one forward plus one backward (float32, causal), median of several repeats,
first call (compile) reported apart:
    numpy         kernels/reference.py: batched BLAS products, (T, T) probabilities kept
    numba fused   kernels/cpu/attention.py: FlashAttention (forced), row log-sum-exp kept
    numba blas    kernels/cpu/attention.py: the short-sequence path (forced), batched BLAS around
                  a Numba softmax
    numba         what cpu.attention_forward picks for the shape (ATTN_FUSED_FROM_TK)
    torch         torch.nn.functional.scaled_dot_product_attention(is_causal=True), backward by
                  autograd, torch.set_num_threads = Numba's thread count

Memory, two ways:
    peak RSS      the process's resident memory, sampled every 0.5 ms during one forward+backward,
                  minus before, in a fresh subprocess per (implementation, T): the same method for
                  all three (it sees Numba's and torch's native allocations), includes the outputs
    tracemalloc   Python-level allocations only (numpy arrays made from Python): exact for the
                  reference, blind to arrays Numba allocates inside a kernel and to torch
And the CPU time of one call with numpy's BLAS, Numba and torch each on one thread (robust to
other processes on a shared machine, unlike wall time).
Writes results/attention.md, attention.json and attention.png.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
import tracemalloc

import common  # noqa: F401  (imports torch before npgpt: see common.py)
import numpy as np
from common import torch

from npgpt.kernels import cpu, reference
from npgpt.kernels.cpu import attention as cpu_attention

B, H, D = 8, 8, 64
IMPLS = ("numpy", "numba fused", "numba blas", "torch")


def make_step(impl: str, T: int, seed: int = 0):
    """A zero-argument function doing one forward and one backward of `impl` at length T."""
    rng = np.random.default_rng(seed)
    q, k, v, dout = (rng.standard_normal((B, H, T, D)).astype(np.float32) for _ in range(4))
    if impl == "numpy":
        def step():
            out, cache = reference.attention_forward(q, k, v, causal=True)
            return reference.attention_backward(dout, cache)
    elif impl in ("numba fused", "numba blas"):
        forward = (cpu_attention._attention_forward_fused if impl == "numba fused"
                   else cpu_attention._attention_forward_blas)
        bias = reference.key_bias(None, B, T, np.float32)

        def step():
            out, cache = forward(q, k, v, True, bias)
            return cpu.attention_backward(dout, cache)
    elif impl == "torch":
        tq, tk, tv = (torch.from_numpy(x).requires_grad_(True) for x in (q, k, v))
        tdout = torch.from_numpy(dout)

        def step():
            out = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, is_causal=True)
            out.backward(tdout)
            return tq.grad, tk.grad, tv.grad
    else:
        raise ValueError(f"impl={impl!r}: expected one of {IMPLS}")
    return step


def peak_rss_child(impl: str, T: int) -> None:
    """(In a subprocess.) Print the peak RSS increase of one forward+backward, in bytes."""
    import psutil
    common.match_torch_threads()
    make_step(impl, 16)()                          # compile / load kernels with a tiny shape
    step = make_step(impl, T)
    proc = psutil.Process()
    before = proc.memory_info().rss
    peak = [before]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.0005)
    sampler = threading.Thread(target=sample)
    sampler.start()
    result = step()
    done.set()
    sampler.join()
    peak[0] = max(peak[0], proc.memory_info().rss)
    del result
    print(json.dumps({"peak_rss": peak[0] - before}))


def peak_rss(impl: str, T: int) -> int | None:
    try:
        import psutil  # noqa: F401
    except ImportError:
        return None
    run = subprocess.run([sys.executable, __file__, "--rss-child", impl, str(T)],
                         capture_output=True, text=True, timeout=600)
    if run.returncode != 0:
        print(f"  peak RSS of {impl} at T={T} failed: {run.stderr.strip()[-300:]}")
        return None
    return json.loads(run.stdout.strip().splitlines()[-1])["peak_rss"]


def traced_peak(impl: str, T: int) -> int:
    step = make_step(impl, T)
    step()
    tracemalloc.start()
    try:
        step()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def one_thread_cpu_ms(impl: str, T: int, repeats: int) -> float:
    """Median CPU time (time.process_time) of one forward+backward on one thread: the work each
    implementation does, as other processes on a shared machine cannot inflate it."""
    import numba
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    common.set_blas_threads(1)
    if torch is not None:
        torch.set_num_threads(1)
    try:
        step = make_step(impl, T)
        step()
        samples = []
        for _ in range(repeats):
            t = time.process_time()
            step()
            samples.append(time.process_time() - t)
        return float(np.median(samples)) * 1e3
    finally:
        numba.set_num_threads(threads)
        common.set_blas_threads(threads)
        common.match_torch_threads()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--T", type=int, nargs="+", default=[64, 128, 256, 512, 1024])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-memory", action="store_true", help="skip the memory measurements")
    parser.add_argument("--rss-child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                        help="first wait up to SECONDS for the load average to fall below 1")
    args = parser.parse_args(argv)
    if args.rss_child:
        peak_rss_child(args.rss_child[0], int(args.rss_child[1]))
        return

    common.wait_for_quiet(timeout=args.wait_quiet)
    env = common.environment()
    common.match_torch_threads()
    env["torch_threads"] = torch.get_num_threads() if torch is not None else None
    print("attention forward + backward, float32, causal, B=%d H=%d D=%d" % (B, H, D))
    common.print_environment(env)
    impls = [i for i in IMPLS if i != "torch" or torch is not None]
    rows = []
    for T in args.T:
        row = {"T": T, "ATTN_FUSED_FROM_TK": cpu_attention.ATTN_FUSED_FROM_TK}
        for impl in impls:
            timing = common.time_call(make_step(impl, T), repeats=args.repeats, min_seconds=0.5)
            row[f"{impl} ms"] = timing["median"] * 1e3
            row[f"{impl} first ms"] = timing["first"] * 1e3
            row[f"{impl} n"] = timing["n"]
        row["numba ms"] = row["numba fused ms"] if T >= cpu_attention.ATTN_FUSED_FROM_TK else row["numba blas ms"]
        if torch is not None:
            row["numba / torch"] = row["numba ms"] / row["torch ms"]
            for impl in ("numpy", "numba fused", "torch"):
                row[f"{impl} 1-thread CPU ms"] = one_thread_cpu_ms(impl, T, min(args.repeats, 3))
            row["fused / torch (1-thread CPU)"] = (row["numba fused 1-thread CPU ms"]
                                                   / row["torch 1-thread CPU ms"])
        if not args.no_memory:
            for impl in impls:
                row[f"{impl} peak RSS MiB"] = (lambda b: None if b is None else b / 2**20)(peak_rss(impl, T))
            for impl in ("numpy", "numba fused"):
                row[f"{impl} tracemalloc MiB"] = traced_peak(impl, T) / 2**20
        rows.append(row)
        print("  T=%5d  " % T + "  ".join(f"{i}: {row[f'{i} ms']:8.1f} ms" for i in impls), flush=True)

    columns = ["T"] + [f"{i} ms" for i in impls] + ["numba ms"]
    if torch is not None:
        columns += ["numba / torch", "numpy 1-thread CPU ms", "numba fused 1-thread CPU ms",
                    "torch 1-thread CPU ms", "fused / torch (1-thread CPU)"]
    if not args.no_memory:
        columns += [f"{i} peak RSS MiB" for i in impls] + ["numpy tracemalloc MiB",
                                                            "numba fused tracemalloc MiB"]
    formats = {c: "{:.1f}" for c in columns if c != "T"}
    formats["numba / torch"] = "{:.2f}"
    formats["fused / torch (1-thread CPU)"] = "{:.2f}"
    notes = f"""
One forward plus one backward of causal self-attention, float32, B={B}, H={H}, D={D}; median of
at least {args.repeats} calls after a first (compile) call. "numba" is what
`cpu.attention_forward` picks: the short-sequence path (batched BLAS around a Numba softmax)
below T = {cpu_attention.ATTN_FUSED_FROM_TK} keys, the fused FlashAttention kernel from there on. Peak RSS:
resident memory sampled every 0.5 ms during one call, minus before, in a fresh subprocess;
tracemalloc: Python-level allocations only (blind to Numba's in-kernel arrays and to torch).
"1-thread CPU ms": CPU time of one call with BLAS, Numba and torch each on one thread, which
other processes on the shared machine cannot inflate (wall times can: the load average is recorded
below).
"""
    md, js = common.write_results("attention", "Attention forward + backward", env,
                                  common.markdown_table(columns, rows, formats), rows, notes)
    print(f"wrote {md} and {js}")
    plot(rows, impls)


def plot(rows, impls) -> None:
    plt = common.pyplot()
    if plt is None:
        return
    Ts = [r["T"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for impl in impls:
        axes[0].plot(Ts, [r[f"{impl} ms"] for r in rows], "o-", label=impl)
        if f"{impl} peak RSS MiB" in rows[0]:
            axes[1].plot(Ts, [r[f"{impl} peak RSS MiB"] for r in rows], "o-", label=impl)
    for ax, ylabel in zip(axes, ("ms (forward + backward)", "peak RSS increase (MiB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("T")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle(f"causal attention, float32, B={B} H={H} D={D}")
    common.save_figure(fig, "attention.png")


if __name__ == "__main__":
    main()
