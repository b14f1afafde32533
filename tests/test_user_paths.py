"""The paths a new user takes (issue "Every path a user takes"): one test per rough edge found,
each with the command, its exit status, its one-line message and the files it leaves.

    1  a tokenizer smaller than the model's vocabulary: sampling draws only decodable ids
    2  a bad NPGPT_BACKEND (or cuda without a GPU): one line for every command, --help still works
    3  --resume from another folder, and the data named by another path
    4  short runs with the default warmup; a warmup longer than the run, in the same words everywhere
    5  SIGTERM saves like Ctrl-C (exit 143), in every training command; a full disk keeps the
       previous checkpoint
    6  files honour the umask (022 and 077)
    7  a long context without --block-size is said, with a suggestion
    8  no two commands of a docs page train into the same folder (the full run: test_docs.py)
    9  the messages: a non-UTF-8 CSV, a setting of the other task, --checkpoint none,
       --lora-targets, Python's resume hint, sample's checks before printing, BPE's warning
       (load_lora changing nothing when it fails: tests/test_finetune.py)
    10 save_gpt2's bos/eos token fits the vocabulary
    11 bare npgpt, --version, an unknown flag shown with its own command's usage
    12 the docs' flag tables name every flag, and list the flags --resume lets change as its help
       does; a resume with a longer --max-iters prints the jump
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from npgpt import GPT, GPTConfig, checkpoint
from npgpt.cli import main
from npgpt.data import default_corpus
from npgpt.runs.seq2seq import Seq2SeqConfig, run as run_seq2seq
from npgpt.sample import generate_text
from npgpt.tokenizers import BPETokenizer, CharTokenizer
from npgpt.trainer import read_log
from tests.test_cli import command_parser

ROOT = Path(__file__).resolve().parents[1]
GPT_TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16", "--batch-size", "4",
            "--eval-iters", "2", "--sample-tokens", "0"]
S2S_TINY = ["--d-model", "16", "--n-head", "2", "--layers", "1", "--batch-size", "8", "--n-test", "10",
            "--min-len", "3", "--max-len", "6", "--examples", "0"]


def npgpt(*argv, env=None, cwd=None, **kw) -> subprocess.CompletedProcess:
    """`npgpt argv` in a process of its own (what a user's shell runs)."""
    env = dict(os.environ if env is None else env, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "npgpt", *argv], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=300, **kw)


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def text(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "input.txt"
    path.write_text(default_corpus()[:30_000], encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def small_tokenizer_gpt2(tmp_path_factory) -> Path:
    """A GPT-2 folder whose tokenizer (300 tokens) is smaller than the model's vocabulary (512),
    with GPT-2's context of 1024: a tokenizer trained here with a larger config, or nanoGPT's
    padded 50304."""
    folder = tmp_path_factory.mktemp("gpt2") / "tiny-gpt2"
    tok = BPETokenizer.train(default_corpus()[:20_000], 300)
    model = GPT(GPTConfig(vocab_size=512, block_size=1024, n_layer=1, n_head=2, n_embd=16), seed=0)
    checkpoint.save_gpt2(model, folder, tok)
    return folder


# -- 1. a tokenizer smaller than the model's vocabulary ----------------------------------------

def test_1_sampling_draws_only_ids_the_tokenizer_can_decode(small_tokenizer_gpt2, capsys):
    assert main(["sample", "--gpt2", str(small_tokenizer_gpt2), "--prompt", "Hello",
                 "--max-new-tokens", "60", "--temperature", "2"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("Hello") and len(out) > len("Hello\n")
    assert one_line(err) == ("npgpt sample: note: the tokenizer has 300 tokens and the model's vocabulary "
                             "512: sampling draws only the 300 ids the tokenizer can decode")
    model = GPT(GPTConfig(vocab_size=64, block_size=8, n_layer=1, n_head=1, n_embd=8), seed=0)
    ids = model.generate(np.zeros((16, 1), dtype=np.int64), 30, temperature=5.0, seed=0, vocab_limit=10)
    assert ids.max() < 10 and model.generate([0], 30, temperature=5.0, seed=0).max() >= 10
    with pytest.raises(ValueError, match=r"vocab_limit=65, expected None or an integer in \[1, 64\]"):
        model.generate([0], 1, vocab_limit=65)


def test_1_finetune_with_merge_ends_with_its_sample(small_tokenizer_gpt2, text, tmp_path, capsys):
    out = tmp_path / "ft"
    assert main(["finetune", "--init", str(small_tokenizer_gpt2), "--data", str(text), "--out", str(out),
                 "--max-iters", "2", "--block-size", "32", "--batch-size", "2", "--eval-iters", "1",
                 "--lora-rank", "2", "--merge", "--sample-tokens", "30"]) == 0
    printed = capsys.readouterr().out
    assert "sampling draws only the 300 ids the tokenizer can decode" in printed
    assert "sample (30 tokens" in printed
    assert {"ckpt.safetensors", "merged.safetensors", "adapters.safetensors", "metrics.json"} <= \
        {p.name for p in out.iterdir()}


# -- 2. a bad NPGPT_BACKEND ---------------------------------------------------------------------

COMMANDS = [["train", "--max-iters", "1"], ["sample"], ["gradcheck"], ["seq2seq", "train"],
            ["seq2seq", "translate", "--input", "12"], ["finetune", "--init", "none"], ["bench"]]
# the issue's own example: NPGPT_BACKEND=cuda on a machine without a GPU (Numba's driver made
# unreachable, so that a machine with one answers the same; as tests/kernels/test_registry.py)
NO_GPU = {"NPGPT_BACKEND": "cuda", "NUMBA_ENABLE_CUDASIM": "0", "NUMBA_CUDA_DRIVER": "/nonexistent/libcuda.so"}


def _prog(argv) -> str:
    return "npgpt " + " ".join(a for a in argv[:2] if not a.startswith("-"))


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_2_a_bad_backend_is_one_line_for_every_command(argv, tmp_path):
    env = dict(os.environ, NPGPT_BACKEND="Numba")
    done = npgpt(*argv, env=env, cwd=tmp_path)
    assert done.returncode == 2
    assert one_line(done.stderr) == (f"{_prog(argv)}: error: NPGPT_BACKEND='Numba' is unknown (names are lower "
                                     f"case: 'numba'): expected one of ['cuda', 'numba', 'numpy'], or "
                                     f"unset for the fastest available")
    assert done.stdout == "" and list(tmp_path.iterdir()) == []           # nothing done, nothing written


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_2_cuda_without_a_gpu_is_one_line_for_every_command(argv, tmp_path):
    done = npgpt(*argv, env=dict(os.environ, **NO_GPU), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    line = one_line(done.stderr)
    assert line.startswith(f"{_prog(argv)}: error: NPGPT_BACKEND='cuda' is not available on this machine: "), line
    assert "NUMBA_CUDA_DRIVER" in line                                    # why: Numba's own reason
    assert re.search(r"Expected one of \['numpy'(, 'numba')?\], or unset for the fastest available$", line), line
    assert done.stdout == "" and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("env", [{"NPGPT_BACKEND": "tpu"}, NO_GPU], ids=["tpu", "cuda without a GPU"])
def test_2_help_works_with_a_bad_backend(env):
    env = dict(os.environ, **env)
    for argv in ([], ["--help"], ["train", "--help"], ["seq2seq", "train", "--help"], ["--version"]):
        done = npgpt(*argv, env=env)
        assert done.returncode == 0 and done.stderr == "" and done.stdout.startswith(("usage: npgpt", "npgpt 0")), argv


# -- 3. --resume from anywhere ------------------------------------------------------------------

def test_3_resume_from_another_folder(tmp_path, text, monkeypatch, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "input.txt").write_bytes(text.read_bytes())
    monkeypatch.chdir(tmp_path / "a")
    assert main(["train", "--data", "input.txt", "--out", "run", "--max-iters", "2", *GPT_TINY]) == 0
    saved = checkpoint.load("run/ckpt.safetensors").meta["train"]
    assert saved["data"] == str(tmp_path / "a" / "input.txt") and saved["warmup"] == 1   # as the run used them
    monkeypatch.chdir(tmp_path / "b")
    capsys.readouterr()
    assert main(["train", "--resume", "--out", "../a/run", "--max-iters", "3"]) == 0
    assert main(["train", "--resume", "--out", "../a/run", "--max-iters", "4", "--data", "../a/input.txt"]) == 0
    (tmp_path / "b" / "copy.txt").write_bytes(text.read_bytes())        # the same content elsewhere
    assert main(["train", "--resume", "--out", "../a/run", "--max-iters", "5", "--data", "copy.txt"]) == 0
    (tmp_path / "b" / "other.txt").write_text(default_corpus()[-30_000:], encoding="utf-8")
    capsys.readouterr()
    assert main(["train", "--resume", "--out", "../a/run", "--max-iters", "6", "--data", "other.txt"]) == 2
    assert one_line(capsys.readouterr().err).endswith("(its SHA-256 differs): resume with the same data")
    assert [r["step"] for r in read_log(tmp_path / "a/run/log.jsonl")] == [1, 2, 3, 4, 5]


def test_3_seq2seq_and_finetune_resume_from_another_folder(tmp_path, text, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    Path("pairs.tsv").write_text("".join(f"{w}\t{w[::-1]}\n" for w in
                                         (f"{i:04d}" for i in range(0, 4000, 37))), encoding="utf-8")
    Path("input.txt").write_bytes(text.read_bytes())
    assert main(["seq2seq", "train", "--data", "pairs.tsv", "--out", "s2s", "--max-iters", "2", *S2S_TINY[:8],
                 "--examples", "0"]) == 0
    assert main(["finetune", "--init", "none", "--n-layer", "1", "--n-head", "2", "--n-embd", "16",
                 "--block-size", "16", "--data", "input.txt", "--out", "ft", "--max-iters", "2",
                 "--batch-size", "2", "--eval-iters", "1", "--sample-tokens", "0"]) == 0
    monkeypatch.chdir(tmp_path / "b")
    assert main(["seq2seq", "train", "--resume", "--out", "../a/s2s", "--max-iters", "3"]) == 0
    assert main(["finetune", "--resume", "--out", "../a/ft", "--max-iters", "3"]) == 0
    assert main(["finetune", "--resume", "--out", "../a/ft", "--max-iters", "4", "--data", "../a/input.txt"]) == 0


# -- 4. short runs -----------------------------------------------------------------------------

def test_4_short_runs_scale_the_default_warmup(tmp_path, text, capsys):
    assert main(["train", "--data", str(text), "--out", str(tmp_path / "t"), "--max-iters", "5", *GPT_TINY]) == 0
    lrs = [r["lr"] for r in read_log(tmp_path / "t/log.jsonl")]
    assert lrs[0] == pytest.approx(2e-3)                 # warmup 1: a tenth of 5 steps, at least 1
    assert main(["seq2seq", "train", "--out", str(tmp_path / "s"), "--max-iters", "5", "--n-train", "100",
                 *S2S_TINY]) == 0
    assert Seq2SeqConfig(max_iters=60).warmup_steps == 6 and Seq2SeqConfig().warmup_steps == 100


@pytest.mark.parametrize("argv, settings", [(["train"], "PretrainConfig"), (["seq2seq", "train"], "Seq2SeqConfig"),
                                            (["finetune", "--init", "none"], "FinetuneConfig")],
                         ids=["train", "seq2seq train", "finetune"])
def test_4_a_warmup_longer_than_the_run_reads_the_same_for_every_command(argv, settings, tmp_path, capsys):
    assert main([*argv, "--out", str(tmp_path / "w"), "--max-iters", "5", "--warmup", "10"]) == 2
    assert one_line(capsys.readouterr().err) == (
        f"{_prog(argv)}: error: {settings}: warmup=10 (--warmup): expected at most max-iters=5 "
        f"(lower --warmup with --max-iters)")
    assert not (tmp_path / "w").exists()


# -- 5. stopping: SIGTERM, Ctrl-C, a full disk ----------------------------------------------------

FT_TINY = ["--init", "none", "--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16",
           "--batch-size", "2", "--eval-iters", "1", "--sample-tokens", "0"]
# each training command, tiny, for as long as it is let: (argv, the files its --out holds when stopped)
ENDLESS = {"train": (["train", *GPT_TINY], ["ckpt.safetensors", "log.jsonl"]),
           "seq2seq train": (["seq2seq", "train", "--n-train", "200", *S2S_TINY],
                             ["ckpt.safetensors", "eval.jsonl", "log.jsonl"]),
           "finetune": (["finetune", *FT_TINY], ["ckpt.safetensors", "log.jsonl"])}


def _train_until_logged(tmp_path, command, steps=3):
    """`npgpt <command>` in a process of its own, once it has logged `steps` steps."""
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "npgpt", *ENDLESS[command][0], "--out", str(out),
                             "--max-iters", "100000", "--checkpoint-interval", "100000",
                             "--eval-interval", "100000"],
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    log, deadline = out / "log.jsonl", time.time() + 240
    while time.time() < deadline and not (log.exists() and log.read_text().count("\n") >= steps):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    return proc, out


@pytest.mark.parametrize("command, sig, status", [("train", signal.SIGTERM, 143), ("train", signal.SIGINT, 130),
                                                  ("seq2seq train", signal.SIGTERM, 143),
                                                  ("finetune", signal.SIGTERM, 143)],
                         ids=["train SIGTERM", "train SIGINT", "seq2seq train SIGTERM", "finetune SIGTERM"])
def test_5_a_signal_saves_a_checkpoint_and_says_so(tmp_path, command, sig, status):
    proc, out = _train_until_logged(tmp_path, command)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == status, stderr
    step = checkpoint.load(out / "ckpt.safetensors").meta["step"]
    assert f"interrupted by {sig.name} at step {step}: checkpoint saved to {out / 'ckpt.safetensors'}; " \
           f"continue with: npgpt {command} --resume --out {out}" in stdout.splitlines()
    assert max(r["step"] for r in read_log(out / "log.jsonl")) == step          # no step the checkpoint lacks
    assert sorted(p.name for p in out.iterdir()) == ENDLESS[command][1]


def test_5_a_full_disk_keeps_the_previous_checkpoint(tmp_path, text, monkeypatch, capsys):
    """The second checkpoint's write fails with ENOSPC (os.fsync of its temporary file, as on a
    full disk): one line naming the file, the first checkpoint whole, no temporary file left; a
    resume (a line cut short at the end of the log, as a crash leaves it) continues to the losses
    of a run that was never stopped."""
    argv = ["train", "--data", str(text), "--max-iters", "6", "--checkpoint-interval", "2", *GPT_TINY]
    assert main([*argv, "--out", str(tmp_path / "whole")]) == 0
    real_fsync, saves = os.fsync, []

    def fsync(fd):
        if stat.S_ISREG(os.fstat(fd).st_mode) and os.fstat(fd).st_size > 10_000:     # a checkpoint
            saves.append(fd)
            if len(saves) == 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    out = tmp_path / "full"
    monkeypatch.setattr(os, "fsync", fsync)
    capsys.readouterr()
    assert main([*argv, "--out", str(out)]) == 2
    assert one_line(capsys.readouterr().err) == (
        f"npgpt train: error: [Errno 28] No space left on device: writing "
        f"'{out / 'ckpt.safetensors'}' failed; the file keeps its previous content")
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert checkpoint.load(out / "ckpt.safetensors").meta["step"] == 2
    assert sorted(p.name for p in out.iterdir()) == ["ckpt.safetensors", "log.jsonl"]
    assert [r["step"] for r in read_log(out / "log.jsonl")] == [1, 2, 3, 4]
    with open(out / "log.jsonl", "a") as f:
        f.write('{"step": 5, "loss": 1.2')                    # a line cut short
    assert main(["train", "--resume", "--out", str(out)]) == 0
    assert [(r["step"], r["loss"]) for r in read_log(out / "log.jsonl")] == \
        [(r["step"], r["loss"]) for r in read_log(tmp_path / "whole" / "log.jsonl")]


# -- 6. the umask --------------------------------------------------------------------------------

@pytest.mark.parametrize("umask", [0o022, 0o077], ids=["022", "077"])
def test_6_every_file_written_honours_the_umask(umask, tmp_path, text):
    previous = os.umask(umask)
    try:
        assert main(["finetune", "--init", "none", "--n-layer", "1", "--n-head", "2", "--n-embd", "16",
                     "--block-size", "16", "--data", str(text), "--out", str(tmp_path / "ft"), "--max-iters", "2",
                     "--batch-size", "2", "--eval-iters", "1", "--lora-rank", "2", "--merge",
                     "--sample-tokens", "0"]) == 0
        assert main(["seq2seq", "train", "--out", str(tmp_path / "s2s"), "--max-iters", "2", "--n-train", "50",
                     *S2S_TINY]) == 0
        tok = BPETokenizer.train(default_corpus()[:5000], 270)
        checkpoint.save_gpt2(GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=8, n_layer=1, n_head=1,
                                           n_embd=8), seed=0), tmp_path / "gpt2", tok)
        CharTokenizer.from_text("abc").save(tmp_path / "char.json")
    finally:
        os.umask(previous)
    files = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    names = {p.relative_to(tmp_path).as_posix() for p in files}
    assert names == {"ft/ckpt.safetensors", "ft/log.jsonl", "ft/metrics.json", "ft/adapters.safetensors",
                     "ft/merged.safetensors", "s2s/ckpt.safetensors", "s2s/log.jsonl", "s2s/eval.jsonl",
                     "gpt2/config.json", "gpt2/model.safetensors", "gpt2/vocab.json", "gpt2/merges.txt",
                     "char.json"}
    wrong = {p.relative_to(tmp_path).as_posix(): oct(stat.S_IMODE(p.stat().st_mode)) for p in files
             if stat.S_IMODE(p.stat().st_mode) != 0o666 & ~umask}
    assert not wrong, f"expected mode {oct(0o666 & ~umask)}: {wrong}"


# -- 7. a long context -------------------------------------------------------------------------

def test_7_the_whole_context_of_a_gpt2_folder_is_said(small_tokenizer_gpt2, text, tmp_path, capsys):
    assert main(["finetune", "--init", str(small_tokenizer_gpt2), "--data", str(text), "--out", str(tmp_path / "f"),
                 "--max-iters", "1", "--batch-size", "1", "--eval-iters", "1", "--sample-tokens", "0"]) == 0
    printed = capsys.readouterr().out
    assert "context 1024" in printed
    assert ("note: training on the model's whole context, 1024 tokens: on a CPU a shorter one trains many "
            "times faster and with far less memory (--block-size 128, say)") in printed


# -- 8. a docs page never trains twice into one folder ---------------------------------------------

DEFAULT_OUT = {"train": "out", "finetune": "out/finetune", "seq2seq train": "out-seq2seq"}


def test_8_no_two_commands_of_a_page_train_into_the_same_folder():
    """Pasted in order, a second training into the same --out is refused (training.md's BPE line
    once did this); a --resume continues one on purpose. The pages run in full in test_docs."""
    from tests.test_docs import PAGES, runnable
    for page in PAGES:
        outs = {}
        for line, runner, code in runnable(page):
            for command in code.splitlines() if runner == "bash" else []:
                m = re.match(r"npgpt (seq2seq train|train|finetune)\b(.*)", command.split("#")[0].strip())
                if not m or "--resume" in m.group(2):
                    continue
                out = re.search(r"--out[ =](\S+)", m.group(2))
                out = out.group(1) if out else DEFAULT_OUT[m.group(1)]
                assert out not in outs, f"{page.name} line {line}: `{command}` trains into {out} again " \
                                        f"(first: {outs[out]})"
                outs[out] = command


# -- 9. the messages ---------------------------------------------------------------------------

def test_9_a_csv_that_is_not_utf8_names_the_file(tmp_path, capsys):
    path = tmp_path / "latin.csv"
    path.write_bytes("text,label\ncaf\xe9 au lait,a\nthe,b\n".encode("latin-1"))
    assert main(["finetune", "--init", "none", "--task", "classify", "--data", str(path),
                 "--out", str(tmp_path / "run")]) == 2
    assert one_line(capsys.readouterr().err) == (f"npgpt finetune: error: path {str(path)!r} is not UTF-8 "
                                                 f"text: byte 0xe9 at offset 14 (invalid continuation byte)")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv, message", [
    (["--text-field", "review"], "FinetuneConfig: text_field='review' (--text-field): expected unset for "
                                 "--task lm (it is a setting of --task classify)"),
    (["--task", "classify", "--val-fraction", "0.2"], "FinetuneConfig: val_fraction=0.2 (--val-fraction): "
                                                      "expected unset for --task classify (it is a setting of --task lm)"),
    (["--lora-alpha", "8"], "FinetuneConfig: lora_alpha=8.0 (--lora-alpha): expected unset without "
                            "--lora-rank (it is a setting of the LoRA adapters)"),
    (["--lora-rank", "4", "--lora-targets", "foo"], "FinetuneConfig: lora_targets=('foo',) (--lora-targets): "
                                                    "expected some of ['attn', 'mlp', 'attn.c_attn', "
                                                    "'attn.c_proj', 'mlp.c_fc', 'mlp.c_proj']"),
], ids=["text-field", "val-fraction", "lora-alpha", "lora-targets"])
def test_9_finetune_settings_that_would_be_ignored_are_errors(argv, message, tmp_path, capsys):
    assert main(["finetune", "--init", "none", "--out", str(tmp_path / "run"), *argv]) == 2
    assert one_line(capsys.readouterr().err) == f"npgpt finetune: error: {message}"
    assert not (tmp_path / "run").exists()


def test_9_sample_checkpoint_none_offers_no_none(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["sample", "--checkpoint", "none"]) == 2
    err = one_line(capsys.readouterr().err)
    assert err.startswith("npgpt sample: error: checkpoint 'none' does not exist: expected an npgpt checkpoint")
    assert "'none' (random" not in err


def test_9_sample_checks_its_flags_before_printing(small_tokenizer_gpt2, capsys):
    for argv, message in ((["--top-k", "0"], "--top-k 0: expected an integer >= 1"),
                          (["--top-p", "1.5"], "--top-p 1.5: expected a number in (0, 1]"),
                          (["--temperature", "-1"], "--temperature -1.0: expected a number >= 0 (0: greedy)"),
                          (["--num-samples", "0"], "--num-samples 0: expected an integer >= 1")):
        assert main(["sample", "--gpt2", str(small_tokenizer_gpt2), "--prompt", "Hello", *argv]) == 2
        out, err = capsys.readouterr()
        assert out == "" and one_line(err) == f"npgpt sample: error: {message}"


def test_9_the_python_resume_hint(tmp_path):
    cfg = Seq2SeqConfig(task="reverse", d_model=16, n_head=2, layers=1, batch_size=8, n_train=50, n_test=10,
                        min_len=3, max_len=6, max_iters=1, examples=0, out=str(tmp_path / "s"))
    run_seq2seq(cfg, progress=False, print_fn=lambda *a, **k: None)
    with pytest.raises(FileExistsError, match=r"pass --resume to continue it \(in Python: run\(cfg, "
                                              r"resume=True\)\), or another --out"):
        run_seq2seq(cfg, progress=False)


def test_9_an_unreachable_bpe_vocabulary_is_one_warning_line(tmp_path):
    small = tmp_path / "small.txt"
    small.write_text(default_corpus()[:3000], encoding="utf-8")
    done = npgpt("train", "--data", str(small), "--tokenizer", "bpe", "--vocab-size", "5000", "--out",
                 str(tmp_path / "r"), "--max-iters", "1", *GPT_TINY)
    assert done.returncode == 0, done.stderr
    warning = [line for line in done.stderr.splitlines() if "warning" in line.lower()]
    assert len(warning) == 1 and "UserWarning" not in done.stderr
    assert re.fullmatch(r"npgpt train: warning: BPETokenizer.train: the text ran out of pairs to merge at "
                        r"(\d+) tokens: the vocabulary has \1, not vocab_size=5000 \(a longer text reaches "
                        r"more\)", warning[0]), warning[0]


# -- 10. save_gpt2's bos and eos -----------------------------------------------------------------

def test_10_save_gpt2_writes_a_bos_and_eos_that_fit(small_tokenizer_gpt2, tmp_path, capfd):
    config = json.loads((small_tokenizer_gpt2 / "config.json").read_text())
    tok = BPETokenizer.from_pretrained(small_tokenizer_gpt2)
    assert config["bos_token_id"] == config["eos_token_id"] == tok.special_id("<|endoftext|>") == 299
    bare = tmp_path / "bare"
    checkpoint.save_gpt2(GPT(GPTConfig(vocab_size=100, block_size=8, n_layer=1, n_head=1, n_embd=8)), bare)
    config = json.loads((bare / "config.json").read_text())
    assert config["bos_token_id"] is None and config["eos_token_id"] is None
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_warning()
    capfd.readouterr()
    for folder in (small_tokenizer_gpt2, bare):
        hf = transformers.GPT2Config.from_pretrained(folder)
        assert hf.eos_token_id is None or hf.eos_token_id < hf.vocab_size
    assert "token_id" not in capfd.readouterr().err


# -- 11. the command line's own conventions ---------------------------------------------------------

def test_11_bare_npgpt_prints_the_help(capsys):
    assert main([]) == 0
    assert capsys.readouterr().out.startswith("usage: npgpt [-h] [--version] COMMAND ...")
    assert main(["seq2seq"]) == 0
    assert capsys.readouterr().out.startswith("usage: npgpt seq2seq [-h] COMMAND ...")


def test_11_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and re.fullmatch(r"npgpt \d+\.\d+\.\d+\n", capsys.readouterr().out)


@pytest.mark.parametrize("argv, usage, message", [
    (["train", "--max-itres", "5"], "usage: npgpt train ",
     "npgpt train: error: unrecognized arguments: --max-itres 5 (did you mean --max-iters?)"),
    (["seq2seq", "train", "--bogus"], "usage: npgpt seq2seq train ",
     "npgpt seq2seq train: error: unrecognized arguments: --bogus"),
    (["finetune", "--lora-rnak", "4"], "usage: npgpt finetune ",
     "npgpt finetune: error: unrecognized arguments: --lora-rnak 4 (did you mean --lora-rank?)"),
    (["sample", "--backend", "gpu"], "usage: npgpt sample ",
     "npgpt sample: error: argument --backend: invalid choice: 'gpu' (choose from 'numpy', 'numba', 'cuda')"),
], ids=["train", "seq2seq train", "finetune", "sample --backend"])
def test_11_a_mistyped_flag_shows_its_own_command(argv, usage, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith(usage) and err.strip().splitlines()[-1] == message


# -- 12. the docs and the resume's learning-rate jump -------------------------------------------

DOC_OF = {("train",): "training.md", ("sample",): "training.md", ("finetune",): "finetuning.md",
          ("seq2seq", "train"): "seq2seq.md", ("seq2seq", "translate"): "seq2seq.md",
          ("gradcheck",): "gradcheck.md"}


@pytest.mark.parametrize("names", list(DOC_OF), ids=[" ".join(n) for n in DOC_OF])
def test_12_the_docs_name_every_flag(names):
    parser = command_parser(*names)
    text = (ROOT / "docs" / DOC_OF[names]).read_text(encoding="utf-8")
    named = lambda flag: re.search(re.escape(flag) + r"(?![\w-])", text)     # noqa: E731
    missing = [a.option_strings[0] for a in parser._actions
               if a.option_strings and a.dest != "help" and not any(map(named, a.option_strings))]
    assert not missing, f"docs/{DOC_OF[names]} does not name {missing} of npgpt {' '.join(names)}"


RESUME_DOCS = {("train",): ("training.md", 2), ("finetune",): ("finetuning.md", 1),
               ("seq2seq", "train"): ("seq2seq.md", 1)}


@pytest.mark.parametrize("names", list(RESUME_DOCS), ids=[" ".join(n) for n in RESUME_DOCS])
def test_12_the_docs_list_the_flags_a_resume_may_change_as_its_help_does(names):
    """Every "only `--a`, `--b` and `--c` may change" of the page names the flags of --resume's
    help (made from the run's SPEC.resumable); a list in other words ("the intervals") fails."""
    resume = next(a for a in command_parser(*names)._actions if a.dest == "resume")
    helped = re.findall(r"--[\w-]+", re.search(r"only (.*) may change", resume.help).group(1))
    page, count = RESUME_DOCS[names]
    text = " ".join((ROOT / "docs" / page).read_text(encoding="utf-8").split())
    flag = r"`--[\w-]+`"
    lists = re.findall(rf"[Oo]nly ((?:{flag}(?:, |,? and ))*{flag}) may change", text)
    said = text.count("may change")
    assert len(lists) == said == count, f"docs/{page}: {said} times 'may change', {len(lists)} lists of " \
                                        f"`--flag`s; expected {count} lists of the flags --resume lets change"
    for listed in lists:
        assert re.findall(r"--[\w-]+", listed) == helped, f"docs/{page} lists {listed}; --resume's help: {helped}"


def test_12_a_longer_resume_says_how_the_learning_rate_jumps(tmp_path, text, capsys):
    out = str(tmp_path / "run")
    assert main(["train", "--data", str(text), "--out", out, "--max-iters", "20", *GPT_TINY]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", "--out", out, "--max-iters", "40"]) == 0
    printed = capsys.readouterr().out
    log = read_log(Path(out) / "log.jsonl")
    assert (f"note: --max-iters 40 (the run had 20) reshapes the learning-rate schedule: the learning rate "
            f"goes from {log[19]['lr']:.3g} at step 20 to {log[20]['lr']:.3g} at step 21") in printed
    assert log[20]["lr"] > 2 * log[19]["lr"]


def test_generate_text_streams_nothing_before_checking(small_tokenizer_gpt2):
    from npgpt.sample import load_model
    model, tok = load_model(gpt2=str(small_tokenizer_gpt2))
    shown = []
    with pytest.raises(ValueError, match="top_k=0"):
        generate_text(model, tok, "Hello", 5, top_k=0, stream=shown.append)
    assert shown == []
    assert generate_text(model, tok, "Hello", 0, stream=shown.append) == ["Hello"] and shown == ["Hello"]
