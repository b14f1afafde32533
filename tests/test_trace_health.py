"""Training health: `npgpt train --health-every N` logs each layer's activation std, gradient norm
and update-to-weight ratio every N steps without changing the run; `npgpt plot` draws them."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from npgpt.cli import main
from npgpt.optim import AdamW
from npgpt.trace.health import Health, layer_of
from npgpt.trainer import Trainer, read_log

from .test_trace import tiny_gpt

TRAIN = ["--n-layer", "1", "--n-head", "2", "--n-embd", "8", "--block-size", "8", "--batch-size", "2",
         "--eval-iters", "1", "--warmup", "1", "--sample-tokens", "0"]


def _run(around_step, dropout=0.1):
    model, batch = tiny_gpt(dropout=dropout)
    opt = AdamW(model.parameters(), lr=1e-2)
    records = []
    trainer = Trainer(model, opt, lambda rng: batch, max_iters=4, progress=False, around_step=around_step,
                      on_step=lambda t, rec: records.append(rec))
    trainer.run()
    return records, model.state_dict()


def test_health_records_every_n_steps_and_change_nothing():
    plain, w_plain = _run(None)
    watched, w_watched = _run(Health(2))
    assert [r["loss"] for r in plain] == [r["loss"] for r in watched]
    assert all(np.array_equal(w_plain[k], w_watched[k]) for k in w_plain)
    assert ["health" in r for r in watched] == [False, True, False, True]
    h = watched[1]["health"]
    assert set(h["act_std"]) == {"wte", "wpe", "drop", "h.0", "h.1", "ln_f", "lm_head"}
    assert set(h["grad_norm"]) == set(h["update_ratio"]) == {"wte", "wpe", "h.0", "h.1", "ln_f"}
    assert all(v > 0 for v in h["grad_norm"].values()) and 0 < h["update_ratio"]["h.0"] < 1
    assert 0.9 < h["act_std"]["ln_f"] < 1.1                 # a LayerNorm's output: std about 1
    json.dumps(watched)                                     # the record stays JSON


def test_layer_of_groups_parameters_by_block():
    assert layer_of("h.0.attn.c_attn.weight") == "h.0" and layer_of("wte.weight") == "wte"
    assert layer_of("decoder.3.norm1.bias") == "decoder.3" and layer_of("encoder_norm.weight") == "encoder_norm"
    with pytest.raises(ValueError, match="every"):
        Health(0)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("health") / "run"
    assert main(["train", "--out", str(out), "--max-iters", "4", "--health-every", "2",
                 "--eval-interval", "2", *TRAIN]) == 0
    return out


def test_train_health_every_writes_the_log(run_dir):
    log = read_log(run_dir / "log.jsonl")
    assert [("health" in r) for r in log] == [False, True, False, True]
    assert {"act_std", "grad_norm", "update_ratio"} == set(log[1]["health"])


def test_plot_writes_a_png(run_dir, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    assert main(["plot", str(run_dir)]) == 0
    png = run_dir / "plot.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"wrote {png}" in capsys.readouterr().out
    other = tmp_path / "x.png"                             # a log without health: the loss alone
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps({"step": s, "loss": 3.0 - s / 10}) + "\n" for s in range(1, 5)))
    assert main(["plot", str(log), "--out", str(other)]) == 0 and other.stat().st_size > 1000


def test_plot_errors(tmp_path, capsys, monkeypatch):
    assert main(["plot", str(tmp_path / "nothing")]) == 2
    assert "is not a run" in capsys.readouterr().err
    (tmp_path / "log.jsonl").write_text("")
    assert main(["plot", str(tmp_path)]) == 2
    assert "holds no training steps yet" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "matplotlib", None)      # as if it were not installed
    assert main(["plot", str(tmp_path)]) == 2
    assert capsys.readouterr().err == "npgpt plot: matplotlib is not installed: pip install matplotlib\n"


def test_plot_into_a_missing_folder_is_refused_before_drawing(run_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)      # drawing would fail: it is never reached
    out = tmp_path / "missing" / "dir" / "x.png"
    assert main(["plot", str(run_dir), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"npgpt plot: error: --out {str(out)!r}: the folder ") and "does not exist" in err
    assert err.count("\n") == 1 and not out.parent.exists()


def test_plot_writes_its_png_atomically(run_dir, tmp_path, capsys, monkeypatch):
    """A failure while the PNG is written (a full disk) leaves the earlier picture whole."""
    figure = pytest.importorskip("matplotlib.figure")
    out = tmp_path / "x.png"
    assert main(["plot", str(run_dir), "--out", str(out)]) == 0
    before = out.read_bytes()
    real = figure.Figure.savefig

    def half_then_full_disk(self, fname, *args, **kwargs):     # writes part of the PNG, then fails
        real(self, fname, *args, **kwargs)
        if hasattr(fname, "truncate"):
            fname.truncate(100)
        else:
            with open(fname, "r+b") as f:
                f.truncate(100)
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(figure.Figure, "savefig", half_then_full_disk)
    assert main(["plot", str(run_dir), "--out", str(out)]) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert out.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["x.png"]
