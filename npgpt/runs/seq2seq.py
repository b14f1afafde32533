"""Sequence to sequence: the run behind `npgpt seq2seq train`, training the encoder-decoder
Transformer on a built-in task or a TSV file of pairs.

    result = run(Seq2SeqConfig(task="reverse", out="runs/reverse"))
    result.final.exact_match                        # greedy exact match on the held-out pairs
    model, vocab = load_seq2seq("runs/reverse")      # a Transformer in eval mode and its vocabulary
    translate_texts(model, vocab, ["0123456789"], beam_size=4)        # -> ['9876543210']

The data (npgpt.runs.seq2seq_data): a built-in task or 'source<TAB>target' lines, one character
one token. The model's max_len (--seq-len) covers the longest source and the longest target
plus its end-of-sequence token; by default it is fitted to the data.

Training is npgpt.trainer.Trainer's loop (progress bar, OUT/log.jsonl, atomic checkpoints, exact
resume, Ctrl-C, NaN guard) with:

    batch      batch_size pairs drawn without replacement from the training pairs by the
               Trainer's Generator, padded (npgpt.data.pad_batch); so a resumed run draws
               the same batches as an uninterrupted one
    loss       the model's label-smoothed cross-entropy over the non-pad target positions
    optimizer  AdamW, betas (0.9, 0.98), eps 1e-9 (the paper's), no weight decay by default
    schedule   "noam":     the paper's lr ~ min(t^-0.5, t W^-1.5), scaled so its peak (at t = W,
                           the warmup) is --lr; the paper's own factor 1 is --lr (d_model W)^-0.5
               "cosine":   linear warmup to --lr, cosine decay to --min-lr at --max-iters
               "constant": linear warmup to --lr, then --lr
    eval       every eval_interval steps and at the end: the validation loss of the held-out
               pairs (in the log) and their exact match under greedy decoding: the fraction
               of sources whose whole output equals the target (OUT/eval.jsonl, the checkpoint;
               npgpt.runs.seq2seq_eval)

The checkpoint (OUT/ckpt.safetensors) holds, besides the weights, the optimizer and every
generator state: "seq2seq" (this config), "vocab" (Seq2SeqVocab.to_dict()), "data" (where the
pairs came from, their count and SHA-256: a resume checks it), "exact_match" ({step: fraction}).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from tqdm.auto import tqdm

from .. import kernels
from ..config import TransformerConfig
from ..data import TASKS
from ..models.transformer import Transformer
from ..optim import Noam, WarmupCosine
from ..trainer import CHECKPOINT_NAME, LOG_NAME, RunLog, TrainResult
from .seq2seq_data import (Seq2SeqData, batch_fn, check_pairs, fitted_seq_len, load_data, target_tokens,
                           tokens_fn)
from .seq2seq_eval import (Evaluation, evaluate, load_seq2seq, translate_ids, translate_texts,
                           validation_loss)
from ..settings import (ALLREDUCE_HELP, ALLREDUCES, BACKENDS, DTYPES, PARALLEL_SETTINGS,
                       SHARD_HELP, WARMUP_SHOWN, Checker, default_warmup, is_number, setting)
from .skeleton import RunSpec, Session, processes, resume_settings

__all__ = ["Seq2SeqConfig", "Seq2SeqResult", "run", "resume_config", "RESUMABLE_CHANGES",
           "load_data", "check_pairs", "evaluate", "load_seq2seq", "translate_ids", "translate_texts",
           "Evaluation", "EVAL_LOG_NAME", "DEFAULT_OUT", "SCHEDULES"]

EVAL_LOG_NAME = "eval.jsonl"
SCHEDULES = ("noam", "cosine", "constant")
DEFAULT_OUT = "out-seq2seq"
_LAYERS = "--layers"


@dataclass(frozen=True)
class Seq2SeqConfig:
    """Everything `npgpt seq2seq train` takes; each field is the flag of the same name (--n-train).

    The defaults learn the reverse task (digit strings of 10 to 20 digits) to about 99% held-out
    exact match in a few minutes on 2 cores. Set task or data, not both (neither: "reverse",
    see resolved_task).
    """

    # data
    task: str | None = setting(None, "a built-in task", choices=TASKS, shown="reverse, unless --data")
    data: str | None = setting(None, "a UTF-8 file of 'source<TAB>target' lines to train on, instead "
                                     "of a task", metavar="FILE", shown="none")
    n_train: int = setting(50_000, "task: training pairs")
    n_test: int = setting(500, "task: held-out pairs (sources distinct from the training ones)")
    min_len: int = setting(10, "task copy/reverse/sort: fewest digits of a source")
    max_len: int = setting(20, "task copy/reverse/sort: most digits of a source")
    n_digits: int = setting(4, "task addition: most digits of each operand")
    test_fraction: float = setting(0.1, "--data: the share of the lines held out for evaluation")
    seq_len: int | None = setting(None, "the model's max_len: longest source, and longest target + 1",
                                  shown="fitted to the data")
    # model (TransformerConfig)
    d_model: int = setting(64, "width of every layer")
    n_head: int = setting(4, "attention heads")
    layers: int = setting(2, "encoder layers and decoder layers (each, unless set below)")
    encoder_layers: int | None = setting(None, "encoder layers", shown=_LAYERS)
    decoder_layers: int | None = setting(None, "decoder layers", shown=_LAYERS)
    d_ff: int | None = setting(None, "hidden width of the feed-forward networks", shown="4 * d-model")
    dropout: float = setting(0.0, "dropout probability")
    norm_first: bool = setting(True, "pre-LN layers (train without warm-up troubles); "
                                     "--no-norm-first: the paper's post-LN")
    share_embeddings: bool = setting(False, "one embedding table for source, target and output")
    label_smoothing: float = setting(0.1, "epsilon of the label-smoothed cross-entropy (the paper's; "
                                          "reverse reaches 99% in about half the steps)")
    dtype: str = setting("float32", "the parameters' and activations' dtype", choices=DTYPES)
    # optimisation
    max_iters: int = setting(2000, "optimisation steps")
    batch_size: int = setting(64, "pairs per step")
    schedule: str = setting("cosine", "learning-rate schedule: noam (the paper's), cosine or constant",
                            choices=SCHEDULES)
    lr: float = setting(1e-3, "peak learning rate (every schedule, noam included)")
    min_lr: float = setting(1e-4, "cosine: learning rate at the last step")
    warmup: int | None = setting(None, "steps of linear warmup (noam: the step of the peak)",
                                 shown=WARMUP_SHOWN)
    beta1: float = setting(0.9, "AdamW beta1")
    beta2: float = setting(0.98, "AdamW beta2")
    eps: float = setting(1e-9, "AdamW epsilon")
    weight_decay: float = setting(0.0, "AdamW weight decay (matrices only)")
    grad_clip: float = setting(1.0, "max global gradient norm (0: no clipping)")
    # evaluation, checkpoints, output
    eval_interval: int = setting(250, "steps between evaluations: val loss, greedy exact match (and "
                                      "at the last step)")
    checkpoint_interval: int = setting(250, "steps between checkpoints (and at the last step, and "
                                            "on Ctrl-C)")
    seed: int = setting(0, "seed of the task data, the split, the initialisation, batches and dropout")
    out: str = setting(DEFAULT_OUT, "folder for ckpt.safetensors, log.jsonl and eval.jsonl", metavar="DIR")
    backend: str | None = setting(None, "kernel backend", choices=BACKENDS,
                                  shown="NPGPT_BACKEND or the fastest")
    examples: int = setting(5, "held-out translations to print at the end")
    allreduce: str = setting("mpi", ALLREDUCE_HELP, choices=ALLREDUCES)
    shard_optimizer: bool = setting(False, SHARD_HELP)

    def __post_init__(self):
        check = Checker(self)
        fail = check.fail
        if self.task is not None and self.data is not None:
            raise ValueError(f"Seq2SeqConfig: task={self.task!r} and data={self.data!r} both "
                             f"given (--task, --data): expected one")
        check.choices()
        if self.data is not None and not isinstance(self.data, str):
            fail("data", "a file name")
        check.integers("n_train", "n_test", "min_len", "max_len", "n_digits", "d_model", "n_head",
                       "layers", "max_iters", "batch_size")
        check.integers("seq_len", "d_ff", unset="fitted")
        if self.seq_len is not None and self.seq_len < 2:
            fail("seq_len", "at least 2 (a target symbol and its end-of-sequence token)")
        check.integers("encoder_layers", "decoder_layers", low=0, unset=_LAYERS)
        check.integers("eval_interval", "checkpoint_interval", "seed", "examples", low=0)
        check.integers("warmup", low=0, unset=WARMUP_SHOWN)
        check.numbers("lr", "min_lr", "weight_decay", "grad_clip")
        if not self.lr > 0:
            fail("lr", "a number > 0")
        if not (is_number(self.eps) and self.eps > 0):
            fail("eps", "a number > 0")
        if self.schedule == "cosine" and self.min_lr > self.lr:
            fail("min_lr", f"a number <= lr={self.lr}")
        if self.schedule == "noam" and self.warmup is not None and self.warmup < 1:
            fail("warmup", "at least 1 with --schedule noam (its peak is at step --warmup)")
        if self.schedule != "noam" and self.warmup is not None and self.warmup > self.max_iters:
            fail("warmup", f"at most max-iters={self.max_iters} (lower --warmup with --max-iters)")
        check.fractions("beta1", "beta2", "dropout", "label_smoothing")
        check.fractions("test_fraction", zero=False)
        if self.min_len > self.max_len:
            fail("max_len", f"at least min-len={self.min_len}")
        if self.d_model % self.n_head:
            fail("n_head", f"a divisor of d-model={self.d_model}")
        check.flags("norm_first", "share_embeddings", "shard_optimizer")

    @property
    def resolved_task(self) -> str | None:
        """The built-in task the run trains on: task, or "reverse" when neither task nor data
        is given; None when it trains on data."""
        return self.task if self.task is not None or self.data is not None else "reverse"

    def model_config(self, vocab_size: int, seq_len: int) -> TransformerConfig:
        """The TransformerConfig of the run, for a vocabulary of vocab_size ids."""
        return TransformerConfig(
            src_vocab_size=vocab_size, tgt_vocab_size=vocab_size, d_model=self.d_model,
            n_head=self.n_head,
            n_encoder_layers=self.layers if self.encoder_layers is None else self.encoder_layers,
            n_decoder_layers=self.layers if self.decoder_layers is None else self.decoder_layers,
            d_ff=self.d_ff or 4 * self.d_model, max_len=seq_len, dropout=self.dropout,
            norm_first=self.norm_first, share_embeddings=self.share_embeddings,
            label_smoothing=self.label_smoothing, pad_id=0, dtype=self.dtype)

    @property
    def warmup_steps(self) -> int:
        """The run's warmup: warmup, or when unset 100 steps, a tenth of max_iters if that is less."""
        return default_warmup(self.max_iters) if self.warmup is None else self.warmup

    def schedule_fn(self):
        """step (1-based) -> learning rate."""
        w = self.warmup_steps
        if self.schedule == "noam":
            return Noam(self.d_model, w, factor=self.lr * math.sqrt(self.d_model * w))
        if self.schedule == "cosine":
            return WarmupCosine(self.lr, w, self.max_iters, self.min_lr)
        return WarmupCosine(self.lr, w, self.max_iters, self.lr)     # constant after the warmup


