"""The runs behind `npgpt finetune`: continued pre-training of a language model, or a classifier,
from an npgpt checkpoint or a local GPT-2 folder (or from random weights), on npgpt's Trainer
(progress bar, JSONL log, atomic checkpoints, exact resume, the NaN guard).

    result = run(FinetuneConfig(init="out", task="classify", lora_rank=8))
    result = run(resume_config("out/finetune", {"max_iters": 600}), resume=True)   # continue it

A run, in order:

    1. the data and the start (npgpt.finetune.init.load_init): the text is encoded with the start's tokenizer,
       and a character that tokenizer does not know is an error naming where it is
    2. the model: the GPT (task "lm") or GPTClassifier(gpt) (task "classify"); add_lora; freeze /
       freeze_blocks; the trainable-parameter count is printed
    3. AdamW over the trainable parameters, linear warmup then cosine decay, the Trainer
       (npgpt.runs.skeleton: the same --out checks, resume and report as every run)
    4. the held-out evaluation (printed and written), the adapters alone (LoRA), the merged
       model (--merge), a sample (language model)

The tasks (what the data is, how it is batched and evaluated) are npgpt.runs.finetune_tasks.
Every input is checked before anything is written, and the start is only read. A run's folder:

    ckpt.safetensors       the Trainer's checkpoint: the whole model (adapters and head
                           included), the optimizer, the settings; --resume continues it
    log.jsonl              one JSON line per step
    metrics.json           the held-out evaluation: validation loss before and after (lm);
                           accuracy, per-class precision / recall / F1, confusion (classify)
    adapters.safetensors   LoRA: the adapters (and the head) alone, written by save_lora
    merged.safetensors     --merge: the adapters folded into the weights, a checkpoint without
                           LoRA (for `npgpt sample --checkpoint`, or another --init)
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .. import checkpoint as ckpt_io
from .. import dist, kernels
from ..config import GPT_PRESETS, GPTConfig
from ..files import write_atomic
from ..finetune import lora_settings, merge_lora, save_lora
from ..finetune.lora import LORA_TARGETS
from ..finetune.init import load_init
from ..models.gpt import GPT
from ..optim import WarmupCosine
from ..sample import vocab_note
from ..tokenizers import CharTokenizer, tokenizer_from_dict
from ..trainer import CHECKPOINT_NAME, LOG_NAME, TrainResult
from .finetune_tasks import assemble, read_task
from ..settings import (ALLREDUCE_HELP, ALLREDUCES, BACKENDS, DTYPES,
                       PARALLEL_SETTINGS, SHARD_HELP, Checker, is_int, setting)
from .skeleton import RunSpec, Session, print_sample, processes, resume_settings

OUTPUTS = {"checkpoint": CHECKPOINT_NAME, "metrics": "metrics.json",
           "adapters": "adapters.safetensors", "merged": "merged.safetensors"}
TASKS = ("lm", "classify")
LONG_CONTEXT = 256      # a start whose context is longer gets a note suggesting --block-size
_START = "the start's"
_SCRATCH = "--init none: "
_WARMUP_SHOWN = "a tenth of --max-iters"


@dataclass(frozen=True)
class FinetuneConfig:
    """Everything `npgpt finetune` takes; each field is the flag of the same name (--lora-rank)."""

    # the start and the task
    init: str = setting("out", "where to start: an npgpt checkpoint (file or run folder), a local "
                               "GPT-2 folder (config.json, model.safetensors, vocab.json, merges.txt), "
                               "or 'none' for random weights", metavar="PATH",
                        shown="out, the folder of `npgpt train`")
    reinit: bool = setting(False, "keep the architecture and tokenizer of --init but start from random "
                                  "weights (the baseline that shows what pre-training buys)")
    task: str = setting("lm", "lm: continue pre-training on --data; classify: a class per text",
                        choices=TASKS)
    data: str | None = setting(None, "lm: a UTF-8 text file; classify: a .jsonl, .csv or .tsv file",
                               metavar="FILE", shown="lm: the built-in corpus; classify: the built-in "
                                                     "task, original sentences vs. their words shuffled")
    test_data: str | None = setting(None, "classify: a held-out file with the same fields", metavar="FILE",
                                    shown="--test-fraction of --data")
    text_field: str = setting("text", "classify: the field (JSONL) or column (CSV) of the text",
                              metavar="NAME")
    label_field: str = setting("label", "classify: the field or column of the label", metavar="NAME")
    val_fraction: float = setting(0.1, "lm: the last part of the text held out for the validation loss")
    test_fraction: float = setting(0.2, "classify: the part of each class held out for the evaluation")
    data_seed: int = setting(0, "classify: seed of the held-out split and of the built-in task")
    # the model: --init none only, except block_size, dropout, dtype
    preset: str | None = setting(None, _SCRATCH + "the model preset; the size flags override it",
                                 choices=tuple(sorted(GPT_PRESETS)), shown="baby")
    n_layer: int | None = setting(None, _SCRATCH + "Transformer blocks", shown="the preset's")
    n_head: int | None = setting(None, _SCRATCH + "attention heads", shown="the preset's")
    n_embd: int | None = setting(None, _SCRATCH + "width of the residual stream", shown="the preset's")
    block_size: int | None = setting(None, "context in tokens, at most the model's", shown="the model's")
    dropout: float | None = setting(None, "dropout probability", shown=_START)
    dtype: str = setting("float32", "the parameters' and activations' dtype", choices=DTYPES)
    aux_lm_weight: float = setting(0.0, "classify: weight of the auxiliary language-model loss (GPT-1: 0.5)")
    # what trains
    lora_rank: int = setting(0, "train rank-r LoRA adapters of the attention and MLP weights instead "
                                "of the weights (0: no LoRA)")
    lora_alpha: float = setting(16.0, "LoRA scale numerator: the update is (alpha / rank) A B")
    lora_dropout: float = setting(0.0, "dropout on the adapters' input")
    lora_targets: tuple = setting(("attn", "mlp"), "the Linears LoRA wraps: attn, mlp, or attn.c_attn, "
                                                   "attn.c_proj, mlp.c_fc, mlp.c_proj", metavar="TARGET")
    freeze: tuple = setting((), "freeze the GPT's parameters whose names start with these prefixes "
                                "(wte, wpe, h.0, h.1.attn, ln_f, ...)", metavar="PREFIX")
    freeze_blocks: tuple | None = setting(None, "freeze the Transformer blocks A .. B-1",
                                          metavar=("A", "B"), nargs=2, item=int, shown="none")
    merge: bool = setting(False, "fold the LoRA adapters into the weights at the end and write "
                                 "merged.safetensors")
    # optimisation: AdamW, linear warmup then cosine decay to min_lr at max_iters
    max_iters: int = setting(300, "optimisation steps")
    batch_size: int = setting(16, "sequences per step")
    lr: float = setting(1e-3, "peak learning rate (AdamW)")
    min_lr: float = setting(1e-4, "learning rate at the end of the cosine decay")
    warmup: int | None = setting(None, "steps of linear warmup", shown=_WARMUP_SHOWN)
    weight_decay: float = setting(0.01, "AdamW weight decay (matrices only)")
    beta1: float = setting(0.9, "AdamW beta1")
    beta2: float = setting(0.99, "AdamW beta2")
    grad_clip: float = setting(1.0, "max global gradient norm (0: no clipping)")
    eval_interval: int = setting(100, "steps between evaluations: lm, the validation loss; classify, "
                                      "the held-out loss")
    eval_iters: int = setting(20, "lm: validation batches per validation loss")
    checkpoint_interval: int = setting(100, "steps between checkpoints")
    seed: int = setting(0, "seed of the head, the adapters, the batches and dropout")
    out: str = setting("out/finetune", "folder of the run: ckpt.safetensors, log.jsonl, metrics.json, "
                                       "adapters, merged model", metavar="DIR")
    backend: str | None = setting(None, "kernel backend", choices=BACKENDS,
                                  shown="NPGPT_BACKEND or the fastest")
    sample_tokens: int = setting(200, "lm: tokens to sample and print at the end (0: none)")
    allreduce: str = setting("mpi", ALLREDUCE_HELP, choices=ALLREDUCES)
    shard_optimizer: bool = setting(False, SHARD_HELP)

    def __post_init__(self):
        check = Checker(self)
        fail = check.fail
        check.integers("max_iters", "batch_size", "eval_iters")
        check.integers("n_layer", "n_head", "n_embd", "block_size", unset=_START)
        check.integers("warmup", low=0, unset=_WARMUP_SHOWN)
        if self.warmup is not None and self.warmup > self.max_iters:     # the same words as train's
            fail("warmup", f"at most max-iters={self.max_iters} (lower --warmup with --max-iters)")
        check.integers("eval_interval", "checkpoint_interval", "seed", "data_seed", "sample_tokens",
                       "lora_rank", low=0)
        check.numbers("lr", "min_lr", "weight_decay", "grad_clip", "aux_lm_weight", "lora_alpha")
        for name in ("lr", "lora_alpha"):
            if not getattr(self, name) > 0:
                fail(name, "a number > 0")
        if self.min_lr > self.lr:
            fail("min_lr", f"a number <= lr={self.lr}")
        check.fractions("beta1", "beta2", "lora_dropout")
        check.fractions("dropout", unset=_START)
        check.fractions("val_fraction", "test_fraction", zero=False)
        check.choices()
        check.flags("reinit", "merge", "shard_optimizer")
        check.names("lora_targets", "freeze")
        known = [*LORA_TARGETS, *(path for paths in LORA_TARGETS.values() for path in paths)]
        if not self.lora_targets or not set(self.lora_targets) <= set(known):
            fail("lora_targets", f"some of {known}")
        if self.freeze_blocks is not None and not (
                isinstance(self.freeze_blocks, tuple) and len(self.freeze_blocks) == 2
                and all(map(is_int, self.freeze_blocks))):
            fail("freeze_blocks", "a tuple of two integers (A, B): blocks A .. B-1")
        self._check_combinations(check)

    def _check_combinations(self, check: Checker) -> None:
        """The settings that only make sense with others."""
        if not isinstance(self.init, str) or not self.init:
            check.fail("init", "a path, or 'none'")
        if self.init != "none":
            given = [n for n in ("preset", "n_layer", "n_head", "n_embd") if getattr(self, n) is not None]
            if given:
                check.fail(given[0], "unset unless --init none: the model of --init has its own size")
        elif self.reinit:
            check.fail("reinit", "unset with --init none (its weights are random already)")
        only = {"lm": ("classify", ("test_data", "aux_lm_weight", "text_field", "label_field",
                                    "test_fraction", "data_seed")),
                "classify": ("lm", ("val_fraction",))}
        other, names = only[self.task]
        for name in names:    # the other task's data settings: an error, not silently ignored
            # (--eval-iters and --sample-tokens, amounts of lm's work, are free to pass along)
            if getattr(self, name) != _DEFAULTS[name]:
                check.fail(name, f"unset for --task {self.task} (it is a setting of --task {other})")
        if self.merge and not self.lora_rank:
            check.fail("merge", "unset without --lora-rank (there are no adapters to merge)")
        for name in ("lora_alpha", "lora_dropout", "lora_targets"):
            if not self.lora_rank and getattr(self, name) != _DEFAULTS[name]:
                check.fail(name, "unset without --lora-rank (it is a setting of the LoRA adapters)")

    @property
    def warmup_steps(self) -> int:
        """The run's warmup: warmup, or a tenth of max_iters when unset."""
        return self.max_iters // 10 if self.warmup is None else self.warmup


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(FinetuneConfig)}


