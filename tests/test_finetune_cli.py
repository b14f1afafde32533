"""`npgpt finetune` end to end, with tiny models in temporary folders.

The starts: a tiny npgpt checkpoint (a char tokenizer of the built-in corpus, so the built-in
classification task is in its vocabulary) and a tiny GPT-2 folder written by transformers (a
GPT2LMHeadModel of a small GPT2Config and a small byte-level BPE in GPT-2's vocab.json/merges.txt).
"""

import hashlib
import json
import os
import signal

import numpy as np
import pytest

from npgpt import GPT, GPTConfig
from npgpt import checkpoint as ckpt_io
from npgpt import kernels
from npgpt.cli import main
from npgpt.data import default_corpus
from npgpt.finetune import GPTClassifier, load_lora
from npgpt.finetune.init import load_init
from npgpt.runs.finetune import FinetuneConfig, resume_config, run
from npgpt.sample import load_model
from npgpt.tokenizers import BPETokenizer, CharTokenizer

FAST = ["--batch-size", "4", "--eval-iters", "2", "--sample-tokens", "0"]


def sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture(scope="module")
def start(tmp_path_factory):
    """A tiny npgpt checkpoint (2 blocks, 16 wide, context 32) with its char tokenizer."""
    folder = tmp_path_factory.mktemp("start")
    tok = CharTokenizer.from_text(default_corpus())
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=16), seed=0)
    path = ckpt_io.save(folder / "ckpt.safetensors", model, tokenizer=tok.to_dict(), step=7)
    return path


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "new.txt"
    path.write_text(default_corpus()[-6000:], encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory, text):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("gpt2")
    tok = BPETokenizer.train(text.read_text(encoding="utf-8"), 300)
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=16, vocab_size=tok.vocab_size, n_positions=32,
                                  bos_token_id=tok.special_id(), eos_token_id=tok.special_id())
    transformers.GPT2LMHeadModel(cfg).save_pretrained(folder)
    tok.save(folder)
    return folder


def classification_file(path, rows, header=("text", "label")):
    """rows of (text, label) as JSONL or CSV, by path's suffix."""
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(dict(zip(header, r))) + "\n" for r in rows))
    else:
        path.write_text(",".join(header) + "\n" + "".join(f"{t},{y}\n" for t, y in rows))
    return path


def toy_rows(n=48, seed=0):
    """Texts of a, b, c, d; the label says whether a 'd' is in it."""
    rng = np.random.default_rng(seed)
    texts = ["".join(rng.choice(list("abcd"), size=rng.integers(3, 12))) for _ in range(n)]
    return [(t, "has d" if "d" in t else "no d") for t in texts]


# ---------------------------------------------------------------------------------------------
# Continued pre-training
# ---------------------------------------------------------------------------------------------


def test_continued_pretraining_from_an_npgpt_checkpoint(tmp_path, start, text, capsys):
    before = sha(start)
    out = tmp_path / "lm"
    assert main(["finetune", "--init", str(start.parent), "--data", str(text), "--out", str(out),
                 "--max-iters", "6", "--eval-interval", "3", "--lr", "3e-3", *FAST]) == 0
    printed = capsys.readouterr().out
    assert "(step 7)" in printed and "validation loss before fine-tuning" in printed
    assert "trainable: 8,752 of 8,752 parameters (100.00%): the whole GPT" in printed
    assert [json.loads(line)["step"] for line in open(out / "log.jsonl")] == list(range(1, 7))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["step"] == 6 and metrics["val_loss"] < metrics["val_loss_before"]
    assert sha(start) == before                                          # the start is only read
    # a plain GPT checkpoint with its tokenizer: sample from it, and continue it
    assert main(["sample", "--checkpoint", str(out), "--prompt", "The ", "--max-new-tokens", "5"]) == 0
    assert main(["finetune", "--resume", "--out", str(out), "--max-iters", "8"]) == 0
    assert "resuming" in capsys.readouterr().out
    assert [json.loads(line)["step"] for line in open(out / "log.jsonl")] == list(range(1, 9))