SPEC = RunSpec(command="npgpt seq2seq train", section="seq2seq",
               # settings a resumed run may change; the rest must match the checkpoint
               resumable=("max_iters", "eval_interval", "checkpoint_interval", "out", "backend",
                          "examples", *PARALLEL_SETTINGS),
               outputs=(CHECKPOINT_NAME, LOG_NAME, EVAL_LOG_NAME), paths=("data",), hashed=("data",))
RESUMABLE_CHANGES = SPEC.resumable


def resume_config(out, overrides: dict | None = None) -> Seq2SeqConfig:
    """The Seq2SeqConfig saved in out/ckpt.safetensors, with overrides of RESUMABLE_CHANGES;
    an override of another setting that differs from the saved one is an error."""
    return resume_settings(out, Seq2SeqConfig, SPEC, overrides)


@dataclass
class Seq2SeqResult(TrainResult):
    exact_match: dict = field(default_factory=dict)   # {step: greedy held-out exact match}
    final: Evaluation | None = None                    # the last step's evaluation


class HeldOut:
    """The held-out evaluations of a run: beside each validation loss (the Trainer's eval_fn),
    the greedy exact match, recorded in OUT/eval.jsonl, in every checkpoint (history) and above
    the progress bar."""

    def __init__(self, data: Seq2SeqData):
        self.data = data
        self.history: dict = {}       # {str(step): exact match}: the checkpoint's meta holds it
        self.last: Evaluation | None = None
        self.last_step: int | None = None
        self.log: RunLog | None = None

    def loss(self, model) -> float:
        self.last = evaluate(model, self.data.test)
        return validation_loss(model, self.data.test, self.data.vocab)

    def after_step(self, on_step: Callable | None) -> Callable:
        """The Trainer's on_step: record an evaluation, then call on_step (if any)."""
        def after(trainer, rec):
            if "val_loss" in rec:
                self.record(rec["step"], rec["val_loss"])
            if on_step is not None:
                on_step(trainer, rec)
        return after

    def record(self, step: int, val_loss: float) -> None:
        ev, self.last_step = self.last, step
        self.history[str(step)] = ev.exact_match
        self.log.note({"step": step, "val_loss": val_loss, "exact_match": ev.exact_match,
                       "correct": ev.correct, "n": ev.n})
        tqdm.write(f"step {step}: held-out exact match {ev.exact_match:.2%} ({ev.correct}/{ev.n}, greedy)")