SPEC = RunSpec(command="npgpt finetune", section="finetune",
               # settings a resumed run may change; the rest must match the checkpoint
               resumable=("max_iters", "eval_interval", "checkpoint_interval", "out", "backend",
                          "sample_tokens", "merge", *PARALLEL_SETTINGS),
               outputs=(CHECKPOINT_NAME, LOG_NAME, *list(OUTPUTS.values())[1:]),
               kept=tuple(OUTPUTS.values()), paths=("init", "data", "test_data"),
               hashed=("data", "test_data"))
RESUMABLE_CHANGES = SPEC.resumable


def resume_config(out, overrides: dict | None = None) -> FinetuneConfig:
    """The FinetuneConfig saved in out/ckpt.safetensors, with overrides of RESUMABLE_CHANGES; an
    override of another setting that differs from the saved one is an error."""
    return resume_settings(out, FinetuneConfig, SPEC, overrides)


@dataclass
class FinetuneResult:
    train: TrainResult                           # the Trainer's result (losses, step, ...)
    metrics: dict = field(default_factory=dict)  # what metrics.json holds
    files: dict = field(default_factory=dict)    # {"checkpoint": path, "metrics": ..., ...}

    @property
    def interrupted(self) -> bool:
        """Stopped by Ctrl-C or SIGTERM (a checkpoint saved)."""
        return self.train.interrupted

    @property
    def signal(self) -> int | None:
        """The signal that stopped it, if one did."""
        return self.train.signal


