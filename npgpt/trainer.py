"""The training loop of any npgpt model: Trainer, and the small pieces it is made of.

The loop, for any model that follows npgpt's protocol (forward -> loss, backward adds into
.grad), one iteration per step s = 1, 2, ...:

    batch = batch_fn(rng)                       the batch sampler's Generator, saved in checkpoints
    loss  = loss_fn(model, batch)               default: model.forward(*batch)[1]
    stop if loss is not finite                  (nothing updated; the last checkpoint is kept)
    backward_fn(model)                          default: model.backward(), into zero gradients
    parallel.sync_gradients(optimizer, batch)   data parallel only (npgpt.dist): sum the ranks' shares
    norm  = grad_norm(optimizer)                stop if the norm is not finite
    optimizer.lr = schedule(s)
    optimizer.step(grad_scale=clip_coef(norm, clip), zero_grad=True)
                                                the clip and the next step's zero_grad, folded
                                                into the update (npgpt.optim: p.grad is 0 after)
    log {step, loss, lr, grad_norm, tokens_per_s, elapsed}   one JSON line per step + progress bar
    every eval_interval steps and at the end:   val_loss = eval_fn(model), in eval mode
    every checkpoint_interval steps and at the end: an atomic checkpoint

Ctrl-C or SIGTERM lets the current step finish, saves a checkpoint and returns (a second one
stops at once, keeping the last checkpoint). `Trainer.resume(checkpoint)` restores the model, the
optimizer, the step, the sampler's and every dropout generator's state, so the resumed run's
losses equal the uninterrupted run's bit for bit (same backend, same machine).

Any model trains on it: build the model and the optimizer, then

    trainer = Trainer(model, optimizer, batch_fn=lambda rng: next_batch(rng),   # a tuple of arrays
                      loss_fn=lambda m, b: m.forward(*b)[1],                   # leaves m ready for backward()
                      eval_fn=lambda m: my_val_loss(m), schedule=npgpt.optim.Noam(128, 4000),
                      max_iters=5000, out_dir="runs/x", meta={"tokenizer": vocab.to_dict()})
    result = trainer.run()

RunLog (progress bar + JSONL), check_finite and graceful_interrupt are usable on their own.
The runs behind the commands (npgpt.runs: pre-training, seq2seq, fine-tuning) are Trainers
with their data, model and settings around them.

Why one file: the loop and the small pieces only it uses (the log and its bar, the signals that
stop a run, the finite checks, the seams for other processes and for training health) are read
together; each is a few dozen lines that make sense only beside the step it serves.
"""

from __future__ import annotations

import contextlib
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
from tqdm.auto import tqdm

from . import checkpoint as ckpt_io
from .files import write_atomic
from .optim import clip_coef, grad_norm

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


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)   # Ctrl-C; kill, timeout, a batch scheduler, mpiexec


@contextlib.contextmanager
def graceful_interrupt():
    """Within the block, Ctrl-C (SIGINT) or SIGTERM (kill, timeout, a batch scheduler ending a
    job) sets flag["requested"] and flag["signal"] (its number) instead of stopping the process,
    so a loop can finish its step and save; a second signal raises KeyboardInterrupt at once.
    Outside the main thread signals cannot be caught, and they act as usual."""
    flag = {"requested": False, "signal": None}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag["requested"]:
            raise KeyboardInterrupt
        flag["requested"], flag["signal"] = True, signum

    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class RunLog:
    """A run's progress bar (tqdm: step, loss, tokens/s, ETA) and its JSONL log.

    Each `record(dict)` appends one JSON line to path (flushed, so a crash loses nothing) and
    advances the bar. `start_step` > 0 (a resumed run) first drops the records of later steps,
    which the resumed run is about to compute again. path None: no file; progress False: no bar.
    """

    def __init__(self, path, total: int, start_step: int = 0, progress: bool | None = True):
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
                if _whole(line) and json.loads(line).get("step", 0) <= last_step]
        write_atomic(self.path, "".join(line + "\n" for line in kept).encode())

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


def _whole(line: str) -> bool:
    """A complete JSON record (not the line a crash or a full disk cut short)."""
    try:
        return isinstance(json.loads(line), dict)
    except json.JSONDecodeError:
        return False


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
    interrupted: bool = False    # Ctrl-C or SIGTERM: stopped early, checkpoint saved
    checkpoint: Path | None = None
    signal: int | None = None    # the signal that stopped it (signal.SIGINT, signal.SIGTERM)


def _default_loss(model, batch):
    return model.forward(*batch)[1]


def _default_backward(model) -> None:
    model.backward()


def _default_tokens(batch) -> int:
    return int(np.asarray(batch[0]).size)


class StepWatch:
    """What an around_step context yields for one step: `record`, entries added to the step's
    line of the log, and before_update(optimizer, grad_scale), called once the step's gradients
    are final (summed over the processes) and before the update, which uses grad_scale * p.grad
    and then zeroes p.grad. This one watches nothing."""

    def __init__(self):
        self.record: dict = {}

    def before_update(self, optimizer, grad_scale: float) -> None:
        pass


