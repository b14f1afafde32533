"""Pre-training a GPT on a text: the run behind `npgpt train`.

    result = run(PretrainConfig(data="input.txt", max_iters=2000, out="out"))
    result = run(resume_config("out", {"max_iters": 4000}), resume=True)     # continue it

The run: the text (a UTF-8 file, or the built-in corpus), a tokenizer (one id per character, or
a byte-level BPE trained on the text), the last val_fraction held out; a GPT of the preset with
the sizes set here; AdamW with a linear warmup then a cosine decay from lr to min_lr; the
Trainer (npgpt.trainer) with random windows of the text as batches and the mean loss of
eval_iters fixed validation batches as its evaluation; at the end, a sample.

The checkpoint (OUT/ckpt.safetensors) holds, besides the weights, the optimizer and every
generator state: "train" (these settings), "tokenizer", "data" (the source, its SHA-256: a
resume checks it, and its token count), "backend".
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .. import data, kernels
from ..config import GPT_PRESETS, GPTConfig
from ..models.gpt import GPT
from ..optim import WarmupCosine
from ..tokenizers import BPETokenizer, CharTokenizer, tokenizer_from_dict
from ..trace.health import Health
from ..trainer import CHECKPOINT_NAME, LOG_NAME, TrainResult
from ..settings import (ALLREDUCE_HELP, ALLREDUCES, BACKENDS, DTYPES, PARALLEL_SETTINGS,
                       SHARD_HELP, WARMUP_SHOWN, Checker, default_warmup, setting)
from .skeleton import RunSpec, Session, print_sample, processes, resume_settings

TOKENIZERS = ("char", "bpe")
_UNSET = "the preset's"


@dataclass(frozen=True)
class PretrainConfig:
    """Everything `npgpt train` takes; each field is the flag of the same name (--max-iters).

    The defaults train a small char-level GPT on the built-in corpus in a few minutes on 2 cores.
    Model fields left None come from the preset.
    """

    # data and tokenizer
    data: str | None = setting(None, "a UTF-8 text file to train on", metavar="FILE",
                               shown="the built-in corpus, Python's docs")
    tokenizer: str = setting("char", "char: one id per character; bpe: byte-level BPE trained on "
                                     "the data", choices=TOKENIZERS)
    vocab_size: int = setting(512, "vocabulary size of the BPE tokenizer")
    val_fraction: float = setting(0.1, "the last part of the text held out for the validation loss")
    # model
    preset: str = setting("baby", "model preset (GPTConfig.preset); the size flags below override it",
                          choices=tuple(sorted(GPT_PRESETS)))
    n_layer: int | None = setting(None, "Transformer blocks", shown=_UNSET)
    n_head: int | None = setting(None, "attention heads per block", shown=_UNSET)
    n_embd: int | None = setting(None, "width of the residual stream", shown=_UNSET)
    block_size: int | None = setting(None, "context length in tokens", shown=_UNSET)
    dropout: float | None = setting(None, "dropout probability", shown=_UNSET)
    dtype: str = setting("float32", "the parameters' and activations' dtype", choices=DTYPES)
    # optimisation: AdamW, linear warmup then cosine decay from lr to min_lr at max_iters
    max_iters: int = setting(1500, "optimisation steps")
    batch_size: int = setting(16, "sequences per step")
    lr: float = setting(2e-3, "peak learning rate (AdamW)")
    min_lr: float = setting(2e-4, "learning rate at the end of the cosine decay")
    warmup: int | None = setting(None, "steps of linear warmup", shown=WARMUP_SHOWN)
    weight_decay: float = setting(0.1, "AdamW weight decay (matrices only)")
    beta1: float = setting(0.9, "AdamW beta1")
    beta2: float = setting(0.99, "AdamW beta2")
    grad_clip: float = setting(1.0, "max global gradient norm (0: no clipping)")
    # evaluation, checkpoints, output
    eval_interval: int = setting(250, "steps between validation losses (and at the last step)")
    eval_iters: int = setting(20, "validation batches per validation loss (the same each time)")
    checkpoint_interval: int = setting(250, "steps between checkpoints (and at the last step, and "
                                            "on Ctrl-C)")
    seed: int = setting(0, "seed of the initialisation, batches and dropout")
    out: str = setting("out", "folder for ckpt.safetensors and log.jsonl", metavar="DIR")
    backend: str | None = setting(None, "kernel backend", choices=BACKENDS,
                                  shown="NPGPT_BACKEND or the fastest")
    sample_tokens: int = setting(300, "tokens to sample and print at the end (0: none)")
    health_every: int = setting(0, "every N steps, log each layer's activation std, gradient norm and "
                                   "update/weight ratio to log.jsonl, for `npgpt plot` (0: never)")
    allreduce: str = setting("mpi", ALLREDUCE_HELP, choices=ALLREDUCES)
    shard_optimizer: bool = setting(False, SHARD_HELP)

    def __post_init__(self):
        check = Checker(self)
        fail = check.fail
        check.integers("vocab_size", "max_iters", "batch_size", "eval_iters")
        check.integers("n_layer", "n_head", "n_embd", "block_size", unset=_UNSET)
        check.integers("eval_interval", "checkpoint_interval", "seed", "sample_tokens", "health_every",
                       low=0)
        check.integers("warmup", low=0, unset=WARMUP_SHOWN)
        check.numbers("lr", "min_lr", "weight_decay", "grad_clip")
        if not self.lr > 0:
            fail("lr", "a number > 0")
        if self.min_lr > self.lr:
            fail("min_lr", f"a number <= lr={self.lr}")
        check.fractions("beta1", "beta2")
        check.fractions("val_fraction", zero=False)
        check.fractions("dropout", unset=_UNSET)
        if self.warmup is not None and self.warmup > self.max_iters:     # only an explicit one
            fail("warmup", f"at most max-iters={self.max_iters} (lower --warmup with --max-iters)")
        if self.tokenizer == "bpe" and self.vocab_size < 257:
            fail("vocab_size", "at least 257 for --tokenizer bpe (256 bytes + <|endoftext|>)")
        check.choices()
        check.flags("shard_optimizer")

    @property
    def warmup_steps(self) -> int:
        """The run's warmup: warmup, or when unset 100 steps, a tenth of max_iters if that is less."""
        return default_warmup(self.max_iters) if self.warmup is None else self.warmup

    def schedule_fn(self) -> WarmupCosine:
        """step (1-based) -> learning rate: linear warmup to lr, then cosine decay to min_lr."""
        return WarmupCosine(self.lr, self.warmup_steps, self.max_iters, self.min_lr)

    def model_config(self, vocab_size: int) -> GPTConfig:
        """The GPTConfig of the run: the preset, the fields set here, the tokenizer's vocab."""
        overrides = {k: getattr(self, k) for k in ("n_layer", "n_head", "n_embd", "block_size", "dropout")
                     if getattr(self, k) is not None}
        return GPTConfig.preset(self.preset, vocab_size=vocab_size, dtype=self.dtype, **overrides)