def run(cfg: FinetuneConfig, resume: bool = False, progress: bool | None = True,
        on_step: Callable | None = None, print_fn: Callable = print) -> FinetuneResult:
    """Fine-tune as cfg says; with resume, continue the checkpoint in cfg.out. Runs on
    cfg.backend (the backend in use before is restored afterwards)."""
    with kernels.backend(cfg.backend or kernels.current_backend()), processes(cfg, SPEC) as group:
        if not resume:
            _check_not_init(cfg)
        session = Session(SPEC, cfg, resume, group)
        if group is not None and cfg.task == "classify" and cfg.aux_lm_weight:
            raise dist.Refused(f"--aux-lm-weight {cfg.aux_lm_weight:g} with {group.size} processes: the "
                               f"class loss is a mean over rows and the language-model loss over "
                               f"tokens, so no one weight per process makes their sum the global "
                               f"batch's; train on one process, or with --aux-lm-weight 0")
        task = read_task(cfg)                                   # the raw texts, before a tokenizer
        session.use_data(task.source, task.sha256)
        gpt, tok, source = _start(cfg, session.saved, task)
        block = _block_size(cfg, gpt)
        task.encode(tok, block)
        model = assemble(cfg, gpt, task)
        trainer = session.trainer(
            model, session.adamw(model), task.batch_fn(cfg.batch_size), loss_fn=task.loss_fn,
            backward_fn=task.backward_fn, eval_fn=task.eval_fn(cfg), tokens_fn=task.tokens_fn,
            schedule=WarmupCosine(cfg.lr, cfg.warmup_steps, cfg.max_iters, cfg.min_lr),
            meta={"tokenizer": tok.to_dict(), "gpt_config": gpt.config.to_dict(), "init": source,
                  "lora": lora_settings(gpt), "classes": task.classes},
            progress=progress, on_step=on_step)
        metrics = _describe(cfg, model, gpt, tok, task, source, block, print_fn)
        if session.resume(trainer, print_fn):
            metrics.update(session.saved.meta.get("before", {}))
        else:
            before = task.before(model)
            for name, value in before.items():
                print_fn(f"{name.replace('val_', 'validation ').replace('_', ' ')} fine-tuning: {value:.4f}")
            metrics.update(before)
            trainer.meta["before"] = before
        result = trainer.run()
        if session.report_interrupted(result, print_fn) or not session.writer:   # rank 0 finishes
            return FinetuneResult(result, metrics, {"checkpoint": result.checkpoint})
        return _finish(cfg, session, trainer, task, tok, result, metrics, print_fn)