def run(cfg: Seq2SeqConfig, resume: bool = False, progress: bool | None = True,
        on_step: Callable | None = None, print_fn: Callable = print) -> Seq2SeqResult:
    """Train an encoder-decoder Transformer as cfg says; with resume, continue the checkpoint
    in cfg.out. Runs on cfg.backend (the backend in use before is restored afterwards). Prints
    the data, the model, evaluations, the final held-out exact match and a few example
    translations through print_fn."""
    with kernels.backend(cfg.backend or kernels.current_backend()), processes(cfg, SPEC) as group:
        session = Session(SPEC, cfg, resume, group)
        data = load_data(cfg)
        session.use_data(data.source, data.sha256, n_train=len(data.train), n_test=len(data.test))
        seq_len = cfg.seq_len or fitted_seq_len(data.train + data.test)
        for split, pairs in (("train", data.train), ("test", data.test)):
            check_pairs(pairs, data.vocab.size, seq_len, where=lambda i, s=split: data.where(s, i))
        model = Transformer(cfg.model_config(data.vocab.size, seq_len), seed=cfg.seed)
        held_out = HeldOut(data)
        trainer = session.trainer(
            model, session.adamw(model, eps=cfg.eps), batch_fn(data.train, data.vocab, cfg.batch_size, seq_len),
            eval_fn=held_out.loss, schedule=cfg.schedule_fn(), tokens_fn=tokens_fn, units=target_tokens,
            meta={"vocab": data.vocab.to_dict(), "exact_match": held_out.history},
            progress=progress, on_step=held_out.after_step(on_step))
        if session.resume(trainer, print_fn):
            held_out.history.update(session.saved.meta.get("exact_match", {}))
        _describe(data, model, print_fn)
        held_out.log = RunLog(session.out / EVAL_LOG_NAME if session.writer else None, cfg.max_iters,
                              trainer.step, progress=False)
        try:
            result = trainer.run()
        finally:
            held_out.log.close()
        final = held_out.last if held_out.last_step == result.step else None
        if final is None and not result.interrupted and result.step > 0:
            final = evaluate(model, data.test)        # a resume that had nothing left to do
        res = Seq2SeqResult(**vars(result), exact_match={int(k): v for k, v in held_out.history.items()},
                            final=final)
        session.report(res, print_fn)
        if not res.interrupted:
            _print_examples(cfg, res, data, print_fn)
    return res


