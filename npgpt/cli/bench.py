"""`npgpt bench`: run a benchmark script of a source checkout (benchmarks/bench_*.py)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

# --what -> (the script in benchmarks/, its quick default flags)
BENCHES = {
    "step": ("bench_step.py", ["--models", "baby", "--rounds", "1", "--steps", "5"]),
    "gemm": ("bench_gemm.py", ["--quick", "--no-one-thread"]),
    "attention": ("bench_attention.py", ["--T", "64", "256", "--repeats", "3", "--no-memory"]),
}


def add(sub) -> None:
    p = sub.add_parser("bench", help="time npgpt against PyTorch on this machine (benchmarks/*.py)",
                       description="Run a benchmark of a source checkout (benchmarks/bench_*.py, the code "
                                   "behind the README's Speed tables) with a quick default set: a GPT "
                                   "training step (baby model, NumPy and Numba backends and PyTorch, one "
                                   "round), GEMM throughput, or attention. --full runs the script's own "
                                   "defaults; flags after -- go to the script.")
    p.add_argument("--what", choices=sorted(BENCHES), default="step",
                   help="training step, matrix products or attention (default: step)")
    p.add_argument("--full", action="store_true",
                   help="the script's full default set, as the README's tables were made (minutes)")
    p.add_argument("--out", default="bench-results", metavar="DIR",
                   help="folder for the tables and plots (default: bench-results; the repository's "
                        "benchmarks/results only if named here)")
    p.add_argument("script_args", nargs=argparse.REMAINDER, metavar="-- FLAGS",
                   help="further flags for the script, e.g. -- --models gpt2 --rounds 3")
    p.set_defaults(run=run)


def run(args) -> int:
    script, quick = BENCHES[args.what]
    # an editable install runs from the checkout (npgpt/cli/bench.py -> the checkout is two
    # folders up); `pip install .` copies only the package, so the checkout it was installed
    # from is looked for in the working directory
    places = [Path(__file__).resolve().parents[2], Path.cwd()]
    found = [d / "benchmarks" / script for d in places if (d / "benchmarks" / script).is_file()]
    if not found:
        print(f"npgpt bench: error: benchmarks/{script} not found beside the npgpt package or in "
              f"{Path.cwd()}: the benchmarks live in a source checkout of npgpt; run npgpt bench "
              f"from its folder", file=sys.stderr)
        return 2
    path = found[0]
    extra = [a for a in args.script_args if a != "--"]
    cmd = [sys.executable, str(path)] + ([] if args.full else quick) + extra
    os.makedirs(args.out, exist_ok=True)
    print(" ".join(["$", "python", str(path)] + cmd[2:]), flush=True)
    env = dict(os.environ, NPGPT_BENCH_RESULTS=os.path.abspath(args.out))
    return subprocess.run(cmd, env=env).returncode