SPEC = RunSpec(command="npgpt train", section="train",
               # settings a resumed run may change; the rest must match the checkpoint
               resumable=("max_iters", "eval_interval", "checkpoint_interval", "out", "backend",
                          "sample_tokens", "health_every", *PARALLEL_SETTINGS),
               outputs=(CHECKPOINT_NAME, LOG_NAME), paths=("data",), hashed=("data",))
RESUMABLE_CHANGES = SPEC.resumable


def resume_config(out, overrides: dict | None = None) -> PretrainConfig:
    """The PretrainConfig saved in out/ckpt.safetensors, with overrides of RESUMABLE_CHANGES;
    an override of another setting that differs from the saved one is an error."""
    return resume_settings(out, PretrainConfig, SPEC, overrides)


def load_corpus(cfg: PretrainConfig) -> tuple[str, str]:
    """(the text, how messages name it)."""
    if cfg.data is None:
        return data.default_corpus(), "the built-in corpus"
    return data.load_text(cfg.data), repr(cfg.data)


def build_tokenizer(cfg: PretrainConfig, text: str):
    if cfg.tokenizer == "char":
        return CharTokenizer.from_text(text)
    return BPETokenizer.train(text, cfg.vocab_size)


def lm_batch_fn(ids: np.ndarray, batch_size: int, block_size: int, name: str = "train") -> Callable:
    """rng -> (x, y): random windows of ids (npgpt.data.get_batch)."""
    return lambda rng: data.get_batch(ids, batch_size, block_size, rng, name)