def _describe(data: Seq2SeqData, model, print_fn: Callable) -> None:
    m = model.config
    print_fn(f"data: {data.source}: {len(data.train):,} train / {len(data.test):,} held-out pairs, "
             f"vocabulary {data.vocab.size} ({len(data.vocab.symbols)} symbols + 4 specials)")
    print_fn(f"model: Transformer {m.n_encoder_layers}+{m.n_decoder_layers} layers, "
             f"{m.n_head} heads, d_model {m.d_model}, d_ff {m.d_ff}, max_len {m.max_len}, "
             f"{'pre' if m.norm_first else 'post'}-LN, {model.num_parameters():,} parameters, "
             f"{m.dtype}, backend {kernels.current_backend()}")


def _print_examples(cfg: Seq2SeqConfig, res: Seq2SeqResult, data: Seq2SeqData, print_fn: Callable) -> None:
    ev = res.final
    if ev is None:
        return
    print_fn(f"held-out exact match: {ev.exact_match:.2%} ({ev.correct}/{ev.n} sources, greedy decoding)")
    if cfg.examples:
        print_fn("examples (source -> output):")
        for (s, t), h in list(zip(data.test, ev.hypotheses))[:cfg.examples]:
            ok = "ok" if h == list(t) else f"wrong, expected {data.vocab.decode(t)}"
            print_fn(f"  {data.vocab.decode(s)} -> {data.vocab.decode(h) or '(nothing)'}   ({ok})")
