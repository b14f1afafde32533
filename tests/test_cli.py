"""The command line: `npgpt train` and `npgpt sample` end to end, with tiny settings in a
temporary folder; the flags of every command; the scripts of benchmarks/ at tiny sizes."""

import argparse
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from npgpt.cli import build_parser, main
from npgpt.cli.flags import config_flags
from npgpt.data import default_corpus
from npgpt.runs import FinetuneConfig, PretrainConfig, Seq2SeqConfig

ROOT = Path(__file__).resolve().parents[1]

TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16", "--batch-size", "4",
        "--eval-iters", "2", "--warmup", "2"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "corpus.txt"
    path.write_text(default_corpus()[:20_000], encoding="utf-8")
    return str(path)


def test_train_then_sample(tmp_path, corpus, capsys):
    out = str(tmp_path / "run")
    rc = main(["train", "--data", corpus, "--out", out, "--max-iters", "6", "--eval-interval", "3",
               "--sample-tokens", "20", *TINY])
    printed = capsys.readouterr().out
    assert rc == 0
    assert "step 3: train loss" in printed and "val loss" in printed and "sample (20 tokens" in printed
    log = [json.loads(line) for line in open(f"{out}/log.jsonl")]
    assert [r["step"] for r in log] == list(range(1, 7))

    rc = main(["sample", "--checkpoint", out, "--prompt", "The ", "--max-new-tokens", "25", "--seed", "1"])
    text = capsys.readouterr().out
    assert rc == 0 and text.startswith("The ") and len(text) == len("The ") + 25 + 1    # + newline
    rc = main(["sample", "--checkpoint", f"{out}/ckpt.safetensors", "--prompt", "The ", "--max-new-tokens",
               "25", "--seed", "1", "--no-cache"])
    assert rc == 0 and capsys.readouterr().out == text     # the KV cache changes nothing

    # continue the same run for more steps
    rc = main(["train", "--resume", "--out", out, "--max-iters", "8", "--sample-tokens", "0"])
    assert rc == 0 and "resuming" in capsys.readouterr().out
    assert [json.loads(line)["step"] for line in open(f"{out}/log.jsonl")] == list(range(1, 9))


def test_bpe_tokenizer(tmp_path, corpus, capsys):
    out = str(tmp_path / "bpe")
    rc = main(["train", "--data", corpus, "--out", out, "--max-iters", "2", "--tokenizer", "bpe",
               "--vocab-size", "300", "--sample-tokens", "5", *TINY])
    assert rc == 0 and "bpe tokens (vocabulary 300)" in capsys.readouterr().out
    assert main(["sample", "--checkpoint", out, "--max-new-tokens", "5"]) == 0


@pytest.mark.parametrize("argv, message", [
    (["train", "--max-iters", "0"], "max_iters=0 (--max-iters): expected a positive integer"),
    (["train", "--dropout", "1.5"], "dropout=1.5 (--dropout): expected a number in [0, 1)"),
    (["train", "--data", "/no/such/file.txt"], "'/no/such/file.txt' does not exist"),
    (["sample", "--checkpoint", "/no/such/ckpt.safetensors"], "does not exist"),
    (["sample", "--gpt2", "/no/such/folder"], "is not a directory"),
])
def test_bad_input_is_one_clear_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_sample_errors_name_the_problem(tmp_path, corpus, capsys):
    out = str(tmp_path / "run")
    assert main(["train", "--data", corpus, "--out", out, "--max-iters", "2", "--sample-tokens", "0", *TINY]) == 0
    capsys.readouterr()
    assert main(["sample", "--checkpoint", out, "--prompt", "naïve ☃"]) == 2
    assert "text[2] is 'ï', a character this tokenizer does not know" in capsys.readouterr().err
    assert main(["sample", "--checkpoint", out, "--prompt", "x" * 40, "--no-window"]) == 2
    assert "at most block_size=16" in capsys.readouterr().err
    assert main(["sample", "--checkpoint", out, "--temperature", "-1"]) == 2
    assert "--temperature -1.0: expected a number >= 0" in capsys.readouterr().err
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(open(f"{out}/ckpt.safetensors", "rb").read()[:1000])
    assert main(["sample", "--checkpoint", str(truncated)]) == 2
    assert "cut.safetensors" in capsys.readouterr().err
    # training again into the same folder would overwrite the run: refused
    assert main(["train", "--data", corpus, "--out", out, "--max-iters", "2", *TINY]) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert main(["train", "--resume", "--out", out, "--lr", "0.5"]) == 2
    assert "lr 0.5 (the run has" in capsys.readouterr().err


