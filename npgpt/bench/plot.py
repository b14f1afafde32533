"""The roofline picture: the machine's two roofs and every workload as a point under them.

x: arithmetic intensity (FLOP per byte moved), y: GFLOP/s, both on log scales. For each thread
count the roof is min(peak GFLOP/s, intensity * triad GB/s): a slope where memory bounds, flat
where compute does. A point's height under its roof is the fraction `npgpt bench` reports.
matplotlib is optional (the `bench` extra): without it `draw` says so and returns False.
"""

from __future__ import annotations

import io

import numpy as np

from ..files import write_atomic
from .report import Report

MARKERS = {"train": "o", "prefill": "s", "decode": "^"}


def draw(report: Report, path) -> bool:
    """Write the roofline of report to path (PNG), one panel per thread count; False if
    matplotlib is not installed."""
    try:
        import matplotlib  # optional heavy dependency: plotting
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # optional heavy dependency: plotting
    except ImportError:
        return False
    points = [r for r in report.results if r.test in MARKERS and r.seconds and r.flops]
    roofs = sorted(report.roofs.items(), key=lambda kv: int(kv[0]))
    counts = [int(t) for t, _ in roofs] or sorted({r.threads for r in points}) or [1]
    fig, axes = plt.subplots(1, len(counts), figsize=(5.2 * len(counts), 5.2), sharey=True, squeeze=False)
    lo = min([r.flops / r.nbytes for r in points] + [0.1]) / 2
    hi = max([r.flops / r.nbytes for r in points] + [100.0]) * 2
    impls = sorted({r.impl for r in points})
    for ax, threads in zip(axes[0], counts):
        _panel(ax, np.geomspace(lo, hi, 200), report.roofs.get(str(threads)),
               [r for r in points if r.threads == threads], impls, threads)
    axes[0][0].set_ylabel("GFLOP/s")
    fig.suptitle(f"Roofline: {report.machine.get('cpu')}, {report.machine.get('cores')} cores")
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=110)
    plt.close(fig)
    write_atomic(path, png.getvalue())        # never a half-written picture
    return True


def _panel(ax, x, roof, points, impls, threads) -> None:
    """One thread count: its roof, its workloads (colour: who ran it; shape: the test), npgpt's
    labelled with the model (the peer's stand beside them)."""
    if roof:
        ax.plot(x, np.minimum(roof["gflops"], x * roof["gbs"]), color="black", lw=1.4,
                label=f"roof: {roof['gflops']:.0f} GFLOP/s, {roof['gbs']:.1f} GB/s")
    for r in points:
        xy = (r.flops / r.nbytes, r.flops / r.mean_s() / 1e9)
        ax.scatter(*xy, marker=MARKERS[r.test], color=f"C{impls.index(r.impl)}", s=45, zorder=3)
        if r.impl.startswith("npgpt"):
            ax.annotate(r.model, xy, textcoords="offset points", xytext=(6, -3), fontsize=7)
    for impl in impls:
        ax.scatter([], [], color=f"C{impls.index(impl)}", label=impl)
    for test, marker in MARKERS.items():
        ax.scatter([], [], marker=marker, color="gray", label=test)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP per byte)")
    ax.set_title(f"{threads} thread{'s' if threads != 1 else ''}")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7, loc="lower right")
