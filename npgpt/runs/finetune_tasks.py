"""What a fine-tune trains on: the two tasks of `npgpt finetune`, behind one small interface.

    LMTask          --task lm: continue pre-training on a text (windows of block_size tokens,
                    the next-token loss; validation on the last val_fraction of the text)
    ClassifyTask    --task classify: (text, label) examples, GPTClassifier's loss; evaluation on
                    the held-out examples (accuracy, per class, confusion)

runs.finetune.run calls, in order: read_task(cfg) (the raw data, before any tokenizer), .alphabet()
(the characters, for a char tokenizer when starting from scratch), .encode(tokenizer, block),
assemble(cfg, gpt, task) (the model), .batch_fn / .loss_fn / .tokens_fn / .eval_fn (for the
Trainer), .before(model) and .after(model, result) (the metrics), .merged_check(model).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from ..data import default_corpus, load_text, split
from ..finetune import GPTClassifier, add_lora, freeze, freeze_blocks, frozen_below
from ..finetune.data import (ClassificationData, encode_texts, load_classification_file,
                             shuffled_words_task)
from ..finetune.evaluate import evaluate, format_report
from .pretrain import lm_batch_fn, lm_eval_fn


def read_task(cfg):
    return LMTask(cfg) if cfg.task == "lm" else ClassifyTask(cfg)


def data_digest(*parts) -> str:
    """SHA-256 of texts and labels, to tell on --resume that the data is the same."""
    h = hashlib.sha256()
    for part in parts:
        h.update(json.dumps(part, ensure_ascii=False).encode("utf-8"))
    return h.hexdigest()


def check_known(tokenizer, texts, where: str, lines: bool = False) -> None:
    """A character tokenizer knows only the characters of its pre-training text: the first text
    with another character raises ValueError naming it and where it is (line and column when
    `lines`, else the example's number). Byte-level BPE knows every text."""
    if not hasattr(tokenizer, "chars"):
        return
    known = set(tokenizer.chars)
    unknown = set().union(*map(set, texts)) - known
    if not unknown:
        return
    i, text = next((i, t) for i, t in enumerate(texts) if not set(t) <= known)
    pos = next(p for p, c in enumerate(text) if c not in known)
    if lines:
        line = text.count("\n", 0, pos) + 1
        at = f"line {line}, column {pos - (text.rfind(chr(10), 0, pos) + 1) + 1}"
    else:
        at = f"example {i + 1} ({text[:40]!r}{'...' if len(text) > 40 else ''})"
    raise ValueError(f"{where}: {at} has {text[pos]!r}, a character the tokenizer of the start does "
                     f"not know ({len(unknown)} unknown characters in all: {sorted(unknown)[:10]}): "
                     f"expected only the {tokenizer.vocab_size} characters of its vocabulary (a "
                     f"character-level model knows the characters of its pre-training text; replace "
                     f"the others, or start from a byte-level BPE model such as GPT-2)")


def assemble(cfg, gpt, task):
    """The model to train: the GPT, or a GPTClassifier around it; then LoRA, then freezing.
    Each step checks its arguments before it changes anything."""
    model = gpt
    if task.classes is not None:
        if len(task.classes) < 2:
            raise ValueError(f"{task.source} has one class {task.classes}: expected at least 2")
        model = GPTClassifier(gpt, len(task.classes), aux_lm_weight=cfg.aux_lm_weight, seed=cfg.seed)
    steps = []
    if cfg.lora_rank:
        steps.append(("--lora-rank", lambda: add_lora(model, cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout,
                                                      cfg.lora_targets, seed=cfg.seed)))
    if cfg.freeze:
        steps.append(("--freeze", lambda: freeze(gpt, *cfg.freeze)))
    if cfg.freeze_blocks:
        steps.append(("--freeze-blocks", lambda: freeze_blocks(gpt, *cfg.freeze_blocks)))
    for flag, step in steps:
        try:
            step()
        except (ValueError, TypeError) as e:
            raise type(e)(f"{flag}: {e}") from None
    if not model.num_parameters(trainable_only=True):
        raise ValueError("--freeze / --freeze-blocks leave nothing to train: expected some "
                         "parameters to stay trainable")
    return model


class LMTask:
    """Continued pre-training: the next-token loss on windows of a text."""

    classes = None

    def __init__(self, cfg):
        self.cfg = cfg
        if cfg.data is None:
            self.text, self.source = default_corpus(), "the built-in corpus"
        else:
            self.text, self.source = load_text(cfg.data), f"--data {cfg.data!r}"
        self.sha256 = data_digest(self.text)

    def alphabet(self) -> str:
        return self.text

    def encode(self, tokenizer, block: int) -> None:
        check_known(tokenizer, [self.text], self.source, lines=True)
        ids = np.asarray(tokenizer.encode(self.text), dtype=np.int64)
        self.train_ids, self.val_ids = split(ids, self.cfg.val_fraction)
        for name, part in (("train", self.train_ids), ("validation", self.val_ids)):
            if len(part) < block + 1:
                raise ValueError(f"{self.source} is too short: {len(ids):,} tokens give {len(part):,} "
                                 f"{name} tokens, expected at least block-size + 1 = {block + 1} "
                                 f"(a longer text, a smaller --block-size or another --val-fraction)")
        self.block, self.n_tokens = block, len(ids)

    def describe(self) -> str:
        return (f"{self.source}, {len(self.text):,} characters -> {self.n_tokens:,} tokens; "
                f"{len(self.train_ids):,} train / {len(self.val_ids):,} validation")

    def batch_fn(self, batch_size: int):
        return lm_batch_fn(self.train_ids, batch_size, self.block)

    @staticmethod
    def loss_fn(model, batch):
        return model.forward(*batch)[1]

    @staticmethod
    def backward_fn(model) -> None:
        # the frozen bottom (--freeze-blocks, LoRA's frozen embeddings) costs no backward work
        model.backward(frozen_below=frozen_below(model))

    @staticmethod
    def tokens_fn(batch) -> int:
        return int(batch[0].size)

    def eval_fn(self, cfg):
        self._eval = lm_eval_fn(self.val_ids, cfg.batch_size, self.block, cfg.eval_iters, seed=cfg.seed + 1)
        return self._eval

    def _val_loss(self, model) -> float:
        was = model.training
        model.eval()
        try:
            return self._eval(model)
        finally:
            model.train(was)

    def before(self, model) -> dict:
        return {"val_loss_before": self._val_loss(model)}

    def after(self, model, result, print_fn=print) -> dict:
        val = result.val_losses.get(result.step)
        val = self._val_loss(model) if val is None else val
        tail = result.losses[-50:]
        train = float(np.mean(tail)) if tail else None
        print_fn(f"done: step {result.step}" + (f", train loss {train:.4f} (mean of the last {len(tail)} "
                                                f"steps)" if tail else "")
                 + f", validation loss {val:.4f}, {result.elapsed:.1f} s of training")
        return {"val_loss": val, "train_loss": train}

    def merged_check(self, model) -> dict:
        return {"val_loss": self._val_loss(model)}

    @staticmethod
    def describe_merge(check: dict) -> str:
        return f"validation loss {check['val_loss']:.4f} after merging"


class ClassifyTask:
    """Classification: GPTClassifier's loss on (text, label) batches; held-out evaluation."""

    def __init__(self, cfg):
        self.cfg = cfg
        if cfg.data is None:
            self.train, self.test = shuffled_words_task(seed=cfg.data_seed, test_fraction=cfg.test_fraction)
            self.source = "the built-in task (sentences of the built-in corpus vs. their words shuffled)"
        else:
            fields = dict(text_field=cfg.text_field, label_field=cfg.label_field)
            self.train = load_classification_file(cfg.data, **fields)
            if cfg.test_data is not None:
                self.test = load_classification_file(cfg.test_data, classes=self.train.classes, **fields)
                self.source = f"--data {cfg.data!r}, held out: --test-data {cfg.test_data!r}"
            else:
                self.train, self.test = held_out_split(self.train, cfg.test_fraction, cfg.data_seed)
                self.source = f"--data {cfg.data!r}"
        self.classes = list(self.train.classes)
        self.sha256 = data_digest(self.train.texts, self.train.labels.tolist(), self.test.texts,
                                  self.test.labels.tolist(), self.classes)
        self._report = None

    def alphabet(self) -> str:
        return "".join(self.train.texts + self.test.texts)

    def encode(self, tokenizer, block: int) -> None:
        for name, part in (("train", self.train), ("held-out", self.test)):
            check_known(tokenizer, part.texts, f"{self.source}, {name} examples")
        self.idx, self.pad = encode_texts(self.train.texts, tokenizer, block)
        self.test_idx, self.test_pad = encode_texts(self.test.texts, tokenizer, block)
        self.n_cut = sum(len(tokenizer.encode(t)) > block for t in self.train.texts + self.test.texts)
        self.block = block

    def describe(self) -> str:
        counts = ", ".join(f"{c} {n}" for c, n in zip(self.classes, np.bincount(self.train.labels,
                                                                                 minlength=len(self.classes))))
        cut = f"; {self.n_cut} texts longer than {self.block} tokens keep their first {self.block}" \
            if self.n_cut else ""
        return (f"{self.source}: {len(self.train):,} train ({counts}) / {len(self.test):,} held-out "
                f"examples, {len(self.classes)} classes{cut}")

    def batch_fn(self, batch_size: int):
        idx, pad, labels = self.idx, self.pad, self.train.labels

        def draw(rng):
            rows = rng.choice(len(idx), size=min(batch_size, len(idx)), replace=False)
            p = pad[rows]
            T = int((~p).sum(axis=1).max())                     # cut to the longest row
            return idx[rows, :T], p[:, :T], labels[rows]
        return draw

    @staticmethod
    def loss_fn(model, batch):
        x, p, y = batch
        return model.forward(x, y, p)[1]

    @staticmethod
    def backward_fn(model) -> None:
        model.backward()                     # GPTClassifier skips the frozen bottom itself

    @staticmethod
    def tokens_fn(batch) -> int:
        return int((~batch[1]).sum())

    def _evaluate(self, model) -> dict:
        return evaluate(model, self.test_idx, self.test_pad, self.test.labels, self.classes)

    def eval_fn(self, cfg):
        def held_out_loss(model) -> float:
            self._report = self._evaluate(model)
            return self._report["loss"]
        return held_out_loss

    def before(self, model) -> dict:
        return {}

    def after(self, model, result, print_fn=print) -> dict:
        # the Trainer evaluated the final weights unless no step ran in this session
        report = self._report if result.losses and self._report is not None else self._evaluate(model)
        train = evaluate(model, self.idx, self.pad, self.train.labels, self.classes)
        tail = result.losses[-50:]
        print_fn(f"done: step {result.step}" + (f", train loss {np.mean(tail):.4f} (mean of the last "
                                                f"{len(tail)} steps)" if tail else "")
                 + f", {result.elapsed:.1f} s of training; training-set accuracy {train['accuracy']:.4f}")
        print_fn(f"\nheld-out evaluation ({report['n']} examples, loss {report['loss']:.4f}):\n"
                 f"{format_report(report)}\n")
        return {"classes": self.classes, "n_train": len(self.train), "n_test": len(self.test),
                "test": report, "train": {"accuracy": train["accuracy"], "loss": train["loss"]}}

    def merged_check(self, model) -> dict:
        r = self._evaluate(model)
        return {"accuracy": r["accuracy"], "loss": r["loss"]}

    @staticmethod
    def describe_merge(check: dict) -> str:
        return f"held-out accuracy {check['accuracy']:.4f}, loss {check['loss']:.4f} after merging"


def held_out_split(data, fraction: float, seed: int = 0):
    """(train, test) ClassificationData: round(fraction * n_k) examples of each class k held out
    (seeded), at least one kept for training; a class of one example stays in training."""
    rng = np.random.default_rng(seed)
    test_rows = []
    for k in range(len(data.classes)):
        rows = rng.permutation(np.flatnonzero(data.labels == k))
        test_rows += rows[:min(int(round(fraction * len(rows))), len(rows) - 1)].tolist()
    is_test = np.zeros(len(data), dtype=bool)
    is_test[test_rows] = True
    if not is_test.any():
        raise ValueError(f"--test-fraction {fraction} of {len(data)} examples holds none out: expected "
                         f"more examples, a larger --test-fraction, or --test-data")

    def part(mask):
        rows = np.flatnonzero(mask)
        return ClassificationData([data.texts[i] for i in rows], data.labels[rows], list(data.classes))
    return part(~is_test), part(is_test)
