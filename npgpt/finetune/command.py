"""`npgpt finetune`: its arguments (add_finetune, for npgpt/cli.py) and its run (run_finetune).

Every flag is a field of FinetuneConfig (npgpt/finetune/run.py), whose defaults --help shows.
"""

from __future__ import annotations

import argparse
import dataclasses

# flag -> (type, help); the defaults are FinetuneConfig's
_FLAGS = {
    "init": (str, "where to start: an npgpt checkpoint (file or run folder), a local GPT-2 folder "
                  "(config.json, model.safetensors, vocab.json, merges.txt), or 'none' (random weights)"),
    "task": (str, "lm: continue pre-training on --data; classify: a class per text"),
    "data": (str, "lm: a UTF-8 text file (default: the built-in corpus); classify: a .jsonl, .csv or "
                  ".tsv file (default: the built-in task, original sentences vs. their words shuffled)"),
    "test_data": (str, "classify: a held-out file with the same fields (default: --test-fraction of --data)"),
    "text_field": (str, "classify: the field (JSONL) or column (CSV) of the text"),
    "label_field": (str, "classify: the field or column of the label"),
    "val_fraction": (float, "lm: the last part of the text held out for the validation loss"),
    "test_fraction": (float, "classify: the part of each class held out for the evaluation"),
    "data_seed": (int, "classify: seed of the held-out split and of the built-in task"),
    "preset": (str, "--init none: the model preset (default: baby); the size flags override it"),
    "n_layer": (int, "--init none: Transformer blocks"),
    "n_head": (int, "--init none: attention heads"),
    "n_embd": (int, "--init none: width of the residual stream"),
    "block_size": (int, "context in tokens, at most the model's (default: the model's)"),
    "dropout": (float, "dropout probability (default: the start's)"),
    "dtype": (str, "float32 or float64"),
    "aux_lm_weight": (float, "classify: weight of the auxiliary language-model loss (GPT-1: 0.5)"),
    "lora_rank": (int, "train rank-r LoRA adapters of the attention and MLP weights instead of the "
                       "weights (0: no LoRA)"),
    "lora_alpha": (float, "LoRA scale numerator: the update is (alpha / rank) A B"),
    "lora_dropout": (float, "dropout on the adapters' input"),
    "max_iters": (int, "optimisation steps"),
    "batch_size": (int, "sequences per step"),
    "lr": (float, "peak learning rate (AdamW)"),
    "min_lr": (float, "learning rate at the end of the cosine decay"),
    "warmup": (int, "steps of linear warmup (default: a tenth of --max-iters)"),
    "weight_decay": (float, "AdamW weight decay (matrices only)"),
    "beta1": (float, "AdamW beta1"),
    "beta2": (float, "AdamW beta2"),
    "grad_clip": (float, "max global gradient norm (0: no clipping)"),
    "eval_interval": (int, "steps between validation losses (lm) or held-out losses (classify)"),
    "eval_iters": (int, "lm: validation batches per validation loss"),
    "checkpoint_interval": (int, "steps between checkpoints"),
    "seed": (int, "seed of the head, the adapters, the batches and dropout"),
    "out": (str, "folder of the run: ckpt.safetensors, log.jsonl, metrics.json, adapters, merged model"),
    "backend": (str, "kernel backend: numpy or numba (default: NPGPT_BACKEND or the fastest)"),
    "sample_tokens": (int, "lm: tokens to sample and print at the end (0: none)"),
}
_LISTS = {
    "freeze": dict(nargs="+", metavar="PREFIX",
                   help="freeze the GPT's parameters whose names start with these prefixes "
                        "(wte, wpe, h.0, h.1.attn, ln_f, ...)"),
    "freeze_blocks": dict(nargs=2, type=int, metavar=("A", "B"),
                          help="freeze the Transformer blocks A .. B-1"),
    "lora_targets": dict(nargs="+", metavar="TARGET",
                         help="the Linears LoRA wraps: attn, mlp, or attn.c_attn, attn.c_proj, "
                              "mlp.c_fc, mlp.c_proj"),
}
_SWITCHES = {
    "reinit": "keep the architecture and tokenizer of --init but start from random weights "
              "(the baseline that shows what pre-training buys)",
    "merge": "fold the LoRA adapters into the weights at the end and write merged.safetensors",
}


def add_finetune(sub):
    from ..settings import add_flags, add_resume_flag
    from .run import FinetuneConfig

    defaults = {f.name: f.default for f in dataclasses.fields(FinetuneConfig)}
    p = sub.add_parser(
        "finetune", help="fine-tune a GPT: continue pre-training, or a classifier (LoRA, freezing)",
        description="Fine-tune a GPT from an npgpt checkpoint or a local GPT-2 folder: continue its "
                    "pre-training on a text (--task lm), or train a classification head on labelled "
                    "texts (--task classify, evaluated on held-out examples), the whole model or "
                    "LoRA adapters (--lora-rank), with parts frozen (--freeze, --freeze-blocks). "
                    "Logs to OUT/log.jsonl, checkpoints to OUT/ckpt.safetensors (Ctrl-C saves; "
                    "--resume continues), metrics to OUT/metrics.json.")
    add_flags(p, _FLAGS, FinetuneConfig, {"data": "see above", "init": "out, the folder of `npgpt train`"})
    for name, kw in _LISTS.items():
        default = defaults[name]
        p.add_argument("--" + name.replace("_", "-"), default=argparse.SUPPRESS,
                       **{**kw, "help": f"{kw['help']} (default: {' '.join(default) if default else 'none'})"})
    for name, help_ in _SWITCHES.items():
        p.add_argument("--" + name, action="store_true", default=argparse.SUPPRESS, help=help_)
    add_resume_flag(p, "--max-iters, intervals, --backend, --sample-tokens, --merge")
    p.set_defaults(run=run_finetune)


def run_finetune(args) -> int:
    from ..train import run_command
    from .run import FinetuneConfig, finetune, resume_config

    fields = {f.name for f in dataclasses.fields(FinetuneConfig)}
    flags = {k: v for k, v in vars(args).items() if k in fields}
    return run_command("npgpt finetune", flags, args.resume, FinetuneConfig, resume_config,
                       lambda cfg, **kw: finetune(cfg, **kw).train)