def test_ctrl_c_saves_and_resume_continues_exactly(tmp_path, start, text):
    """A run stopped by Ctrl-C (SIGINT) after step 3 and resumed has the losses of a run that
    was never stopped, step for step (LoRA adapters, a frozen block, dropout included)."""
    def cfg(out):
        return FinetuneConfig(init=str(start), data=str(text), max_iters=6, lora_rank=2, lora_dropout=0.1,
                              dropout=0.1, freeze=("h.0",), eval_interval=3, batch_size=4, eval_iters=2,
                              sample_tokens=0, out=str(tmp_path / out))

    def ctrl_c_at_3(trainer, record):
        if record["step"] == 3:
            os.kill(os.getpid(), signal.SIGINT)

    quiet = lambda *a, **k: None                                              # noqa: E731
    whole = run(cfg("whole"), progress=False, print_fn=quiet)
    stopped = run(cfg("half"), progress=False, print_fn=quiet, on_step=ctrl_c_at_3)
    assert stopped.train.interrupted and stopped.train.step == 3
    resumed = run(resume_config(tmp_path / "half"), resume=True, progress=False, print_fn=quiet)
    assert stopped.train.losses + resumed.train.losses == whole.train.losses
    assert resumed.metrics["val_loss"] == whole.metrics["val_loss"]
    with pytest.raises(ValueError, match=r"lr 0\.5 \(the run has 0\.001\)"):
        resume_config(tmp_path / "half", {"lr": 0.5})
    # the checkpoint holds JSON lists: the resumed settings have the tuples the run had
    assert resume_config(tmp_path / "half").freeze == ("h.0",) == cfg("half").freeze


def test_the_run_uses_its_backend_and_restores_the_previous_one(tmp_path, start, text):
    before = kernels.current_backend()
    other = "numba" if before == "numpy" else "numpy"
    if other not in kernels.available_backends():
        pytest.skip(f"backend {other} is not available")
    seen = []
    cfg = FinetuneConfig(init=str(start), data=str(text), max_iters=2, batch_size=4, eval_iters=2,
                         sample_tokens=0, backend=other, out=str(tmp_path / "run"))
    run(cfg, progress=False, print_fn=lambda *a, **k: None,
        on_step=lambda tr, rec: seen.append(kernels.current_backend()))
    assert seen == [other, other] and kernels.current_backend() == before
    assert ckpt_io.load(tmp_path / "run/ckpt.safetensors").meta["backend"] == other


def test_the_config_checks_and_never_rewrites_itself():
    """A list is not silently turned into a tuple: the settings are what was given, or an error."""
    with pytest.raises(ValueError, match=r"freeze=\['h.0'\] \(--freeze\): expected a tuple of names"):
        FinetuneConfig(freeze=["h.0"])
    with pytest.raises(ValueError, match=r"freeze_blocks=\(0, 1, 2\) \(--freeze-blocks\): expected a tuple of two"):
        FinetuneConfig(freeze_blocks=(0, 1, 2))
    cfg = FinetuneConfig(max_iters=50)
    assert cfg.warmup is None and cfg.warmup_steps == 5


def test_continued_pretraining_from_a_gpt2_folder(tmp_path, gpt2_folder, text, capsys):
    out = tmp_path / "gpt2-lm"
    assert main(["finetune", "--init", str(gpt2_folder), "--data", str(text), "--out", str(out),
                 "--max-iters", "3", "--block-size", "16", "--lora-rank", "2", "--merge", *FAST]) == 0
    printed = capsys.readouterr().out
    assert "GPT-2 folder" in printed and "BPETokenizer (vocabulary 300)" in printed
    assert (out / "adapters.safetensors").stat().st_size < 0.2 * (out / "merged.safetensors").stat().st_size
    # the merged model is a plain checkpoint with the BPE tokenizer
    assert main(["sample", "--checkpoint", str(out / "merged.safetensors"), "--max-new-tokens", "4"]) == 0
    merged = ckpt_io.load(out / "merged.safetensors")
    assert merged.meta["tokenizer"]["type"] == "bpe" and not any("lora" in k for k in merged.model_state)
    # the run's own checkpoint (adapters unmerged) is a start too: its adapters are merged on loading
    assert main(["finetune", "--init", str(out), "--data", str(text), "--out", str(tmp_path / "again"),
                 "--max-iters", "1", "--block-size", "16", *FAST]) == 0
    assert "its LoRA adapters (rank 2) merged" in capsys.readouterr().out


def test_a_character_the_tokenizer_does_not_know(tmp_path, start, capsys):
    (tmp_path / "odd.txt").write_text("plain words\nand then a snowman: \u2603 here\n" * 40, encoding="utf-8")
    assert main(["finetune", "--init", str(start), "--data", str(tmp_path / "odd.txt"),
                 "--out", str(tmp_path / "run"), *FAST]) == 2
    err = capsys.readouterr().err
    assert "line 2, column 21 has '\u2603', a character the tokenizer of the start does not know" in err
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------
# Classification
# ---------------------------------------------------------------------------------------------