# -- --out must be a folder ---------------------------------------------------------------------

TRAINING_COMMANDS = [
    (["train"], "npgpt train", "ckpt.safetensors, log.jsonl"),
    (["seq2seq", "train"], "npgpt seq2seq train", "ckpt.safetensors, log.jsonl, eval.jsonl"),
    (["finetune", "--init", "none"], "npgpt finetune",
     "ckpt.safetensors, log.jsonl, metrics.json, adapters.safetensors, merged.safetensors"),
]


@pytest.mark.parametrize("argv, prog, files", TRAINING_COMMANDS)
@pytest.mark.parametrize("resume", [False, True])
def test_out_that_is_a_file_is_one_line_before_any_work(argv, prog, files, resume, tmp_path, capsys,
                                                         monkeypatch):
    """`--out afile` (an existing file) is refused before the data and the model: one line
    naming --out, the value and what it must be, exit status 2, the file untouched."""
    monkeypatch.chdir(tmp_path)
    Path("afile").write_text("mine")
    assert main([*argv, "--out", "afile", *(["--resume"] if resume else [])]) == 2
    out, err = capsys.readouterr()
    assert out == ""                                       # no data, model or progress line
    assert err == (f"{prog}: error: --out 'afile' is a file: expected a folder (for {files}), "
                   f"new or of an earlier run; pass another --out\n")
    assert Path("afile").read_text() == "mine"
    # a file on the way to --out is named too
    assert main([*argv, "--out", "afile/run"]) == 2
    assert "--out 'afile/run': its parent 'afile' is a file: expected a folder" in capsys.readouterr().err


# -- the flags: made from the settings, every default and choice shown -------------------------

def subparsers(parser: argparse.ArgumentParser) -> dict:
    """{name: parser} of the parser's subcommands (none: {})."""
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices) if actions else {}


def command_parser(*names: str) -> argparse.ArgumentParser:
    parser = build_parser()
    for name in names:
        parser = subparsers(parser)[name]
    return parser


CONFIGS = [(("train",), PretrainConfig), (("seq2seq", "train"), Seq2SeqConfig), (("finetune",), FinetuneConfig)]


@pytest.mark.parametrize("names, config_cls", CONFIGS, ids=[c.__name__ for _, c in CONFIGS])
def test_the_flags_are_the_fields_of_the_settings(names, config_cls):
    """One flag per field and one field per flag (besides --help and --resume), the flag named
    after the field: a field without its flag, or a flag without a field, fails here."""
    flags = {a.dest: a.option_strings for a in command_parser(*names)._actions if a.dest not in ("help", "resume")}
    fields = {f.name for f in dataclasses.fields(config_cls)}
    assert set(flags) == fields, (f"flags without a field: {sorted(set(flags) - fields)}; "
                                  f"fields without a flag: {sorted(fields - set(flags))}")
    for name, options in flags.items():
        assert options[0] == "--" + name.replace("_", "-")
    # only the flags given reach the settings, tuple fields as tuples
    args = command_parser(*names).parse_args(["--max-iters", "7", "--seed", "3"])
    assert config_flags(args, config_cls) == {"max_iters": 7, "seed": 3}


def test_tuple_flags_give_tuples():
    args = command_parser("finetune").parse_args(["--freeze", "wte", "h.0", "--freeze-blocks", "0", "2"])
    flags = config_flags(args, FinetuneConfig)
    assert flags == {"freeze": ("wte", "h.0"), "freeze_blocks": (0, 2)}
    assert FinetuneConfig(**flags).freeze_blocks == (0, 2)


def every_command(parser=None, path=()):
    """(path, parser) of every command and subcommand that takes flags."""
    parser = parser or build_parser()
    subs = subparsers(parser)
    if not subs:
        yield path, parser
    for name, sub in subs.items():
        yield from every_command(sub, (*path, name))


COMMANDS = list(every_command())


