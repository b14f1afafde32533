"""Training: a reusable loop (Trainer) and the GPT pre-training run behind `npgpt train`.

The loop, for any model that follows npgpt's protocol (forward -> loss, backward adds into
.grad), one iteration per step s = 1, 2, ...:

    batch = batch_fn(rng)                       the batch sampler's Generator, saved in checkpoints
    loss  = loss_fn(model, batch)               default: model.forward(*batch)[1]
    stop if loss is not finite                  (nothing updated; the last checkpoint is kept)
    zero_grad; model.backward()
    norm  = clip_grad_norm(optimizer, clip)     stop if the norm is not finite
    optimizer.lr = schedule(s); optimizer.step()
    log {step, loss, lr, grad_norm, tokens_per_s, elapsed}   one JSON line per step + progress bar
    every eval_interval steps and at the end:   val_loss = eval_fn(model), in eval mode
    every checkpoint_interval steps and at the end: an atomic checkpoint

Ctrl-C lets the current step finish, saves a checkpoint and returns (a second Ctrl-C stops at
once, keeping the last checkpoint). `Trainer.resume(checkpoint)` restores the model, the
optimizer, the step, the sampler's and every dropout generator's state, so the resumed run's
losses equal the uninterrupted run's bit for bit (same backend, same machine).

The seam for other training runs (seq2seq, fine-tuning): build the model and the optimizer, then

    trainer = Trainer(model, optimizer, batch_fn=lambda rng: next_batch(rng),   # a tuple of arrays
                      loss_fn=lambda m, b: m.forward(*b)[1],                   # leaves m ready for backward()
                      eval_fn=lambda m: my_val_loss(m), schedule=npgpt.optim.Noam(128, 4000),
                      max_iters=5000, out_dir="runs/x", meta={"tokenizer": vocab.to_dict()})
    result = trainer.run()

RunLog (progress bar + JSONL), npgpt.checkpoint.save/load, check_finite and graceful_interrupt
are usable on their own. `train(TrainConfig(...))` is the GPT run: data, tokenizer, model,
AdamW with warmup + cosine, the Trainer, and a sample at the end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from . import checkpoint as ckpt_io
from .optim import clip_grad_norm

CHECKPOINT_NAME = "ckpt.safetensors"
LOG_NAME = "log.jsonl"


class TrainingDiverged(RuntimeError):
    """The loss, the gradient norm, the validation loss or a parameter became NaN or infinite:
    training stopped without saving the bad state. .step: the step it happened at."""

    def __init__(self, message: str, step: int | None = None):
        super().__init__(message)
        self.step = step


# --------------------------------------------------------------------------------------------
# Small reusable pieces
# --------------------------------------------------------------------------------------------

def check_finite(step: int, **values: float) -> None:
    """Raise TrainingDiverged naming the step and the first of values that is NaN or infinite."""
    for name, value in values.items():
        if not math.isfinite(value):
            raise TrainingDiverged(f"step {step}: {name.replace('_', ' ')} is {value}", step)


@contextlib.contextmanager
def graceful_interrupt():
    """Within the block, Ctrl-C (SIGINT) sets flag["requested"] instead of raising, so a loop can
    finish its step and save; a second Ctrl-C raises KeyboardInterrupt at once. Outside the main
    thread signals cannot be caught, and Ctrl-C raises as usual."""
    flag = {"requested": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag["requested"]:
            raise KeyboardInterrupt
        flag["requested"] = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


class RunLog:
    """A run's progress bar (tqdm: step, loss, tokens/s, ETA) and its JSONL log.

    Each `record(dict)` appends one JSON line to path (flushed, so a crash loses nothing) and
    advances the bar. `start_step` > 0 (a resumed run) first drops the records of later steps,
    which the resumed run is about to compute again. path None: no file; progress False: no bar.
    """

    def __init__(self, path, total: int, start_step: int = 0, progress: bool | None = True):
        from tqdm.auto import tqdm

        self.path = Path(path) if path is not None else None
        self._file, self._avg = None, {}
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if start_step == 0:
                self.path.write_text("")
            else:
                self._truncate(start_step)
            self._file = open(self.path, "a", encoding="utf-8")
        # progress None: a bar only on a terminal (tqdm's own test)
        self.bar = tqdm(total=total, initial=start_step, unit="step", dynamic_ncols=True,
                        disable=None if progress is None else not progress, file=sys.stderr)

    def _truncate(self, last_step: int) -> None:
        if not self.path.exists():
            return
        kept = [line for line in self.path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= last_step]
        ckpt_io.write_atomic(self.path, "".join(line + "\n" for line in kept).encode())

    def record(self, rec: dict) -> None:
        self.note(rec)
        # the bar shows moving averages (the log keeps every step's own numbers)
        for key in ("loss", "tokens_per_s"):
            old = self._avg.get(key)
            self._avg[key] = rec[key] if old is None else 0.9 * old + 0.1 * rec[key]
        self.bar.set_postfix_str(f"loss {self._avg['loss']:.4f}, "
                                 f"{self._avg['tokens_per_s']:,.0f} tok/s", refresh=False)
        self.bar.update(1)

    def note(self, rec: dict) -> None:
        """Append a record to the log without advancing the bar (an error, say)."""
        if self._file is not None:
            self._file.write(json.dumps(rec) + "\n")
            self._file.flush()

    def message(self, text: str) -> None:
        """Print a line above the bar (or plainly when there is no bar)."""
        if self.bar.disable:
            print(text, flush=True)
        else:
            self.bar.write(text)

    def close(self) -> None:
        self.bar.close()
        if self._file is not None:
            self._file.close()
            self._file = None


def read_log(path) -> list[dict]:
    """The records of a JSONL log, in order."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line]


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------

