"""The runs behind `npgpt finetune`: continued pre-training of a language model, or a classifier,
from an npgpt checkpoint or a local GPT-2 folder (or from random weights), on npgpt's Trainer
(progress bar, JSONL log, atomic checkpoints, exact resume, the NaN guard).

    result = finetune(FinetuneConfig(init="out", task="classify", lora_rank=8))

A run, in order:

    1. the data and the start (init.load_init): the text is encoded with the start's tokenizer,
       and a character that tokenizer does not know is an error naming where it is
    2. the model: the GPT (task "lm") or GPTClassifier(gpt) (task "classify"); add_lora; freeze /
       freeze_blocks; the trainable-parameter count is printed
    3. AdamW over the trainable parameters, linear warmup then cosine decay, Trainer.run()
    4. the held-out evaluation (printed and written), the adapters alone (LoRA), the merged
       model (--merge), a sample (language model)

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
from ..train import CHECKPOINT_NAME, TrainResult
from .init import load_init

OUTPUTS = {"checkpoint": CHECKPOINT_NAME, "metrics": "metrics.json",
           "adapters": "adapters.safetensors", "merged": "merged.safetensors"}
TASKS = ("lm", "classify")


@dataclass(frozen=True)
class FinetuneConfig:
    """Everything `npgpt finetune` takes; each field is the flag of the same name (--lora-rank)."""

    # the start and the task
    init: str = "out"                # npgpt checkpoint / run folder, GPT-2 folder, or "none"
    reinit: bool = False             # keep the architecture and tokenizer of init, new weights
    task: str = "lm"                 # "lm": continue pre-training; "classify": a class per text
    data: str | None = None          # lm: a text file; classify: .jsonl/.csv/.tsv (None: built-in)
    test_data: str | None = None     # classify: a held-out file (None: test_fraction of data)
    text_field: str = "text"         # classify: the text's field / column
    label_field: str = "label"       # classify: the label's field / column
    val_fraction: float = 0.1        # lm: the last part of the text, for the validation loss
    test_fraction: float = 0.2       # classify: held out for evaluation, per class
    data_seed: int = 0               # classify: the held-out split (and the built-in task)
    # the model: --init none only, except block_size, dropout, dtype
    preset: str | None = None        # a GPTConfig preset (default "baby")
    n_layer: int | None = None
    n_head: int | None = None
    n_embd: int | None = None
    block_size: int | None = None    # context in tokens: at most the start's (None: the start's)
    dropout: float | None = None     # None: the start's
    dtype: str = "float32"
    aux_lm_weight: float = 0.0       # classify: + weight * the language-model loss of the text
    # what trains
    lora_rank: int = 0               # > 0: LoRA adapters of this rank; only they (and a head) train
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: tuple = ("attn", "mlp")
    freeze: tuple = ()               # parameter-name prefixes of the GPT to freeze: wte, h.0 ...
    freeze_blocks: tuple | None = None   # (A, B): freeze blocks A .. B-1
    merge: bool = False              # fold the adapters into the weights at the end
    # optimisation: AdamW, linear warmup then cosine decay to min_lr at max_iters
    max_iters: int = 300
    batch_size: int = 16
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup: int | None = None          # steps of linear warmup (None: a tenth of max_iters)
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0
    eval_interval: int = 100
    eval_iters: int = 20             # lm: validation batches per validation loss
    checkpoint_interval: int = 100
    seed: int = 0                    # the head, adapters, batches and dropout
    out: str = "out/finetune"
    backend: str | None = None
    sample_tokens: int = 200         # lm: tokens sampled and printed at the end (0: none)

    def __post_init__(self):
        for name in ("lora_targets", "freeze", "freeze_blocks"):      # JSON lists -> tuples
            value = getattr(self, name)
            if isinstance(value, (list, str)):
                object.__setattr__(self, name, (value,) if isinstance(value, str) else tuple(value))
        _check_config(self)


def _check_config(cfg: FinetuneConfig) -> None:
    from ..settings import Checker, is_int
    check = Checker(cfg)
    fail = check.fail
    check.integers("max_iters", "batch_size", "eval_iters")
    check.integers("n_layer", "n_head", "n_embd", "block_size", unset="the start's")
    if cfg.warmup is not None and not (is_int(cfg.warmup) and 0 <= cfg.warmup <= cfg.max_iters):
        fail("warmup", f"an integer in [0, max-iters={cfg.max_iters}] (or unset: a tenth of max-iters)")
    check.integers("eval_interval", "checkpoint_interval", "seed", "data_seed", "sample_tokens",
                   "lora_rank", low=0)
    check.numbers("lr", "min_lr", "weight_decay", "grad_clip", "aux_lm_weight", "lora_alpha")
    for name in ("lr", "lora_alpha"):
        if not getattr(cfg, name) > 0:
            fail(name, "a number > 0")
    if cfg.min_lr > cfg.lr:
        fail("min_lr", f"a number <= lr={cfg.lr}")
    check.fractions("beta1", "beta2", "lora_dropout")
    check.fractions("dropout", unset="the start's")
    check.fractions("val_fraction", "test_fraction", zero=False)
    check.choice("task", TASKS)
    check.choice("dtype", ("float32", "float64"))
    check.choice("backend", (None, "numpy", "numba", "cuda"))
    if not isinstance(cfg.init, str) or not cfg.init:
        fail("init", "a path, or 'none'")
    scratch = cfg.init == "none"
    if not scratch:
        given = [n for n in ("preset", "n_layer", "n_head", "n_embd") if getattr(cfg, n) is not None]
        if given:
            fail(given[0], "unset unless --init none: the model of --init has its own size")
    elif cfg.reinit:
        fail("reinit", "unset with --init none (its weights are random already)")
    from ..config import GPT_PRESETS
    check.choice("preset", (None, *sorted(GPT_PRESETS)))
    if cfg.task == "lm":
        for name, default in (("test_data", None), ("aux_lm_weight", 0.0)):
            if getattr(cfg, name) != default:
                fail(name, "unset for --task lm (it is a setting of --task classify)")
    if cfg.merge and not cfg.lora_rank:
        fail("merge", "unset without --lora-rank (there are no adapters to merge)")
    if cfg.freeze_blocks is not None and (len(cfg.freeze_blocks) != 2 or not all(map(is_int, cfg.freeze_blocks))):
        fail("freeze_blocks", "two integers A B (blocks A .. B-1)")


# Settings a resumed run may change; the rest must match the checkpoint (the same trajectory).
RESUMABLE_CHANGES = ("max_iters", "eval_interval", "checkpoint_interval", "out", "backend",
                     "sample_tokens", "merge")


def resume_config(out, overrides: dict | None = None) -> FinetuneConfig:
    """The FinetuneConfig saved in out/ckpt.safetensors, with overrides of RESUMABLE_CHANGES; an
    override of another setting that differs from the saved one is an error."""
    from ..train import resumed_settings
    return resumed_settings(out, FinetuneConfig, "finetune", RESUMABLE_CHANGES, overrides, "npgpt finetune")


@dataclass
class FinetuneResult:
    train: TrainResult                           # the Trainer's result (losses, step, ...)
    metrics: dict = field(default_factory=dict)  # what metrics.json holds
    files: dict = field(default_factory=dict)    # {"checkpoint": path, "metrics": ..., ...}


def finetune(cfg: FinetuneConfig, resume: bool = False, progress: bool | None = True,
             on_step: Callable | None = None, print_fn: Callable = print) -> FinetuneResult:
    """Fine-tune as cfg says; with resume, continue the checkpoint in cfg.out."""
    from .. import kernels
    from ..optim import AdamW, WarmupCosine
    from ..train import Trainer
    from . import tasks
    from .lora import lora_settings

    if cfg.backend is not None:
        kernels.use_backend(cfg.backend)
    out = Path(cfg.out)
    saved = ckpt_io.load(out / CHECKPOINT_NAME) if resume else None
    if saved is None:
        _check_out(cfg, out)
    task = tasks.read_task(cfg)                                  # the raw texts, before a tokenizer
    if saved is not None and saved.meta.get("data", {}).get("sha256") != task.sha256:
        raise ValueError(f"--resume: {task.source} is not the data the run in {str(out)!r} was "
                         f"trained on (its SHA-256 differs): resume with the same --data")
    gpt, tok, source = _start(cfg, saved, task)
    block = _block_size(cfg, gpt)
    task.encode(tok, block)
    model = tasks.assemble(cfg, gpt, task)
    total, trainable = model.num_parameters(), model.num_parameters(trainable_only=True)
    opt = AdamW(model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay)
    meta = {"finetune": dataclasses.asdict(cfg), "tokenizer": tok.to_dict(),
            "gpt_config": gpt.config.to_dict(), "init": source,
            "lora": lora_settings(gpt), "classes": task.classes,
            "data": {"source": task.source, "sha256": task.sha256},
            "backend": kernels.current_backend()}
    trainer = Trainer(model, opt, task.batch_fn(cfg.batch_size), loss_fn=task.loss_fn,
                      eval_fn=task.eval_fn(cfg), tokens_fn=task.tokens_fn,
                      schedule=WarmupCosine(cfg.lr, _warmup(cfg), cfg.max_iters, cfg.min_lr),
                      max_iters=cfg.max_iters, grad_clip=cfg.grad_clip, eval_interval=cfg.eval_interval,
                      checkpoint_interval=cfg.checkpoint_interval, out_dir=out, meta=meta,
                      seed=cfg.seed, progress=progress, on_step=on_step)
    print_fn(f"start: {source}")
    g = gpt.config
    head = f" + a head of {len(task.classes)} classes" if task.classes else ""
    print_fn(f"model: GPT {g.n_layer} layers, {g.n_head} heads, {g.n_embd} wide, context {block}{head}; "
             f"{type(tok).__name__} (vocabulary {tok.vocab_size}); backend {kernels.current_backend()}")
    print_fn(f"data: {task.describe()}")
    print_fn(f"trainable: {trainable:,} of {total:,} parameters ({100 * trainable / total:.2f}%): "
             f"{_what_trains(cfg, model)}")
    metrics = {"task": cfg.task, "init": source, "trainable_parameters": trainable,
               "total_parameters": total, "trainable_percent": 100 * trainable / total}
    if saved is not None:
        trainer.resume(saved)
        metrics.update(saved.meta.get("before", {}))
        print_fn(f"resuming {str(out)!r} at step {trainer.step} of {cfg.max_iters}")
    else:
        before = task.before(model)
        for name, value in before.items():
            print_fn(f"{name.replace('val_', 'validation ').replace('_', ' ')} fine-tuning: {value:.4f}")
        metrics.update(before)
        trainer.meta["before"] = before
    result = trainer.run()
    files = {"checkpoint": result.checkpoint}
    if result.interrupted:
        print_fn(f"interrupted at step {result.step}: checkpoint saved to {result.checkpoint}; "
                 f"continue with: npgpt finetune --resume --out {cfg.out}")
        return FinetuneResult(result, metrics, files)
    metrics.update(step=result.step, elapsed=result.elapsed, **task.after(model, result, print_fn))
    if cfg.lora_rank:
        files["adapters"] = _save_adapters(model, out, print_fn)
    if cfg.merge:
        files["merged"] = _merge(model, out, meta, task, metrics, print_fn)
    files["metrics"] = out / OUTPUTS["metrics"]
    ckpt_io.write_atomic(files["metrics"], (json.dumps(metrics, indent=1) + "\n").encode())
    print_fn(f"metrics: {files['metrics']}; checkpoint: {result.checkpoint}")
    if cfg.task == "lm" and cfg.sample_tokens:
        _sample(model, tok, cfg, print_fn)
    return FinetuneResult(result, metrics, files)


def _warmup(cfg: FinetuneConfig) -> int:
    return cfg.max_iters // 10 if cfg.warmup is None else cfg.warmup


def _check_out(cfg: FinetuneConfig, out: Path) -> None:
    """Refuse an --out that holds an earlier run's results, or that is the --init folder."""
    if cfg.init != "none" and Path(cfg.init).exists() and out.exists() and out.resolve() == Path(cfg.init).resolve():
        raise ValueError(f"--out {str(out)!r} is the --init folder: expected another folder "
                         f"(the start is only read, never written)")
    there = [name for name in OUTPUTS.values() if (out / name).exists()]
    if there:
        raise FileExistsError(f"--out {str(out)!r} already holds {there} of an earlier run: pass "
                              f"--resume to continue it, or another --out (nothing was overwritten)")