class Trainer:
    """The training loop of any npgpt model (see the module docstring for the seam).

    model:        has forward/backward/zero_grad/train/eval (and .config, for checkpoints)
    optimizer:    npgpt.optim.AdamW or SGD over the model's parameters
    batch_fn:     rng -> batch (a tuple); draw all randomness from rng so runs can resume
    loss_fn:      (model, batch) -> float loss; afterwards backward_fn(model) gives its gradient
    backward_fn:  model -> None: the chain rule of the last loss (default: model.backward();
                  fine-tuning passes the frozen-block skip here, explicitly)
    eval_fn:      model -> float (validation loss), called in eval mode; None: no evaluation
    schedule:     step (1-based) -> learning rate; None keeps the optimizer's lr
    grad_clip:    max global gradient norm; 0 measures the norm without clipping
    out_dir:      where the checkpoint (ckpt.safetensors) and the log (log.jsonl) go; None: neither
    meta:         JSON-serialisable entries stored in every checkpoint (tokenizer, settings, ...)
    tokens_fn:    batch -> number of tokens, for tokens/s (default: the first array's size)
    seed:         seeds the batch sampler's Generator (the model seeds its own dropout)
    progress:     True: a progress bar; False: none; None: a bar only on a terminal
    on_step:      on_step(trainer, record) after each step's record (tests, custom logging)
    around_step:  around_step(trainer, step) -> a context manager the step runs in, yielding a
                  StepWatch: its before_update(optimizer, grad_scale) sees the step's final
                  gradients, and its record is added to the step's (npgpt.trace.health:
                  --health-every)
    parallel:     None (one process), or a data-parallel group (npgpt.dist.DataParallel) whose
                  sync_gradients(optimizer, batch) runs between the backward and the clip;
                  only its writer (rank 0) writes the log, the bar and the checkpoints, and
                  any(flag) makes a Ctrl-C stop every process at the same step
    """

    def __init__(self, model, optimizer, batch_fn: Callable, *, max_iters: int,
                 loss_fn: Callable = _default_loss, backward_fn: Callable = _default_backward,
                 eval_fn: Callable | None = None,
                 schedule: Callable | None = None, grad_clip: float = 1.0,
                 eval_interval: int = 0, checkpoint_interval: int = 0, out_dir=None,
                 meta: dict | None = None, seed: int = 0, progress: bool | None = True,
                 tokens_fn: Callable = _default_tokens, on_step: Callable | None = None,
                 around_step: Callable | None = None, parallel=None):
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
        self.backward_fn = backward_fn
        self.schedule, self.grad_clip = schedule, float(grad_clip)
        self.max_iters = max_iters
        self.eval_interval, self.checkpoint_interval = eval_interval, checkpoint_interval
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.meta = dict(meta or {})
        self.progress = progress
        self.on_step = on_step           # called as on_step(trainer, record) after each step
        self.around_step = around_step   # around_step(trainer, step): the context of each step
        self.parallel = parallel
        self.writer = parallel is None or parallel.writer     # writes the log, bar, checkpoints
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
        if not self.writer:     # rank 0 writes; a sharded optimizer's state_dict is a collective
            self.optimizer.state_dict()
            return self.checkpoint_path
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
        log = RunLog(log_path if self.writer else None, self.max_iters, self.step,
                     self.progress if self.writer else False)
        self._clock = (time.perf_counter(), self.elapsed)    # elapsed = earlier sessions + this one
        self.model.train()
        self.optimizer.zero_grad()       # once: from then on each step(zero_grad=True) zeroes them
        try:
            with graceful_interrupt() as ctrl_c:
                losses = self._loop(log, ctrl_c)
                interrupted = self._stop_requested(ctrl_c)
            if interrupted and self.out_dir is not None:
                self._tick()
                self.save()
        except TrainingDiverged as e:
            log.note({"step": e.step, "error": str(e)})
            raise
        finally:
            log.close()
        return TrainResult(self.step, losses, dict(self.val_losses), self.elapsed, interrupted,
                           self.checkpoint_path if self.out_dir is not None and self.step > 0 else None,
                           ctrl_c["signal"])

    def _loop(self, log: RunLog, ctrl_c: dict) -> list:
        losses, since_eval = [], []
        while self.step < self.max_iters and not self._stop_requested(ctrl_c):
            with self._around_step() as watch:
                rec = self._train_step(watch)
            rec.update(watch.record)
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

    def _around_step(self):
        """The context of the coming step: around_step's, or one that watches nothing."""
        if self.around_step is None:
            return contextlib.nullcontext(StepWatch())
        return self.around_step(self, self.step + 1)

    def _stop_requested(self, ctrl_c: dict) -> bool:
        """Whether to stop before the next step. With several processes, whether any of them was
        signalled: every process gets the same answer, so all stop at the same step. The answer
        is not written back into the flag: a signal whose handler runs while this process waits
        in the collective (Python runs it when the call returns) would be overwritten by a
        stale False and lost, and with every process losing its own the run would never stop."""
        if self.parallel is None:
            return ctrl_c["requested"]
        return self.parallel.any(ctrl_c["requested"])

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

    def _train_step(self, watch: StepWatch) -> dict:
        step = self.step + 1
        t0 = time.perf_counter()
        batch = self.batch_fn(self.rng)
        loss = float(self.loss_fn(self.model, batch))
        try:
            check_finite(step, loss=loss)
            self.backward_fn(self.model)            # into zeros: run()'s zero_grad, then step's
            if self.parallel is not None:
                self.parallel.sync_gradients(self.optimizer, batch)
            norm = grad_norm(self.optimizer)
            check_finite(step, gradient_norm=norm)
        except TrainingDiverged as e:
            raise TrainingDiverged(f"{e}: training stopped before this step changed any "
                                   f"parameter; {self._kept()}", e.step) from None
        if self.schedule is not None:
            self.optimizer.lr = self.schedule(step)
        scale = clip_coef(norm, self.grad_clip) if self.grad_clip else 1.0     # grad_clip 0: none
        watch.before_update(self.optimizer, scale)
        # the clip inside the update, which also zeroes p.grad for the next step
        self.optimizer.step(grad_scale=scale, zero_grad=True)
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