@dataclass
class TrainResult:
    step: int                    # the last completed step
    losses: list                 # the training loss of every step this run computed
    val_losses: dict             # {step: validation loss}
    elapsed: float               # seconds of training, earlier sessions of a resumed run included
    interrupted: bool = False    # Ctrl-C: stopped early, checkpoint saved
    checkpoint: Path | None = None


def _default_loss(model, batch):
    return model.forward(*batch)[1]


def _default_tokens(batch) -> int:
    return int(np.asarray(batch[0]).size)


class Trainer:
    """The training loop of any npgpt model (see the module docstring for the seam).

    model:        has forward/backward/zero_grad/train/eval (and .config, for checkpoints)
    optimizer:    npgpt.optim.AdamW or SGD over the model's parameters
    batch_fn:     rng -> batch (a tuple); draw all randomness from rng so runs can resume
    loss_fn:      (model, batch) -> float loss; afterwards model.backward() must give its gradient
    eval_fn:      model -> float (validation loss), called in eval mode; None: no evaluation
    schedule:     step (1-based) -> learning rate; None keeps the optimizer's lr
    grad_clip:    max global gradient norm; 0 measures the norm without clipping
    out_dir:      where the checkpoint (ckpt.safetensors) and the log (log.jsonl) go; None: neither
    meta:         JSON-serialisable entries stored in every checkpoint (tokenizer, settings, ...)
    tokens_fn:    batch -> number of tokens, for tokens/s (default: the first array's size)
    seed:         seeds the batch sampler's Generator (the model seeds its own dropout)
    progress:     True: a progress bar; False: none; None: a bar only on a terminal
    on_step:      on_step(trainer, record) after each step's record (tests, custom logging)
    """

    def __init__(self, model, optimizer, batch_fn: Callable, *, max_iters: int,
                 loss_fn: Callable = _default_loss, eval_fn: Callable | None = None,
                 schedule: Callable | None = None, grad_clip: float = 1.0,
                 eval_interval: int = 0, checkpoint_interval: int = 0, out_dir=None,
                 meta: dict | None = None, seed: int = 0, progress: bool | None = True,
                 tokens_fn: Callable = _default_tokens, on_step: Callable | None = None):
        for name, value in (("max_iters", max_iters), ("eval_interval", eval_interval),
                            ("checkpoint_interval", checkpoint_interval)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"Trainer: {name}={value!r}, expected an integer >= 0")
        if not (isinstance(grad_clip, (int, float)) and math.isfinite(grad_clip) and grad_clip >= 0):
            raise ValueError(f"Trainer: grad_clip={grad_clip!r}, expected a finite number >= 0 "
                             f"(0: no clipping)")
        taken = sorted(set(meta or {}) & {"step", "elapsed", "batch_rng", "val_losses", *ckpt_io.RESERVED})
        if taken:
            raise ValueError(f"Trainer: meta keys {taken} are the Trainer's or the checkpoint's own: "
                             f"expected other names")
        self.model, self.optimizer = model, optimizer
        self.batch_fn, self.loss_fn, self.eval_fn, self.tokens_fn = batch_fn, loss_fn, eval_fn, tokens_fn
        self.schedule, self.grad_clip = schedule, float(grad_clip)
        self.max_iters = max_iters
        self.eval_interval, self.checkpoint_interval = eval_interval, checkpoint_interval
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.meta = dict(meta or {})
        self.progress = progress
        self.on_step = on_step           # called as on_step(trainer, record) after each step
        self.rng = np.random.default_rng(seed)     # the batch sampler's generator
        self.step = 0
        self.elapsed = 0.0
        self.val_losses: dict[int, float] = {}

    @property
    def checkpoint_path(self) -> Path | None:
        return self.out_dir / CHECKPOINT_NAME if self.out_dir is not None else None

    # -- checkpoints ---------------------------------------------------------------------------

    def save(self) -> Path:
        """Write the checkpoint of the state after step self.step (atomically). Parameters that
        are not all finite raise TrainingDiverged instead: the file on disk stays the last good one."""
        for name, p in self.model.named_parameters():
            if not np.isfinite(p.data).all():
                raise TrainingDiverged(f"step {self.step}: parameter {name} holds NaN or infinite "
                                       f"values: not saved; {self._kept()}", self.step)
        return ckpt_io.save(self.checkpoint_path, self.model, self.optimizer, **self.meta,
                            step=self.step, elapsed=self.elapsed,
                            batch_rng=self.rng.bit_generator.state,
                            val_losses={str(k): v for k, v in self.val_losses.items()})

    def resume(self, checkpoint=None) -> None:
        """Continue from a checkpoint (a path, a Checkpoint, or None: this run's own file):
        model, optimizer, step, elapsed time, validation history and every generator state."""
        if checkpoint is None:
            checkpoint = self.checkpoint_path
        ck = checkpoint if isinstance(checkpoint, ckpt_io.Checkpoint) else ckpt_io.load(checkpoint)
        missing = [k for k in ("step", "batch_rng") if k not in ck.meta]
        if missing:
            raise ValueError(f"checkpoint {str(ck.path)!r} lacks {missing}: it was not saved by a "
                             f"Trainer, so there is no training state to resume")
        ck.restore(self.model, self.optimizer)
        self.rng.bit_generator.state = ck.meta["batch_rng"]
        self.step = int(ck.meta["step"])
        self.elapsed = float(ck.meta.get("elapsed", 0.0))
        self.val_losses = {int(k): v for k, v in ck.meta.get("val_losses", {}).items()}

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> TrainResult:
        """Train from self.step + 1 to max_iters. Raises TrainingDiverged on a NaN/inf loss,
        gradient norm, validation loss or parameter (the checkpoint on disk stays the last good one)."""
        log_path = self.out_dir / LOG_NAME if self.out_dir is not None else None
        log = RunLog(log_path, self.max_iters, self.step, self.progress)
        self._clock = (time.perf_counter(), self.elapsed)    # elapsed = earlier sessions + this one
        self.model.train()
        try:
            with graceful_interrupt() as ctrl_c:
                losses = self._loop(log, ctrl_c)
            interrupted = ctrl_c["requested"]
            if interrupted and self.out_dir is not None:
                self._tick()
                self.save()
        except TrainingDiverged as e:
            log.note({"step": e.step, "error": str(e)})
            raise
        finally:
            log.close()
        return TrainResult(self.step, losses, dict(self.val_losses), self.elapsed, interrupted,
                           self.checkpoint_path if self.out_dir is not None and self.step > 0 else None)

    def _loop(self, log: RunLog, ctrl_c: dict) -> list:
        losses, since_eval = [], []
        while self.step < self.max_iters and not ctrl_c["requested"]:
            rec = self._train_step()
            losses.append(rec["loss"])
            since_eval.append(rec["loss"])
            end = self.step == self.max_iters
            if self.eval_fn is not None and (end or self._every(self.eval_interval)):
                rec["val_loss"] = self._evaluate(log, since_eval)
                since_eval = []
            log.record(rec)
            if self.on_step is not None:
                self.on_step(self, rec)
            if self.out_dir is not None and (end or self._every(self.checkpoint_interval)):
                self._tick()
                self.save()
        return losses

    def _kept(self) -> str:
        path = self.checkpoint_path
        if path is not None and path.exists():
            return f"the last good checkpoint is kept: {path}"
        return "no checkpoint had been saved"

    def _tick(self) -> None:
        start, before = self._clock
        self.elapsed = before + time.perf_counter() - start

    def _every(self, interval: int) -> bool:
        return interval > 0 and self.step % interval == 0

    def _train_step(self) -> dict:
        step = self.step + 1
        t0 = time.perf_counter()
        batch = self.batch_fn(self.rng)
        loss = float(self.loss_fn(self.model, batch))
        try:
            check_finite(step, loss=loss)
            self.optimizer.zero_grad()
            self.model.backward()
            # grad_clip 0: measure the norm only (a max_norm no finite norm reaches)
            norm = clip_grad_norm(self.optimizer, self.grad_clip or np.finfo(np.float64).max)
            check_finite(step, gradient_norm=norm)
        except TrainingDiverged as e:
            raise TrainingDiverged(f"{e}: training stopped before this step changed any "
                                   f"parameter; {self._kept()}", e.step) from None
        if self.schedule is not None:
            self.optimizer.lr = self.schedule(step)
        self.optimizer.step()
        dt = time.perf_counter() - t0
        self.step = step
        self._tick()
        tps = self.tokens_fn(batch) / dt
        return {"step": step, "loss": loss, "lr": self.optimizer.lr, "grad_norm": norm,
                "tokens_per_s": tps, "elapsed": round(self.elapsed, 4)}

    def _evaluate(self, log: RunLog, since_eval: list) -> float:
        self.model.eval()
        try:
            val = float(self.eval_fn(self.model))
        finally:
            self.model.train()
        self._tick()
        if not math.isfinite(val):
            raise TrainingDiverged(f"step {self.step}: validation loss is {val}; {self._kept()}", self.step)
        self.val_losses[self.step] = val
        log.message(f"step {self.step}: train loss {np.mean(since_eval):.4f} (mean of the last "
                    f"{len(since_eval)} steps), val loss {val:.4f}")
        return val


