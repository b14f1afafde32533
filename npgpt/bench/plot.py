"""The roofline picture: the machine's two roofs and every workload as a point under them.

x: arithmetic intensity (FLOP per byte moved), y: GFLOP/s, both on log scales. For each thread
count the roof is min(peak GFLOP/s, intensity * triad GB/s): a slope where memory bounds, flat
where compute does. A point's height under its roof is the fraction `npgpt bench` reports.
matplotlib is optional (the `bench` extra): without it `draw` says so and returns False.
"""

from __future__ import annotations

import numpy as np

from .report import Report

MARKERS = {"train": "o", "prefill": "s", "decode": "^"}


def draw(report: Report, path) -> bool:
    """Write the roofline of report to path (PNG); False if matplotlib is not installed."""
    try:
        import matplotlib  # optional heavy dependency: plotting
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # optional heavy dependency: plotting
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(8, 5.5))
    points = [r for r in report.results if r.test in MARKERS and r.seconds and r.flops]
    lo = min([r.flops / r.nbytes for r in points] + [0.1]) / 2
    hi = max([r.flops / r.nbytes for r in points] + [100.0]) * 2
    x = np.geomspace(lo, hi, 200)
    impls = sorted({r.impl for r in points})
    for n, (threads, roof) in enumerate(sorted(report.roofs.items(), key=lambda kv: int(kv[0]))):
        y = np.minimum(roof["gflops"], x * roof["gbs"])
        ax.plot(x, y, color="black", lw=1.5 - 0.4 * n, ls=("-", "--", ":", "-.")[n % 4],
                label=f"roof, {threads} threads: {roof['gflops']:.0f} GFLOP/s, {roof['gbs']:.1f} GB/s")
    for r in points:
        color = f"C{impls.index(r.impl)}"
        ax.scatter(r.flops / r.nbytes, r.flops / r.mean_s() / 1e9, marker=MARKERS[r.test], color=color,
                   s=45, zorder=3)
        ax.annotate(f"{r.model} {r.label} ({r.threads})", (r.flops / r.nbytes, r.flops / r.mean_s() / 1e9),
                    textcoords="offset points", xytext=(5, -10), fontsize=7)
    for impl in impls:
        ax.scatter([], [], color=f"C{impls.index(impl)}", label=impl)
    for test, marker in MARKERS.items():
        ax.scatter([], [], marker=marker, color="gray", label=test)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP per byte)")
    ax.set_ylabel("GFLOP/s")
    ax.set_title(f"Roofline: {report.machine.get('cpu')}")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