def test_classification_of_a_file_end_to_end(tmp_path, start, capsys):
    data = classification_file(tmp_path / "toy.csv", toy_rows(48))
    test = classification_file(tmp_path / "toy-test.jsonl", toy_rows(20, seed=1))
    out = tmp_path / "clf"
    assert main(["finetune", "--task", "classify", "--init", str(start), "--data", str(data),
                 "--test-data", str(test), "--out", str(out), "--max-iters", "5", "--aux-lm-weight", "0.5",
                 *FAST]) == 0
    printed = capsys.readouterr().out
    assert "trainable: 8,786 of 8,786 parameters (100.00%): the whole GPT + the head" in printed
    assert "held-out evaluation (20 examples" in printed and "confusion (rows: true" in printed
    m = json.loads((out / "metrics.json").read_text())
    truth = [y for _, y in toy_rows(20, seed=1)]
    assert m["classes"] == ["has d", "no d"] and m["n_train"] == 48 and m["n_test"] == 20
    r = m["test"]
    assert r["n"] == 20 and sum(map(sum, r["confusion"])) == 20
    assert [sum(row) for row in r["confusion"]] == [truth.count("has d"), truth.count("no d")]
    assert {c: r["per_class"][c]["support"] for c in m["classes"]} == {c: truth.count(c) for c in m["classes"]}
    assert r["accuracy"] == pytest.approx(np.trace(r["confusion"]) / 20)
    saved = ckpt_io.load(out / "ckpt.safetensors")
    assert saved.meta["model"] == "GPTClassifier" and saved.meta["classes"] == ["has d", "no d"]


def test_built_in_task_with_lora_writes_small_adapters_and_merges(tmp_path, start, capsys):
    out = tmp_path / "lora"
    assert main(["finetune", "--task", "classify", "--init", str(start), "--out", str(out),
                 "--max-iters", "3", "--lora-rank", "2", "--merge", *FAST]) == 0
    printed = capsys.readouterr().out
    # per block: r (16 + 48) + r (16 + 16) + r (16 + 64) + r (64 + 16) = 2 * 256; the head 16 * 2 + 2
    assert "trainable: 1,058 of 9,810 parameters (10.78%): LoRA rank 2 (alpha 16) on attn, mlp + the head" in printed
    adapters, full = (out / "adapters.safetensors").stat().st_size, (out / "ckpt.safetensors").stat().st_size
    assert adapters < 0.25 * full
    m = json.loads((out / "metrics.json").read_text())
    assert m["n_test"] == m["test"]["n"] and m["merged"]["accuracy"] == m["test"]["accuracy"]
    assert m["merged"]["loss"] == pytest.approx(m["test"]["loss"], rel=1e-4)
    # the adapters alone, on the start, give the trained classifier
    ck = ckpt_io.load(start)
    clf = GPTClassifier(ck.build_model(), n_classes=2)
    load_lora(clf, out / "adapters.safetensors")
    trained = ckpt_io.load(out / "ckpt.safetensors").model_state
    for name, p in clf.named_parameters():
        assert np.array_equal(p.data, trained[name]), name


def test_from_scratch_and_reinit_and_freezing(tmp_path, start, capsys):
    data = classification_file(tmp_path / "toy.jsonl", toy_rows(40))
    common = ["finetune", "--task", "classify", "--data", str(data), "--max-iters", "2", *FAST]
    assert main([*common, "--init", "none", "--n-layer", "1", "--n-embd", "16", "--n-head", "2",
                 "--block-size", "16", "--out", str(tmp_path / "scratch")]) == 0
    assert "random initialisation (seed 0), preset baby" in capsys.readouterr().out
    assert main([*common, "--init", str(start), "--reinit", "--out", str(tmp_path / "reinit")]) == 0
    assert "random initialisation (seed 0) of the architecture of npgpt checkpoint" in capsys.readouterr().out
    out = tmp_path / "frozen"
    assert main([*common, "--init", str(start), "--freeze", "wte", "wpe", "--freeze-blocks", "0", "1",
                 "--out", str(out)]) == 0
    assert "frozen: wte, wpe, blocks 0..0" in capsys.readouterr().out
    before, after = ckpt_io.load(start).model_state, ckpt_io.load(out / "ckpt.safetensors").model_state
    for name, value in before.items():
        frozen = name.startswith(("wte.", "wpe.", "h.0."))
        assert np.array_equal(after["gpt." + name], value) == frozen, name


# ---------------------------------------------------------------------------------------------
# Bad input: one clear line, exit status 2, nothing written, the start untouched
# ---------------------------------------------------------------------------------------------


