"""The skeleton every run stands on (npgpt train, npgpt seq2seq train, npgpt finetune).

A run, whatever it trains, goes through the same steps; this module writes each of them once:

    with kernels.backend(cfg.backend or kernels.current_backend()), \
            processes(cfg, SPEC) as group:         # under mpiexec -n P: the data-parallel group
        session = Session(SPEC, cfg, resume, group)   # --out checked before any work; on
                                                  # --resume, the checkpoint there is read
        session.use_data(source, sha256)          # on --resume: the same data, or an error;
                                                  # under mpiexec: the same on every process
        ... the run's own data and model ...
        opt = session.adamw(model)                # AdamW: cfg.lr, (cfg.beta1, cfg.beta2), ...
        trainer = session.trainer(model, opt, batch_fn, eval_fn=..., schedule=...,
                                  meta={...})     # + the settings, the data, the backend
        session.resume(trainer, print_fn)         # on --resume: continue where it stopped
        result = trainer.run()
        session.report(result, print_fn)          # interrupted (how to continue) or done

and resume_settings reads the settings a run saved, for `--resume`: only the settings in
spec.resumable may differ from the saved ones, so a resumed run follows the saved trajectory.
The checkpoint holds the settings as the run used them (settings_as_run): file paths made
absolute, so `--resume` works from any folder, and a default that depends on other settings
(the warmup) pinned, so a resumed run with another --max-iters keeps its warmup.

Under mpiexec -n P (P > 1; docs/distributed.md) the same code runs on every process: the
Session refuses to start unless all have the same settings and data, builds the sharded
optimizer for --shard-optimizer, hands each process its share of every batch (units: what the
loss is a mean over, so the shares' weighted losses add up to the global batch's) and makes the
Trainer data-parallel. Rank 0 alone writes files and prints; an error anywhere ends every process.
The processes on one machine share its cores: unless the user chose (NUMBA_NUM_THREADS, ...), each
gets cores // (processes on the machine) threads for Numba and numpy's BLAS (shared_cores).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numba
import numpy as np

from .. import checkpoint as ckpt_io
from .. import dist, kernels
from ..kernels.cpu.blas import blas_threads
from ..optim import AdamW
from ..sample import default_prompt, generate_text
from ..trainer import CHECKPOINT_NAME, Trainer, TrainResult
from ..settings import flag_name


@dataclass(frozen=True)
class RunSpec:
    """What a run says about itself, for the skeleton's checks and messages."""

    command: str            # "npgpt train": how messages name the command
    section: str            # the checkpoint's meta key of the settings: "train"
    resumable: tuple        # the settings a resumed run may change
    outputs: tuple          # what --out holds: named when --out is not a folder
    kept: tuple = (CHECKPOINT_NAME,)   # the files of an earlier run that a new run never overwrites
    paths: tuple = ()       # the settings that name files: saved absolute (settings_as_run)
    hashed: tuple = ()      # those whose content the run checks on --resume (use_data): a resumed
                            # run may name them by another path, the same content is what counts


def settings_as_run(cfg, spec: RunSpec):
    """cfg as the checkpoint records it: the paths of spec.paths absolute (None and 'none' stay),
    and warmup pinned to the run's warmup_steps (where cfg has one)."""
    changes = {name: os.path.abspath(getattr(cfg, name)) for name in spec.paths
               if getattr(cfg, name) not in (None, "none")}
    if hasattr(cfg, "warmup_steps"):
        changes["warmup"] = cfg.warmup_steps
    return dataclasses.replace(cfg, **changes)