def _finish(cfg: FinetuneConfig, session: Session, trainer, task, tok, result: TrainResult,
            metrics: dict, print_fn: Callable) -> FinetuneResult:
    """After the last step: the evaluation, the adapters, the merged model, metrics.json, a sample."""
    model, out = trainer.model, session.out
    files = {"checkpoint": result.checkpoint}
    metrics.update(step=result.step, elapsed=result.elapsed, **task.after(model, result, print_fn))
    if cfg.lora_rank:
        files["adapters"] = _save_adapters(model, out, print_fn)
    if cfg.merge:
        files["merged"] = _merge(model, out, trainer.meta, task, metrics, print_fn)
    files["metrics"] = write_atomic(out / OUTPUTS["metrics"], json.dumps(metrics, indent=1) + "\n")
    print_fn(f"metrics: {files['metrics']}; checkpoint: {result.checkpoint}")
    if cfg.task == "lm" and cfg.sample_tokens:
        print_sample(model, tok, cfg.sample_tokens, cfg.seed, print_fn)
    return FinetuneResult(result, metrics, files)


def _check_not_init(cfg: FinetuneConfig) -> None:
    """The start is only read: refuse an --out that is the --init folder."""
    out, init = Path(cfg.out), Path(cfg.init)
    if cfg.init != "none" and init.exists() and out.exists() and out.resolve() == init.resolve():
        raise ValueError(f"--out {str(out)!r} is the --init folder: expected another folder "
                         f"(the start is only read, never written)")


