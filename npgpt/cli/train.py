"""`npgpt train`: pre-train a GPT (npgpt.runs.pretrain); its flags are PretrainConfig's fields."""

from __future__ import annotations

from ..runs import pretrain
from ..runs.pretrain import PretrainConfig
from .flags import add_config_flags, add_resume_flag, run_training


def add(sub) -> None:
    p = sub.add_parser("train", help="pre-train a GPT on a text file (default: a small char-level model)",
                       description="Pre-train a GPT with AdamW (linear warmup, cosine decay), logging "
                                   "every step to OUT/log.jsonl and checkpointing to "
                                   "OUT/ckpt.safetensors. With no arguments: a small char-level "
                                   "model on the built-in corpus, in a few minutes, then a sample. "
                                   "Ctrl-C saves a checkpoint; --resume continues it exactly.")
    add_config_flags(p, PretrainConfig)
    add_resume_flag(p, pretrain.SPEC)
    p.set_defaults(run=run)


def run(args) -> int:
    return run_training(args, PretrainConfig, pretrain)