def check_out_folder(out, spec: RunSpec) -> Path:
    """--out as a Path; an empty one (which Path reads as the current folder), a file there or a
    file in its way is one clear error, before any work."""
    expected = f"expected a folder (for {', '.join(spec.outputs)}), new or of an earlier run"
    if str(out) == "":
        raise ValueError(f"--out {str(out)!r} is empty: {expected} (--out . for the current folder)")
    out = Path(out)
    blocker = next((p for p in (out, *out.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        what = (" is a file" if blocker == out else f": its parent {str(blocker)!r} is a file"
                if blocker == out.parent else f": {str(blocker)!r}, on its path, is a file")
        raise NotADirectoryError(f"--out {str(out)!r}{what}: {expected}; pass another --out")
    return out


def resume_settings(out, cls, spec: RunSpec, overrides: dict | None = None):
    """The settings dataclass `cls` that spec.command saved under meta[spec.section] of
    out/ckpt.safetensors, with the overrides of the fields in spec.resumable applied (None: not
    given). An override of any other field that differs from the saved value is an error naming
    it: a resumed run follows the saved trajectory."""
    path = check_out_folder(out, spec) / CHECKPOINT_NAME
    if not path.exists():
        raise FileNotFoundError(f"--resume: there is no checkpoint {str(path)!r} to resume "
                                f"(run `{spec.command}` without --resume first, or pass the run's --out)")
    saved = ckpt_io.load(path).meta.get(spec.section)
    if not isinstance(saved, dict):
        raise ValueError(f"checkpoint {str(path)!r} was not saved by `{spec.command}`: it has no "
                         f"settings to resume")
    # JSON has no tuples: a tuple setting comes back as a list
    saved = cls(**{**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()},
                   "out": str(out)})
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    clash = [f"{flag_name(k)[2:]} {v!r} (the run has {getattr(saved, k)!r})"
             for k, v in overrides.items()
             if k not in spec.resumable and not _same_setting(spec, k, v, getattr(saved, k))]
    if clash:
        raise ValueError("--resume continues the saved run with its own settings, but these differ: "
                         + ", ".join(clash) + f"; only {', '.join(spec.resumable)} may change")
    moved = {k: os.path.abspath(v) for k, v in overrides.items() if k in spec.hashed}
    return dataclasses.replace(saved, **moved,
                               **{k: v for k, v in overrides.items() if k in spec.resumable})


def _same_setting(spec: RunSpec, name: str, given, saved) -> bool:
    """A setting given again on --resume that the saved run shares: equal; a path to the same
    file (however written, from whichever folder); or, for spec.hashed, any path (the run checks
    the content's SHA-256)."""
    if given == saved:
        return True
    if name in spec.paths and isinstance(given, str) and isinstance(saved, str):
        return name in spec.hashed or os.path.abspath(given) == os.path.abspath(saved)
    return False


@contextlib.contextmanager
def processes(cfg, spec: RunSpec):
    """The processes a run trains on: None when it is the only one (no MPI launch: nothing
    changes, mpi4py is not imported; --shard-optimizer and --allreduce ring, which then do
    nothing, are noted on stderr), else the DataParallel group of the launch (cfg.allreduce).
    Inside, an error on any process ends every process (npgpt.dist.guard), the processes other
    than rank 0 print nothing (their stdout goes to os.devnull; stderr stays), and the processes
    on one machine share its cores (shared_cores)."""
    if not dist.launched():
        unused = [flag for flag, given in (("--shard-optimizer", cfg.shard_optimizer),
                                           (f"--allreduce {cfg.allreduce}", cfg.allreduce != "mpi")) if given]
        if unused:
            print(f"{spec.command}: note: {' and '.join(unused)} appl{'ies' if len(unused) == 1 else 'y'} "
                  f"only under mpiexec -n P (P > 1): this run is one process", file=sys.stderr)
        yield None
        return
    with dist.guard(spec.command) as comm, contextlib.ExitStack() as stack:
        group = dist.DataParallel(comm, cfg.allreduce)
        stack.enter_context(shared_cores(comm))
        if not group.writer:
            stack.enter_context(contextlib.redirect_stdout(stack.enter_context(open(os.devnull, "w"))))
        yield group


# The variables that choose the threads of Numba's kernels and of numpy's BLAS: a user who sets
# any of them has chosen, and shared_cores leaves the threads alone.
THREAD_VARIABLES = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@contextlib.contextmanager
def shared_cores(comm):
    """Inside: max(1, cores // processes on this machine) threads for Numba and for numpy's BLAS
    in this process, as it was before on leaving. Each library starts as many threads as the
    machine has cores, in every process: P processes on one machine would run P times as many
    threads as cores, which take turns and run several times slower than one each. Rank 0
    says so once; a user who set one of THREAD_VARIABLES keeps the threads chosen."""
    if any(os.environ.get(name) for name in THREAD_VARIABLES):
        yield
        return
    cores, local = os.cpu_count() or 1, comm.ranks_on_this_node()
    threads, before = max(1, cores // local), numba.get_num_threads()
    if threads >= before:
        yield
        return
    if comm.rank == 0:
        print(f"note: {local} processes on {cores} cores: {threads} thread{'s' * (threads > 1)} each "
              f"(set NUMBA_NUM_THREADS / OPENBLAS_NUM_THREADS to choose)", file=sys.stderr, flush=True)
    numba.set_num_threads(threads)
    try:
        with blas_threads(threads):
            yield
    finally:
        numba.set_num_threads(before)


class Session:
    """One run of spec's command with settings cfg: its --out folder, the checkpoint it resumes
    (saved, or None) and the pieces every run builds the same way (see the module docstring).
    Made inside the run's backend context; reads, never writes (the Trainer writes).
    group: the data-parallel group (processes()), or None; writer: this process writes files."""

    def __init__(self, spec: RunSpec, cfg, resume: bool, group=None):
        self.spec, self.cfg, self.group = spec, cfg, group
        self.writer = group is None or group.writer
        self.out = check_out_folder(cfg.out, spec)
        self.data: dict = {}
        if resume:
            self.saved = ckpt_io.load(self.out / CHECKPOINT_NAME)
            return
        self.saved = None
        there = [name for name in spec.kept if self.writer and (self.out / name).exists()]
        if there:
            raise FileExistsError(f"--out {str(self.out)!r} already holds {there} of an earlier run: "
                                  f"pass --resume to continue it (in Python: run(cfg, resume=True)), "
                                  f"or another --out (nothing was overwritten)")

    def use_data(self, source: str, sha256: str, **facts) -> None:
        """Record what the run trains on (for the checkpoint's meta); on --resume, data whose
        SHA-256 differs from the saved run's is an error. Under mpiexec: processes whose settings
        or data differ from rank 0's refuse to start, naming the first that differs."""
        if self.group is not None:
            self.group.agree({"settings": dataclasses.asdict(self.cfg), "data (SHA-256)": sha256})
        if self.saved is not None and self.saved.meta.get("data", {}).get("sha256") != sha256:
            raise ValueError(f"--resume: {source} is not the data the run in {str(self.out)!r} was "
                             f"trained on (its SHA-256 differs): resume with the same data")
        self.data = {"source": source, "sha256": sha256, **facts}

    def adamw(self, model, **extra) -> AdamW:
        """AdamW over the model's parameters with the settings' lr, betas (beta1, beta2) and
        weight_decay; extra: more AdamW arguments (eps). Under mpiexec with --shard-optimizer:
        npgpt.dist.ShardedAdamW, the same optimizer with its moments split across the processes."""
        cfg = self.cfg
        args = dict(lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay, **extra)
        if self.group is not None and cfg.shard_optimizer:
            return dist.ShardedAdamW(model.parameters(), self.group.comm, self.group.method, **args)
        return AdamW(model.parameters(), **args)

    def trainer(self, model, optimizer, batch_fn: Callable, *, meta: dict, progress=True,
                on_step: Callable | None = None, units: Callable = dist.rows, **loop) -> Trainer:
        """The run's Trainer: the settings' max_iters, grad_clip, intervals and seed, --out,
        and a checkpoint meta of the settings, the data, the backend and meta; loop: the
        Trainer's run-specific arguments (loss_fn, eval_fn, schedule, tokens_fn). units(batch):
        what the loss is a mean over (rows; seq2seq: real target tokens), for the shares'
        weights under mpiexec, where every process trains on its share of each batch."""
        cfg = self.cfg
        meta = {self.spec.section: dataclasses.asdict(settings_as_run(cfg, self.spec)), "data": self.data,
                "backend": kernels.current_backend(), **meta}
        if self.group is not None:
            if cfg.batch_size < self.group.size:
                raise dist.Refused(f"--batch-size {cfg.batch_size} cannot be shared by {self.group.size} "
                                   f"processes: expected at least one row each (a larger --batch-size, "
                                   f"or fewer processes)")
            loop.update(self.group.wrap(batch_fn, units, loop.pop("loss_fn", None), loop.pop("tokens_fn", None)))
            batch_fn = loop.pop("batch_fn")
        return Trainer(model, optimizer, batch_fn, max_iters=cfg.max_iters, grad_clip=cfg.grad_clip,
                       eval_interval=cfg.eval_interval, checkpoint_interval=cfg.checkpoint_interval,
                       out_dir=self.out, meta=meta, seed=cfg.seed, progress=progress,
                       on_step=on_step, parallel=self.group, **loop)

    def resume(self, trainer: Trainer, print_fn: Callable = print) -> bool:
        """On --resume: restore the trainer from the saved checkpoint and say where it stands.
        Under mpiexec: first say how the processes share the work."""
        if self.group is not None:
            g, cfg = self.group, self.cfg
            print_fn(f"processes: {g.size} (mpiexec), each with {cfg.batch_size // g.size}"
                     f"{'' if cfg.batch_size % g.size == 0 else ' or ' + str(cfg.batch_size // g.size + 1)} "
                     f"of the {cfg.batch_size} rows of every batch; gradients summed by "
                     f"{'MPI_Allreduce' if g.method == 'mpi' else 'the ring all-reduce'}"
                     + ("; AdamW's moments sharded (ZeRO-1)" if cfg.shard_optimizer else ""))
        if self.saved is None:
            return False
        trainer.resume(self.saved)
        left = "" if trainer.step < trainer.max_iters else ": nothing left to do (raise --max-iters to train on)"
        print_fn(f"resuming {str(self.out)!r} at step {trainer.step} of {trainer.max_iters}{left}")
        planned = self.saved.meta.get(self.spec.section, {}).get("max_iters")
        if planned != trainer.max_iters and trainer.schedule is not None and not left:
            # the schedule follows max_iters: another length reshapes it from this step on
            then, nxt = trainer.optimizer.lr, trainer.schedule(trainer.step + 1)
            print_fn(f"note: --max-iters {trainer.max_iters} (the run had {planned}) reshapes the "
                     f"learning-rate schedule: the learning rate goes from {then:.3g} at step "
                     f"{trainer.step} to {nxt:.3g} at step {trainer.step + 1}")
        before, now = self.saved.meta.get("backend"), kernels.current_backend()
        if before != now:
            print_fn(f"note: the run so far used backend {before!r}, this session {now!r}: rounding "
                     f"differs, so the losses will not repeat bit for bit")
        return True

    def report_interrupted(self, result: TrainResult, print_fn: Callable = print) -> bool:
        """A run stopped by Ctrl-C or SIGTERM: say so, where its checkpoint is and how to continue."""
        if result.interrupted:
            by = f" by {signal.Signals(result.signal).name}" if result.signal else ""
            print_fn(f"interrupted{by} at step {result.step}: checkpoint saved to {result.checkpoint}; "
                     f"continue with: {self.spec.command} --resume --out {self.cfg.out}")
        return result.interrupted

    def report(self, result: TrainResult, print_fn: Callable = print) -> None:
        """The end of a run: interrupted (how to continue), or its final losses and checkpoint."""
        if self.report_interrupted(result, print_fn) or not result.losses:
            return
        tail = result.losses[-50:]
        val = result.val_losses.get(result.step)
        print_fn(f"done: step {result.step}, train loss {np.mean(tail):.4f} (mean of the last "
                 f"{len(tail)} steps)" + (f", val loss {val:.4f}" if val is not None else "")
                 + f", {result.elapsed:.1f} s of training; checkpoint {result.checkpoint}")


def print_sample(model, tokenizer, tokens: int, seed: int, print_fn: Callable = print) -> None:
    """The end of a language model's run: `tokens` tokens sampled from the default prompt
    (temperature 0.8, top-k 40), printed as they come."""
    print_fn(f"\nsample ({tokens} tokens, temperature 0.8, top-k 40):")
    generate_text(model, tokenizer, default_prompt(tokenizer), max_new_tokens=tokens, temperature=0.8,
                  top_k=40, seed=seed, stream=lambda s: print_fn(s, end="", flush=True))
    print_fn("")