# --------------------------------------------------------------------------------------------
# The GPT run (`npgpt train`)
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrainConfig:
    """Everything `npgpt train` takes; each field is the flag of the same name (--max-iters).

    The defaults train a small char-level GPT on the built-in corpus in a few minutes on 2 cores.
    Model fields left None come from the preset.
    """

    # data and tokenizer
    data: str | None = None          # a UTF-8 text file; None: the built-in corpus (Python's docs)
    tokenizer: str = "char"          # "char" (one id per character) or "bpe" (trained on the data)
    vocab_size: int = 512            # BPE only: the vocabulary to learn
    val_fraction: float = 0.1        # the last part of the text, held out for the validation loss
    # model
    preset: str = "baby"             # a GPTConfig preset; the fields below override it
    n_layer: int | None = None
    n_head: int | None = None
    n_embd: int | None = None
    block_size: int | None = None    # context length, in tokens
    dropout: float | None = None
    dtype: str = "float32"
    # optimisation: AdamW, linear warmup then cosine decay from lr to min_lr at max_iters
    max_iters: int = 1500
    batch_size: int = 16
    lr: float = 2e-3
    min_lr: float = 2e-4
    warmup: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0           # max global gradient norm; 0: no clipping
    # evaluation, checkpoints, output
    eval_interval: int = 250         # steps between validation losses (and at the last step)
    eval_iters: int = 20             # validation batches per validation loss (the same each time)
    checkpoint_interval: int = 250   # steps between checkpoints (and at the last step, and Ctrl-C)
    seed: int = 0                    # model init, batch sampling and dropout
    out: str = "out"                 # folder of ckpt.safetensors and log.jsonl
    backend: str | None = None       # "numpy" | "numba"; None: the default (NPGPT_BACKEND or fastest)
    sample_tokens: int = 300         # tokens sampled and printed at the end (0: none)

    def __post_init__(self):
        from .settings import Checker
        check = Checker(self)
        fail = check.fail
        check.integers("vocab_size", "max_iters", "batch_size", "eval_iters")
        check.integers("n_layer", "n_head", "n_embd", "block_size", unset="the preset's")
        check.integers("warmup", "eval_interval", "checkpoint_interval", "seed", "sample_tokens", low=0)
        check.numbers("lr", "min_lr", "weight_decay", "grad_clip")
        if not self.lr > 0:
            fail("lr", "a number > 0")
        if self.min_lr > self.lr:
            fail("min_lr", f"a number <= lr={self.lr}")
        check.fractions("beta1", "beta2")
        check.fractions("val_fraction", zero=False)
        check.fractions("dropout", unset="the preset's")
        if self.warmup > self.max_iters:
            fail("warmup", f"at most max-iters={self.max_iters} (lower --warmup with --max-iters)")
        if self.tokenizer == "bpe" and self.vocab_size < 257:
            fail("vocab_size", "at least 257 for --tokenizer bpe (256 bytes + <|endoftext|>)")
        check.choice("tokenizer", ("char", "bpe"))
        check.choice("dtype", ("float32", "float64"))
        check.choice("backend", (None, "numpy", "numba", "cuda"))
        from .config import GPT_PRESETS
        check.choice("preset", sorted(GPT_PRESETS))

    def model_config(self, vocab_size: int):
        """The GPTConfig of the run: the preset, the fields set here, the tokenizer's vocab."""
        from .config import GPTConfig

        overrides = {k: getattr(self, k) for k in ("n_layer", "n_head", "n_embd", "block_size", "dropout")
                     if getattr(self, k) is not None}
        return GPTConfig.preset(self.preset, vocab_size=vocab_size, dtype=self.dtype, **overrides)


