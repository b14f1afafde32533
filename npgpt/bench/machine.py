"""The machine a benchmark ran on: what its numbers depend on, in one dict.

    describe() -> {"cpu": "Intel(R) Xeon(R) ...", "cores": 2, "simd": "AVX-512 (512-bit)",
                   "blas": "openblas 0.3.31 (SkylakeX, 2 threads)", "numpy": ..., "numba": ...,
                   "python": ..., "os": ..., "load_average": [1.2, 0.9, 0.8]}

The CPU model comes from /proc/cpuinfo (Linux) or platform; the SIMD width from the CPU's flags
(AVX-512, AVX2, NEON); the data caches from sysfs (a model whose weights fit in the last level
decodes from cache, faster than from memory); numpy's BLAS and its thread count from
threadpoolctl when it is installed (an optional dependency, the `bench` extra), else from
OpenBLAS's own functions (openblas_get_num_threads, found among the loaded libraries), else
numpy's build configuration (the thread count unknown).
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import os
import platform
from pathlib import Path

import numpy as np

from ..kernels.cpu.blas import openblas_api

# widest first: the first flag the CPU has names its vector width
SIMD = (("avx512f", "AVX-512 (512-bit)"), ("avx2", "AVX2 (256-bit)"), ("avx", "AVX (256-bit)"),
        ("sse2", "SSE2 (128-bit)"), ("asimd", "NEON (128-bit)"), ("neon", "NEON (128-bit)"))


def cpuinfo() -> dict:
    """The first processor's fields of /proc/cpuinfo ({} where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    fields = {}
    for line in text.split("\n\n")[0].splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def cpu_model(info: dict) -> str:
    return info.get("model name") or info.get("Model") or platform.processor() or platform.machine()


def simd_width(info: dict) -> str:
    """The widest vector instructions the CPU reports (x86 "flags", Arm "Features")."""
    flags = set((info.get("flags") or info.get("Features") or "").split())
    if not flags and platform.machine() in ("arm64", "aarch64"):
        flags = {"asimd"}                   # every 64-bit Arm core has NEON
    return next((name for flag, name in SIMD if flag in flags), "unknown")


def caches() -> str:
    """The data caches of the first CPU, from sysfs (Linux): "L1d 48K, L2 2048K, L3 516096K"."""
    found = []
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level, kind, size = ((index / f).read_text().strip() for f in ("level", "type", "size"))
        except OSError:
            continue
        if kind != "Instruction":
            found.append(f"L{level}{'d' if kind == 'Data' else ''} {size}")
    return ", ".join(found) or "unknown"


def blas(threads: bool = True) -> str:
    """numpy's BLAS: library, version, the kernel it chose for this CPU and (threads=True) the
    size of its thread pool in this process."""
    try:
        # optional dependency (the `bench` extra): the running BLAS and its thread pool
        from threadpoolctl import threadpool_info
    except ImportError:
        threadpool_info = None
    if threadpool_info is not None:
        libs = [f"{d['internal_api']} {d['version']} ({d.get('architecture') or '?'}"
                + (f", {d['num_threads']} threads)" if threads else ")")
                for d in threadpool_info() if d.get("user_api") == "blas"]
        if libs:
            return ", ".join(libs)
    own = openblas_info() if threads else None
    if own is not None:
        return own
    try:
        dep = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{dep.get('name')} {dep.get('version')} (threads unknown: pip install threadpoolctl)"
    except Exception as e:       # show_config's layout differs between numpy versions
        return f"unknown ({type(e).__name__})"


def openblas_info() -> str | None:
    """numpy's OpenBLAS as it runs here, asked through its own API (no threadpoolctl needed):
    its build string, the kernel it chose for this CPU (e.g. SkylakeX: AVX-512) and its thread
    count; None when numpy's BLAS is not OpenBLAS."""
    config, core, threads = (openblas_api(name) for name in ("get_config", "get_corename", "get_num_threads"))
    if config is None:
        return None
    for f in (config, core):
        if f is not None:
            f.restype = ctypes.c_char_p
    parts = [config().decode().strip()]
    if core is not None:
        parts.append(f"kernel {core().decode()}")
    if threads is not None:
        parts.append(f"{threads()} threads")
    return ", ".join(parts)


def describe() -> dict:
    """What the numbers depend on (see the module docstring)."""
    info = cpuinfo()
    return {"cpu": cpu_model(info), "cores": os.cpu_count(), "simd": simd_width(info),
            "caches": caches(), "blas": blas(threads=False), "numpy": np.__version__, "numba": importlib.metadata.version("numba"),
            "python": platform.python_version(), "os": f"{platform.system()} {platform.release()}",
            "load_average": load_average()}


def load_average() -> list[float] | None:
    """The 1, 5 and 15-minute load averages (None where the OS has none): timings on a busy
    machine are slower and noisier, so every report carries them."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
