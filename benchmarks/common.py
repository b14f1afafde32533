"""Shared benchmark utilities: timing by medians, the environment printed, results written.

Import this module first in a benchmark script: it imports torch (when installed) before npgpt,
so that torch's OpenMP runtime reads the environment as the user left it, before
npgpt.kernels.cpu sets OMP_WAIT_POLICY=PASSIVE for Numba's threads. Each library thus runs with
the thread settings it would have on its own; only the thread *count* is made equal
(torch.set_num_threads(numba.get_num_threads())). A worker process that times npgpt alone sets
NPGPT_BENCH_NO_TORCH=1 first: torch is then not imported at all (its OpenMP threads would share
the cores with npgpt's).

Worker processes get `worker_env()`: the environment as it was when this module was imported,
before anything in the driver imported npgpt's Numba kernels (which set OMP_WAIT_POLICY=PASSIVE
in os.environ for Numba's threads). Handing that variable on made torch's OpenMP threads sleep
between its many small parallel regions: the PyTorch twin of bench_shakespeare.py ran its 2000
steps about a quarter slower than the same loop started from a shell.

The PyTorch twin itself is npgpt/bench/twin.py (nanoGPT's model and loop; see docs/speed.md).

NPGPT_BENCH_RESULTS=DIR writes the tables and plots to DIR instead of benchmarks/results/
(the tests use it, so that a quick run does not overwrite the measured results).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

torch = None
if not os.environ.get("NPGPT_BENCH_NO_TORCH"):
    try:                             # before npgpt: see the module docstring
        import torch
    except ImportError:              # torch is an optional peer
        torch = None

import numpy as np  # noqa: E402

# A checkout runs these scripts without installing npgpt: the repository goes on the path, for
# this process and (through PYTHONPATH) for the workers it starts.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)

USER_ENV = dict(os.environ)          # before npgpt can set anything: see worker_env

RESULTS = Path(os.environ.get("NPGPT_BENCH_RESULTS") or Path(__file__).resolve().parent / "results")


def worker_env(**overrides) -> dict:
    """The environment for a worker process: the user's (as at this module's import) plus
    `overrides`. Never os.environ as it is later: see the module docstring."""
    return {**USER_ENV, **{k: str(v) for k, v in overrides.items()}}


def time_call(fn, repeats: int = 7, min_seconds: float = 0.0) -> dict:
    """Time fn(): the first call apart (compile, caches), then `repeats` calls; report the median.

    With min_seconds > 0 more calls are made until that much time was spent (at most 100), so that
    fast calls get more samples. Returns seconds: {"first", "median", "min", "max", "n"}.
    """
    t = time.perf_counter()
    fn()
    first = time.perf_counter() - t
    samples: list[float] = []
    spent = 0.0
    while len(samples) < repeats or (spent < min_seconds and len(samples) < 100):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
        spent += samples[-1]
    return {"first": first, "median": statistics.median(samples), "min": min(samples),
            "max": max(samples), "n": len(samples)}


def wait_for_quiet(max_load: float = 1.0, timeout: float = 0.0, poll: float = 10.0) -> float:
    """On a shared machine: wait up to `timeout` seconds for the 1-minute load average to fall
    below max_load, and return it (timings under load are noisy: the results record it)."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    deadline = time.monotonic() + timeout
    while load >= max_load and time.monotonic() < deadline:
        print(f"  load average {load:.2f} >= {max_load}: waiting for a quieter machine", flush=True)
        time.sleep(poll)
        load = os.getloadavg()[0]
    return load


def blas_info() -> str:
    """The BLAS numpy is linked to, with its version and threads (npgpt.bench.machine.blas)."""
    from npgpt.bench import machine
    return machine.blas()


def environment() -> dict:
    """What the numbers depend on: machine, versions, thread counts and settings."""
    import numba

    from npgpt.kernels import cpu

    cpu.warmup(("float32",))                       # starts Numba's threading layer
    env = {
        "machine": platform.processor() or platform.machine(),
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "numba_threads": numba.get_num_threads(),
        "numba_threading_layer": numba.threading_layer(),
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
        "blas": blas_info(),
        "torch": torch.__version__ if torch is not None else None,
        "torch_threads": torch.get_num_threads() if torch is not None else None,
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    return env


def torch_blas_info() -> str | None:
    """The BLAS torch was built with (its build settings' BLAS_INFO) and its thread count."""
    if torch is None:
        return None
    show = torch.__config__.show()
    blas = next((s.split("=", 1)[1] for s in show.replace(",", " ").split() if s.startswith("BLAS_INFO=")),
                "unknown")
    return f"{blas}, {torch.get_num_threads()} threads"


def set_blas_threads(n: int) -> bool:
    """Set numpy's BLAS thread count (npgpt.kernels.cpu.blas.set_blas_threads: threadpoolctl when
    installed, else OpenBLAS through ctypes). False when neither works (the BLAS keeps its own)."""
    from npgpt.kernels.cpu.blas import set_blas_threads as set_threads
    return set_threads(n)


def match_torch_threads() -> None:
    """Give torch the thread count Numba uses, so the two compare on the same cores."""
    if torch is not None:
        import numba
        torch.set_num_threads(numba.get_num_threads())


def _cpu_name() -> str:
    from npgpt.bench import machine
    return machine.cpu_model(machine.cpuinfo())


def print_environment(env: dict) -> None:
    for key, value in env.items():
        print(f"  {key:22s} {value}")


def markdown_table(columns: list[str], rows: list[dict], formats: dict | None = None) -> str:
    """A markdown table of rows (dicts) in the given column order; formats: {column: '{:.1f}'}."""
    formats = formats or {}

    def cell(row, col):
        value = row.get(col)
        if value is None:
            return "–"
        return formats[col].format(value) if col in formats else str(value)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r, c) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_results(name: str, title: str, env: dict, table: str, rows: list[dict],
                  notes: str = "") -> tuple[Path, Path]:
    """Write results/<name>.md (title, notes, table, environment) and results/<name>.json."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    md = RESULTS / f"{name}.md"
    js = RESULTS / f"{name}.json"
    env_lines = "\n".join(f"- {k}: {v}" for k, v in env.items())
    md.write_text(f"# {title}\n\n{notes.strip()}\n\n{table}\n\nEnvironment "
                  f"(written by `python benchmarks/{name_of_script()}`, "
                  f"{time.strftime('%Y-%m-%d %H:%M')}):\n\n{env_lines}\n")
    js.write_text(json.dumps({"title": title, "environment": env, "rows": rows}, indent=1) + "\n")
    return md, js


def name_of_script() -> str:
    return Path(sys.argv[0]).name


def pyplot():
    """matplotlib.pyplot with a file-only backend, or None when matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        return plt
    except ImportError:
        print("  (matplotlib is not installed: no plot)")
        return None


def save_figure(fig, name: str) -> None:
    """Lay the figure out and write it to RESULTS/name (a PNG at 110 dpi)."""
    fig.tight_layout()
    path = RESULTS / name
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")