# Settings a resumed run may change; the rest must match the checkpoint (the same trajectory).
RESUMABLE_CHANGES = ("max_iters", "eval_interval", "checkpoint_interval", "out", "backend",
                     "sample_tokens")


def resume_config(out, overrides: dict | None = None) -> TrainConfig:
    """The TrainConfig saved in out/ckpt.safetensors, with overrides of RESUMABLE_CHANGES;
    an override of another setting that differs from the saved one is an error."""
    return resumed_settings(out, TrainConfig, "train", RESUMABLE_CHANGES, overrides, "npgpt train")


def resumed_settings(out, cls, section: str, resumable: tuple, overrides: dict | None, command: str):
    """The settings dataclass `cls` that `command` saved under meta[section] of out/ckpt.safetensors,
    with the overrides of the fields in `resumable` applied (None: not given). An override of any
    other field that differs from the saved value is an error naming it: a resumed run follows the
    saved trajectory. Shared by `npgpt train`, `npgpt seq2seq train` and `npgpt finetune`."""
    path = Path(out) / CHECKPOINT_NAME
    if not path.exists():
        raise FileNotFoundError(f"--resume: there is no checkpoint {str(path)!r} to resume "
                                f"(run `{command}` without --resume first, or pass the run's --out)")
    saved = ckpt_io.load(path).meta.get(section)
    if not isinstance(saved, dict):
        raise ValueError(f"checkpoint {str(path)!r} was not saved by `{command}`: it has no "
                         f"settings to resume")
    saved = cls(**{**saved, "out": str(out)})
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    clash = [f"{k.replace('_', '-')} {v!r} (the run has {getattr(saved, k)!r})"
             for k, v in overrides.items()
             if k not in resumable and dataclasses.replace(saved, **{k: v}) != saved]
    if clash:
        raise ValueError("--resume continues the saved run with its own settings, but these differ: "
                         + ", ".join(clash) + f"; only {', '.join(resumable)} may change")
    return dataclasses.replace(saved, **{k: v for k, v in overrides.items() if k in resumable})