def bad_case(tmp_path, start, argv, message, capsys):
    before = sha(start)
    out = tmp_path / "run"
    assert main(["finetune", "--init", str(start), "--out", str(out), *FAST, *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert not out.exists()
    assert sha(start) == before


def test_missing_label_column(tmp_path, start, capsys):
    data = classification_file(tmp_path / "t.csv", toy_rows(10), header=("text", "class"))
    bad_case(tmp_path, start, ["--task", "classify", "--data", str(data)],
             "row 1 (the header) has no column 'label' (its columns: ['text', 'class'])", capsys)


def test_unknown_label_at_evaluation(tmp_path, start, capsys):
    data = classification_file(tmp_path / "t.csv", toy_rows(10))
    test = classification_file(tmp_path / "u.csv", [("abc", "no d"), ("abd", "maybe")])
    bad_case(tmp_path, start, ["--task", "classify", "--data", str(data), "--test-data", str(test)],
             "u.csv: row 3: label 'maybe' is unknown: expected one of the classes ['has d', 'no d']", capsys)


def test_lora_rank_larger_than_the_layer(tmp_path, start, capsys):
    bad_case(tmp_path, start, ["--task", "classify", "--lora-rank", "17"],
             "--lora-rank: add_lora: layer h.0.attn.c_attn: rank=17 is larger than the layer (16 -> 48)", capsys)


@pytest.mark.parametrize("what, message", [
    ("missing", "does not exist: expected an npgpt checkpoint"),
    ("folder", "is a folder holding ['notes.txt', 'sub/'], neither an npgpt run (no ckpt.safetensors) "
               "nor a GPT-2 folder"),
    ("text file", "is not an npgpt checkpoint: checkpoint"),
    ("half a GPT-2 folder", "looks like a GPT-2 folder but has no ['vocab.json', 'merges.txt']"),
])
def test_bad_init_path(tmp_path, start, what, message, capsys):
    init = tmp_path / "init"
    if what == "folder":
        (init / "sub").mkdir(parents=True)
        (init / "notes.txt").write_text("hello")
    elif what == "text file":
        init.write_text("not a checkpoint")
    elif what == "half a GPT-2 folder":
        init.mkdir()
        (init / "config.json").write_text("{}")
        (init / "model.safetensors").write_text("")
    assert main(["finetune", "--init", str(init), "--out", str(tmp_path / "run"), *FAST]) == 2
    err = capsys.readouterr().err
    assert f"--init '{init}' {message}" in err and "Traceback" not in err, err
    assert not (tmp_path / "run").exists()


def test_an_earlier_run_and_the_start_are_never_overwritten(tmp_path, start, text, capsys):
    before = sha(start)
    assert main(["finetune", "--init", str(start.parent), "--out", str(start.parent), "--data", str(text), *FAST]) == 2
    assert "is the --init folder" in capsys.readouterr().err
    out = tmp_path / "run"
    assert main(["finetune", "--init", str(start), "--data", str(text), "--out", str(out), "--max-iters", "1", *FAST]) == 0
    kept = sha(out / "ckpt.safetensors")
    assert main(["finetune", "--init", str(start), "--data", str(text), "--out", str(out), *FAST]) == 2
    assert "pass --resume to continue it (in Python: run(cfg, resume=True)), or another --out (nothing was overwritten)" in capsys.readouterr().err
    assert sha(out / "ckpt.safetensors") == kept and sha(start) == before


@pytest.mark.parametrize("argv, message", [
    (["--task", "lm", "--aux-lm-weight", "0.5"], "aux_lm_weight=0.5 (--aux-lm-weight): expected unset for --task lm"),
    (["--merge"], "merge=True (--merge): expected unset without --lora-rank"),
    (["--n-layer", "2"], "n_layer=2 (--n-layer): expected unset unless --init none"),
    (["--block-size", "64"], "--block-size 64 is longer than the context of the model (32 positions)"),
    (["--freeze", "h.5"], "--freeze: freeze: prefix 'h.5' matches no parameter of this GPT"),
    (["--freeze-blocks", "0", "3"], "--freeze-blocks: freeze_blocks: blocks 0..2 (start=0, stop=3)"),
])
def test_bad_settings(tmp_path, start, argv, message, capsys):
    bad_case(tmp_path, start, argv, message, capsys)


def test_sample_from_a_run_with_unmerged_lora_adapters(tmp_path, start, text, capsys):
    out = tmp_path / "lora-lm"
    assert main(["finetune", "--init", str(start), "--data", str(text), "--out", str(out),
                 "--max-iters", "2", "--block-size", "16", "--lora-rank", "2", *FAST]) == 0
    assert any("lora" in k for k in ckpt_io.load(out / "ckpt.safetensors").model_state)
    model, tok = load_model(out)                      # the adapters are folded into the weights
    merged = load_init(out).model
    for (name, p), (_, q) in zip(model.named_parameters(), merged.named_parameters()):
        assert "lora" not in name
        np.testing.assert_array_equal(p.data, q.data)
    capsys.readouterr()
    assert main(["sample", "--checkpoint", str(out), "--prompt", "the", "--max-new-tokens", "5"]) == 0
    assert capsys.readouterr().out.startswith("the")