@pytest.mark.parametrize("path, parser", COMMANDS, ids=[" ".join(path) for path, _ in COMMANDS])
def test_help_shows_every_default(path, parser):
    """Every flag that takes a value says its default in --help (but translate's sources, one
    of which is required: there is no default to show)."""
    silent = [a.option_strings[0] for a in parser._actions
              if a.option_strings and a.nargs != 0 and a.dest not in ("help", "input", "input_file")
              and "default:" not in (a.help or "")]
    assert not silent, f"npgpt {' '.join(path)}: flags whose --help shows no default: {silent}"


@pytest.mark.parametrize("argv, shown", [
    (["train"], ["--tokenizer {char,bpe}", "--dtype {float32,float64}", "--backend {numpy,numba,cuda}",
                 "(default: char)", "(default: NPGPT_BACKEND or the fastest)", "(default: the preset's)",
                 "--preset {"]),
    (["seq2seq", "train"], ["--task {copy,reverse,sort,addition}", "--schedule {noam,cosine,constant}",
                            "--dtype {float32,float64}", "--backend {numpy,numba,cuda}",
                            "(default: reverse, unless --data)", "(default: cosine)", "--norm-first, --no-norm-first"]),
    (["finetune"], ["--task {lm,classify}", "--dtype {float32,float64}", "--backend {numpy,numba,cuda}",
                    "--lora-targets TARGET [TARGET ...]", "--freeze-blocks A B", "(default: attn mlp)",
                    "--lora-rank N", "(default: a tenth of --max-iters)"]),
    (["sample"], ["--backend {numpy,numba,cuda}", "--dtype {float32,float64}", "--top-k N"]),
    (["seq2seq", "translate"], ["--backend {numpy,numba,cuda}", "--beam-size N"]),
])
def test_help_shows_choices_and_defaults(argv, shown, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")                   # one line per flag
    with pytest.raises(SystemExit) as stop:
        main([*argv, "--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    missing = [s for s in shown if s not in text]
    assert not missing, f"npgpt {' '.join(argv)} --help lacks {missing}:\n{text}"


def test_python_dash_m_npgpt_runs_the_command_line():
    run = subprocess.run([sys.executable, "-m", "npgpt", "train", "--help"], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert run.returncode == 0 and "usage: npgpt train" in run.stdout


# -- benchmarks/ (npgpt bench itself: tests/bench/test_bench.py) ---------------------------------

def _script(name, *flags, results=None):
    env = {**os.environ, **({"NPGPT_BENCH_RESULTS": str(results)} if results else {})}
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), *flags], capture_output=True,
                          text=True, env=env, timeout=600)


def test_bench_step_times_npgpt_and_the_fair_twin_from_the_same_weights():
    """benchmarks/bench_step.py, one step each: the table keeps the first step and the compile
    apart, and the PyTorch twin starts from npgpt's weights (the same first loss)."""
    run = _script("bench_step.py", "--impls", "npgpt-numpy,torch", "--models", "baby", "--rounds", "1",
                  "--steps", "1", "--warmup", "0", "--no-write")
    assert run.returncode == 0, run.stderr[-2000:]
    header = next(line for line in run.stdout.splitlines() if line.startswith("| model |"))
    assert "first step s" in header and "compile s" in header
    losses = {line.split("|")[2].strip(): line.split("|")[13].strip()
              for line in run.stdout.splitlines() if line.startswith("| baby |")}
    assert set(losses) == {"npgpt-numpy", "torch"} and losses["npgpt-numpy"] == losses["torch"]


def test_bench_attention_runs_and_plots(tmp_path):
    """The attention benchmark end to end at a tiny size: every implementation timed, the table
    (and the plot, with matplotlib) written to NPGPT_BENCH_RESULTS."""
    run = _script("bench_attention.py", "--T", "16", "--repeats", "1", results=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "T=   16" in run.stdout and "numba fused" in run.stdout and "torch" in run.stdout
    written = {p.name for p in tmp_path.iterdir()}
    assert written >= {"attention.md", "attention.json"}
    # the plot needs matplotlib (the bench extra, not the test extra): written, or said why not
    assert "attention.png" in written or "matplotlib is not installed: no plot" in run.stdout


def test_cuda_check_passes_under_the_simulator():
    """benchmarks/cuda_check.py --tiny: every CUDA kernel against the reference (exit 1 on a
    mismatch), here on numba's simulator."""
    script = ROOT / "benchmarks" / "cuda_check.py"
    run = subprocess.run([sys.executable, str(script), "--tiny"], capture_output=True, text=True,
                         env={**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "checks passed" in run.stdout