def run_command(prog: str, flags: dict, resume: bool, config_cls, resume_config: Callable,
                run: Callable) -> int:
    """The body of `npgpt train`, `npgpt seq2seq train` and `npgpt finetune`: the settings from
    the flags given (with resume, from the run in --out, see resumed_settings), then
    run(cfg, resume=..., progress=None) -> an object with .interrupted. The exit status: 0 done,
    130 stopped by Ctrl-C (a checkpoint saved), 1 diverged, 2 bad input (one line on stderr)."""
    try:
        if resume:
            cfg = resume_config(flags.get("out", config_cls.out), flags)
        else:
            cfg = config_cls(**flags)
        result = run(cfg, resume=resume, progress=None)
    except TrainingDiverged as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 1
    except (ValueError, TypeError, OSError, RuntimeError, KeyError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e   # no repr quotes
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2
    return 130 if result.interrupted else 0


def _load_corpus(cfg: TrainConfig) -> tuple[str, str]:
    from . import data

    if cfg.data is None:
        return data.default_corpus(), "the built-in corpus"
    return data.load_text(cfg.data), repr(cfg.data)


def build_tokenizer(cfg: TrainConfig, text: str):
    from .tokenizers import BPETokenizer, CharTokenizer

    if cfg.tokenizer == "char":
        return CharTokenizer.from_text(text)
    return BPETokenizer.train(text, cfg.vocab_size)


def lm_batch_fn(ids: np.ndarray, batch_size: int, block_size: int, name: str = "train"):
    """rng -> (x, y): random windows of ids (npgpt.data.get_batch)."""
    from .data import get_batch

    return lambda rng: get_batch(ids, batch_size, block_size, rng, name)


def lm_eval_fn(ids: np.ndarray, batch_size: int, block_size: int, eval_iters: int, seed: int):
    """model -> mean loss over eval_iters batches of ids, the same batches at every call
    (drawn from a Generator seeded with seed each time)."""
    from .data import get_batch

    def evaluate(model) -> float:
        rng = np.random.default_rng(seed)
        return float(np.mean([model.forward(*get_batch(ids, batch_size, block_size, rng, "val"))[1]
                              for _ in range(eval_iters)]))
    return evaluate


def train(cfg: TrainConfig, resume: bool = False, progress: bool | None = True,
          on_step: Callable | None = None, print_fn: Callable = print) -> TrainResult:
    """Pre-train a GPT as cfg says; with resume, continue the checkpoint in cfg.out.

    Prints what it does (corpus, model size, final losses and a sample) through print_fn.
    """
    from . import data, kernels
    from .models.gpt import GPT
    from .optim import AdamW, WarmupCosine
    from .tokenizers import tokenizer_from_dict

    if cfg.backend is not None:
        kernels.use_backend(cfg.backend)
    text, source = _load_corpus(cfg)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    out = Path(cfg.out)
    saved = ckpt_io.load(out / CHECKPOINT_NAME) if resume else None
    if saved is not None:
        if saved.meta.get("data", {}).get("sha256") != digest:
            raise ValueError(f"--resume: {source} is not the text the run in {str(out)!r} was "
                             f"trained on (its SHA-256 differs): resume with the same --data")
        tok = tokenizer_from_dict(saved.meta["tokenizer"])
    else:
        if out.exists() and (out / CHECKPOINT_NAME).exists():
            raise FileExistsError(f"{str(out / CHECKPOINT_NAME)!r} exists: pass --resume to continue "
                                  f"that run, or another --out (nothing was overwritten)")
        tok = build_tokenizer(cfg, text)
    mcfg = cfg.model_config(tok.vocab_size)
    ids = np.asarray(tok.encode(text), dtype=np.int64)
    train_ids, val_ids = data.split(ids, cfg.val_fraction)
    for name, part in (("train", train_ids), ("validation", val_ids)):
        if len(part) < mcfg.block_size + 1:
            raise ValueError(f"{source} is too short: {len(ids):,} tokens give {len(part):,} "
                             f"{name} tokens, expected at least block-size + 1 = {mcfg.block_size + 1} "
                             f"(use a longer text, a smaller --block-size or another --val-fraction)")
    model = GPT(mcfg, seed=cfg.seed)
    opt = AdamW(model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                weight_decay=cfg.weight_decay)
    meta = {"train": dataclasses.asdict(cfg), "tokenizer": tok.to_dict(),
            "data": {"source": source, "sha256": digest, "tokens": int(len(ids))},
            "backend": kernels.current_backend()}
    trainer = Trainer(model, opt, lm_batch_fn(train_ids, cfg.batch_size, mcfg.block_size),
                      eval_fn=lm_eval_fn(val_ids, cfg.batch_size, mcfg.block_size, cfg.eval_iters,
                                         seed=cfg.seed + 1),
                      schedule=WarmupCosine(cfg.lr, cfg.warmup, cfg.max_iters, cfg.min_lr),
                      max_iters=cfg.max_iters, grad_clip=cfg.grad_clip,
                      eval_interval=cfg.eval_interval, checkpoint_interval=cfg.checkpoint_interval,
                      out_dir=out, meta=meta, seed=cfg.seed, progress=progress, on_step=on_step)
    if saved is not None:
        trainer.resume(saved)
        print_fn(f"resuming {str(out)!r} at step {trainer.step} of {cfg.max_iters}"
                 + (": nothing left to do (raise --max-iters to train on)"
                    if trainer.step >= cfg.max_iters else ""))
        if saved.meta.get("backend") != kernels.current_backend():
            print_fn(f"note: the run so far used backend {saved.meta.get('backend')!r}, this session "
                     f"{kernels.current_backend()!r}: rounding differs, so the losses will not repeat "
                     f"bit for bit")
    print_fn(f"data: {source}, {len(text):,} characters -> {len(ids):,} {cfg.tokenizer} tokens "
             f"(vocabulary {tok.vocab_size}); {len(train_ids):,} train / {len(val_ids):,} validation")
    print_fn(f"model: GPT {mcfg.n_layer} layers, {mcfg.n_head} heads, {mcfg.n_embd} wide, context "
             f"{mcfg.block_size}, {model.num_parameters():,} parameters, {mcfg.dtype}, "
             f"backend {kernels.current_backend()}")
    result = trainer.run()
    _report(cfg, result, trainer, model, tok, print_fn)
    return result


def _report(cfg, result, trainer, model, tok, print_fn) -> None:
    tail = result.losses[-50:]
    val = result.val_losses.get(result.step)
    if result.interrupted:
        print_fn(f"interrupted at step {result.step}: checkpoint saved to {result.checkpoint}; "
                 f"continue with: npgpt train --resume --out {cfg.out}")
        return
    if tail:
        print_fn(f"done: step {result.step}, train loss {np.mean(tail):.4f} (mean of the last "
                 f"{len(tail)} steps)" + (f", val loss {val:.4f}" if val is not None else "")
                 + f", {result.elapsed:.1f} s of training; checkpoint {result.checkpoint}")
    if cfg.sample_tokens and result.step > 0:
        from .sample import default_prompt, generate_text

        prompt = default_prompt(tok)
        print_fn(f"\nsample ({cfg.sample_tokens} tokens, temperature 0.8, top-k 40):")
        generate_text(model, tok, prompt, max_new_tokens=cfg.sample_tokens, temperature=0.8,
                      top_k=40, seed=cfg.seed, stream=lambda s: print_fn(s, end="", flush=True))
        print_fn("")