def _start(cfg: FinetuneConfig, saved, task):
    """(GPT, tokenizer, description) to fine-tune: the checkpoint's structure when resuming (its
    weights are restored later), a random GPT for --init none, else init.load_init."""
    from ..config import GPTConfig
    from ..models.gpt import GPT
    from ..tokenizers import CharTokenizer, tokenizer_from_dict

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


def _what_trains(cfg: FinetuneConfig, model) -> str:
    parts = [f"LoRA rank {cfg.lora_rank} (alpha {cfg.lora_alpha:g}) on {', '.join(cfg.lora_targets)}"
             if cfg.lora_rank else "the whole GPT"]
    if cfg.task == "classify":
        parts.append("the head")
    frozen = list(cfg.freeze) + ([f"blocks {cfg.freeze_blocks[0]}..{cfg.freeze_blocks[1] - 1}"]
                                 if cfg.freeze_blocks else [])
    return " + ".join(parts) + (f"; frozen: {', '.join(frozen)}" if frozen else "")


def _save_adapters(model, out: Path, print_fn) -> Path:
    from .lora import save_lora

    path = out / OUTPUTS["adapters"]
    size = save_lora(model, path)
    full = (out / CHECKPOINT_NAME).stat().st_size
    print_fn(f"adapters: {path}, {size / 1e3:,.1f} kB ({100 * size / full:.1f}% of the full "
             f"checkpoint, {full / 1e6:,.2f} MB, which also holds the optimizer's state)")
    return path


def _merge(model, out: Path, meta: dict, task, metrics: dict, print_fn) -> Path:
    """Fold the adapters into the weights, check that the model computes what it computed, and
    write merged.safetensors: a checkpoint without LoRA (nor optimizer state)."""
    from .lora import merge_lora

    n = merge_lora(model)
    metrics["merged"] = task.merged_check(model)
    path = ckpt_io.save(out / OUTPUTS["merged"], model, **{**meta, "lora": None, "merged": True})
    print_fn(f"merged {n} adapters into the weights: {path} ({task.describe_merge(metrics['merged'])})")
    return path


def _sample(model, tok, cfg: FinetuneConfig, print_fn) -> None:
    from ..sample import default_prompt, generate_text

    print_fn(f"\nsample ({cfg.sample_tokens} tokens, temperature 0.8, top-k 40):")
    generate_text(model, tok, default_prompt(tok), max_new_tokens=cfg.sample_tokens, temperature=0.8,
                  top_k=40, seed=cfg.seed, stream=lambda s: print_fn(s, end="", flush=True))
    print_fn("")