def lm_eval_fn(ids: np.ndarray, batch_size: int, block_size: int, eval_iters: int, seed: int) -> Callable:
    """model -> mean loss over eval_iters batches of ids, the same batches at every call
    (drawn from a Generator seeded with seed each time)."""
    def evaluate(model) -> float:
        rng = np.random.default_rng(seed)
        return float(np.mean([model.forward(*data.get_batch(ids, batch_size, block_size, rng, "val"))[1]
                              for _ in range(eval_iters)]))
    return evaluate


def run(cfg: PretrainConfig, resume: bool = False, progress: bool | None = True,
        on_step: Callable | None = None, print_fn: Callable = print) -> TrainResult:
    """Pre-train a GPT as cfg says; with resume, continue the checkpoint in cfg.out.

    Runs on cfg.backend (the backend in use before is restored afterwards). Prints what it does
    (corpus, model size, final losses and a sample) through print_fn.
    """
    with kernels.backend(cfg.backend or kernels.current_backend()), processes(cfg, SPEC) as group:
        session = Session(SPEC, cfg, resume, group)
        text, source = load_corpus(cfg)
        session.use_data(source, hashlib.sha256(text.encode("utf-8")).hexdigest())
        tok = (tokenizer_from_dict(session.saved.meta["tokenizer"]) if session.saved is not None
               else build_tokenizer(cfg, text))
        mcfg = cfg.model_config(tok.vocab_size)
        ids = np.asarray(tok.encode(text), dtype=np.int64)
        session.data["tokens"] = int(len(ids))
        train_ids, val_ids = data.split(ids, cfg.val_fraction)
        for name, part in (("train", train_ids), ("validation", val_ids)):
            if len(part) < mcfg.block_size + 1:
                raise ValueError(f"{source} is too short: {len(ids):,} tokens give {len(part):,} "
                                 f"{name} tokens, expected at least block-size + 1 = "
                                 f"{mcfg.block_size + 1} (use a longer text, a smaller --block-size "
                                 f"or another --val-fraction)")
        model = GPT(mcfg, seed=cfg.seed)
        trainer = session.trainer(
            model, session.adamw(model), lm_batch_fn(train_ids, cfg.batch_size, mcfg.block_size),
            eval_fn=lm_eval_fn(val_ids, cfg.batch_size, mcfg.block_size, cfg.eval_iters, seed=cfg.seed + 1),
            schedule=cfg.schedule_fn(),
            meta={"tokenizer": tok.to_dict()}, progress=progress, on_step=on_step,
            around_step=Health(cfg.health_every) if cfg.health_every else None)
        session.resume(trainer, print_fn)
        print_fn(f"data: {source}, {len(text):,} characters -> {len(ids):,} {cfg.tokenizer} tokens "
                 f"(vocabulary {tok.vocab_size}); {len(train_ids):,} train / {len(val_ids):,} validation")
        print_fn(f"model: GPT {mcfg.n_layer} layers, {mcfg.n_head} heads, {mcfg.n_embd} wide, context "
                 f"{mcfg.block_size}, {model.num_parameters():,} parameters, {mcfg.dtype}, "
                 f"backend {kernels.current_backend()}")
        result = trainer.run()
        session.report(result, print_fn)
        if cfg.sample_tokens and session.writer and result.step > 0 and not result.interrupted:
            print_sample(model, tok, cfg.sample_tokens, cfg.seed, print_fn)
    return result