def _describe(cfg: FinetuneConfig, model, gpt, tok, task, source: str, block: int, print_fn) -> dict:
    """Print the start, the model, the data and what trains; the metrics that say so."""
    total, trainable = model.num_parameters(), model.num_parameters(trainable_only=True)
    g = gpt.config
    head = f" + a head of {len(task.classes)} classes" if task.classes else ""
    print_fn(f"start: {source}")
    print_fn(f"model: GPT {g.n_layer} layers, {g.n_head} heads, {g.n_embd} wide, context {block}{head}; "
             f"{type(tok).__name__} (vocabulary {tok.vocab_size}); backend {kernels.current_backend()}")
    if cfg.block_size is None and block > LONG_CONTEXT:
        print_fn(f"note: training on the model's whole context, {block} tokens: on a CPU a shorter "
                 f"one trains many times faster and with far less memory (--block-size 128, say)")
    note = vocab_note(gpt, tok)
    if note and cfg.task == "lm" and cfg.sample_tokens:
        print_fn(note)
    print_fn(f"data: {task.describe()}")
    print_fn(f"trainable: {trainable:,} of {total:,} parameters ({100 * trainable / total:.2f}%): "
             f"{_what_trains(cfg)}")
    return {"task": cfg.task, "init": source, "trainable_parameters": trainable,
            "total_parameters": total, "trainable_percent": 100 * trainable / total}


def _start(cfg: FinetuneConfig, saved, task):
    """(GPT, tokenizer, description) to fine-tune: the checkpoint's structure when resuming (its
    weights are restored later), a random GPT for --init none, else init.load_init."""
    if saved is not None:
        gpt = GPT(GPTConfig.from_dict(saved.meta["gpt_config"]), seed=cfg.seed)
        return gpt, tokenizer_from_dict(saved.meta["tokenizer"]), saved.meta["init"]
    if cfg.init == "none":
        tok = CharTokenizer.from_text(task.alphabet())
        sizes = {k: getattr(cfg, k) for k in ("n_layer", "n_head", "n_embd", "block_size", "dropout")
                 if getattr(cfg, k) is not None}
        mcfg = GPTConfig.preset(cfg.preset or "baby", vocab_size=tok.vocab_size, dtype=cfg.dtype, **sizes)
        return GPT(mcfg, seed=cfg.seed), tok, f"random initialisation (seed {cfg.seed}), preset {cfg.preset or 'baby'}"
    start = load_init(cfg.init, dtype=cfg.dtype, dropout=cfg.dropout, seed=cfg.seed)
    if cfg.reinit:
        return (GPT(start.model.config, seed=cfg.seed), start.tokenizer,
                f"random initialisation (seed {cfg.seed}) of the architecture of {start.source}")
    return start.model, start.tokenizer, start.source


def _block_size(cfg: FinetuneConfig, gpt) -> int:
    limit = gpt.config.block_size
    if cfg.block_size is not None and cfg.block_size > limit:
        raise ValueError(f"--block-size {cfg.block_size} is longer than the context of the model "
                         f"({limit} positions): expected at most {limit}")
    return cfg.block_size or limit


def _what_trains(cfg: FinetuneConfig) -> str:
    parts = [f"LoRA rank {cfg.lora_rank} (alpha {cfg.lora_alpha:g}) on {', '.join(cfg.lora_targets)}"
             if cfg.lora_rank else "the whole GPT"]
    if cfg.task == "classify":
        parts.append("the head")
    frozen = list(cfg.freeze) + ([f"blocks {cfg.freeze_blocks[0]}..{cfg.freeze_blocks[1] - 1}"]
                                 if cfg.freeze_blocks else [])
    return " + ".join(parts) + (f"; frozen: {', '.join(frozen)}" if frozen else "")


def _save_adapters(model, out: Path, print_fn) -> Path:
    path = out / OUTPUTS["adapters"]
    size = save_lora(model, path)
    full = (out / CHECKPOINT_NAME).stat().st_size
    print_fn(f"adapters: {path}, {size / 1e3:,.1f} kB ({100 * size / full:.1f}% of the full "
             f"checkpoint, {full / 1e6:,.2f} MB, which also holds the optimizer's state)")
    return path


def _merge(model, out: Path, meta: dict, task, metrics: dict, print_fn) -> Path:
    """Fold the adapters into the weights, check that the model computes what it computed, and
    write merged.safetensors: a checkpoint without LoRA (nor optimizer state), with the run's
    meta (not its "before" metrics)."""
    n = merge_lora(model)
    metrics["merged"] = task.merged_check(model)
    meta = {k: v for k, v in meta.items() if k != "before"}
    path = ckpt_io.save(out / OUTPUTS["merged"], model, **{**meta, "lora": None, "merged": True})
    print_fn(f"merged {n} adapters into the weights: {path} ({task.describe_merge(metrics['merged'])})")
    return path
