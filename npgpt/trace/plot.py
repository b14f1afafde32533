"""`npgpt plot RUN`: the loss curve of a run and, where it logged them (--health-every), its
training health: activation std, gradient norm and update-to-weight ratio per layer.

    path = plot_run("out")                  # reads out/log.jsonl, writes out/plot.png

Four panels share the step axis: the training loss (and the validation loss where it was
measured); each layer's activation std; each layer's gradient norm (log scale); each layer's
update-to-weight ratio (log scale, with the 1e-3 that Karpathy's lectures give as a rule of
thumb for a healthy rate of learning). A run without health records gets the loss panel alone.
matplotlib is an optional dependency, imported only here. The PNG's folder is checked before
anything is drawn, and the picture is written atomically (npgpt.files): never half a PNG.
"""

from __future__ import annotations

import io
from pathlib import Path

from ..files import write_atomic
from ..trainer import LOG_NAME, read_log

PLOT_NAME = "plot.png"
RULE_OF_THUMB = 1e-3     # update / weight per step that the lectures call healthy


def log_path(run) -> Path:
    """RUN's log.jsonl: a run folder, or the log file itself; a missing one is an error."""
    path = Path(run)
    log = path / LOG_NAME if path.is_dir() else path
    if not log.is_file():
        raise FileNotFoundError(f"{str(run)!r} is not a run: {str(log)!r} does not exist (expected a "
                                f"folder of `npgpt train`, `npgpt seq2seq train` or `npgpt finetune`, or "
                                f"its {LOG_NAME})")
    return log


def _series(records, key: str) -> dict:
    """{layer: ([steps], [values])} of one health statistic."""
    out: dict = {}
    for r in records:
        for layer, value in r["health"][key].items():
            if value is not None:
                steps, values = out.setdefault(layer, ([], []))
                steps.append(r["step"])
                values.append(value)
    return out


def _plot_target(log: Path, out=None) -> Path:
    """Where the PNG goes: out, or the run's folder/plot.png; a folder that does not exist (or
    out naming a folder) is an error before anything is drawn."""
    target = Path(out) if out is not None else log.parent / PLOT_NAME
    folder = target.resolve().parent
    if not folder.is_dir():
        raise FileNotFoundError(f"--out {str(target)!r}: the folder {str(folder)!r} does not exist "
                                f"(checked before drawing): expected a PNG file in an existing folder")
    if target.is_dir():
        raise IsADirectoryError(f"--out {str(target)!r} is a folder: expected a PNG file name")
    return target


def plot_run(run, out=None) -> Path:
    """Draw RUN's log (see the module docstring) to out (default: RUN/plot.png); return its path."""
    log = log_path(run)
    target = _plot_target(log, out)
    import matplotlib  # optional heavy dependency: only `npgpt plot` draws
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # optional heavy dependency (see above)
    records = [r for r in read_log(log) if "loss" in r and "step" in r]
    if not records:
        raise ValueError(f"{str(log)!r} holds no training steps yet: nothing to plot")
    health = [r for r in records if "health" in r]
    panels = 4 if health else 1
    fig, axes = plt.subplots(panels, 1, figsize=(9, 2.6 * panels + 0.6), sharex=True, squeeze=False)
    axes = axes[:, 0]
    ax = axes[0]
    ax.plot([r["step"] for r in records], [r["loss"] for r in records], lw=0.8, label="train loss")
    val = [r for r in records if "val_loss" in r]
    if val:
        ax.plot([r["step"] for r in val], [r["val_loss"] for r in val], "o-", ms=3, label="validation loss")
    ax.set_ylabel("loss")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(f"{log.parent.name or log.name}: loss" + ("" if health else " (no health records: train "
                                                                             "with --health-every N)"))
    titles = {"act_std": ("activation std per layer", False), "grad_norm": ("gradient norm per layer", True),
              "update_ratio": ("update / weight per layer", True)}
    layers = list(dict.fromkeys(k for r in health for key in titles for k in r["health"][key]))
    cmap = plt.get_cmap("tab10" if len(layers) <= 10 else "tab20")
    color = {layer: cmap(i % cmap.N) for i, layer in enumerate(layers)}     # one colour per layer
    for ax, (key, (title, logy)) in zip(axes[1:], titles.items()):
        for layer, (steps, values) in _series(health, key).items():
            ax.plot(steps, values, lw=0.9, label=layer, color=color[layer])
        if key == "update_ratio":
            ax.axhline(RULE_OF_THUMB, color="k", ls="--", lw=0.7, label="1e-3")
        if logy:
            ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, ncol=1 + len(ax.lines) // 14)
    axes[-1].set_xlabel("step")
    fig.tight_layout()
    png = io.BytesIO()
    try:
        fig.savefig(png, format="png", dpi=110)
    finally:
        plt.close(fig)
    write_atomic(target, png.getvalue())        # never a half-written picture
    return target
