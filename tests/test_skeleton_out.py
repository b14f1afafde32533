"""--out, checked by the run skeleton before any work (npgpt.runs.skeleton.check_out_folder): an
empty --out is refused (Path("") is the current folder, where a run would scatter its files),
and a file in the way is named for what it is, --out itself or a folder above it."""

from __future__ import annotations

from pathlib import Path

import pytest

from npgpt.cli import main

COMMANDS = [(["train"], "npgpt train"), (["seq2seq", "train"], "npgpt seq2seq train"),
            (["finetune", "--init", "none"], "npgpt finetune")]


@pytest.mark.parametrize("argv, prog", COMMANDS)
@pytest.mark.parametrize("resume", [False, True])
def test_empty_out_is_refused(argv, prog, resume, tmp_path, capsys, monkeypatch):
    """--out "": one line naming --out and what it must be, exit status 2, nothing written in
    the current folder."""
    monkeypatch.chdir(tmp_path)
    assert main([*argv, "--out", "", *(["--resume"] if resume else [])]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"{prog}: error: --out '' is empty: expected a folder (for ")
    assert err.endswith("(--out . for the current folder)\n") and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []


def test_a_file_above_out_is_named_as_the_parent(tmp_path, capsys, monkeypatch):
    """--out afile/run: the parent 'afile' is the file, not --out; deeper, it is on the path."""
    monkeypatch.chdir(tmp_path)
    Path("afile").write_text("mine")
    assert main(["train", "--out", "afile/run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("npgpt train: error: --out 'afile/run': its parent 'afile' is a file: expected "
                          "a folder (for ckpt.safetensors, log.jsonl)"), err
    assert "'afile/run' is a file" not in err
    assert main(["train", "--out", "afile/run/deeper", "--resume"]) == 2
    assert "--out 'afile/run/deeper': 'afile', on its path, is a file: expected" in capsys.readouterr().err
    assert main(["train", "--out", "afile"]) == 2
    assert "--out 'afile' is a file: expected a folder" in capsys.readouterr().err
    assert Path("afile").read_text() == "mine"
