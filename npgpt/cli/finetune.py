"""`npgpt finetune`: fine-tune a GPT (npgpt.runs.finetune); its flags are FinetuneConfig's fields."""

from __future__ import annotations

from ..runs import finetune
from ..runs.finetune import FinetuneConfig
from .flags import add_config_flags, add_resume_flag, run_training


def add(sub) -> None:
    p = sub.add_parser(
        "finetune", help="fine-tune a GPT: continue pre-training, or a classifier (LoRA, freezing)",
        description="Fine-tune a GPT from an npgpt checkpoint or a local GPT-2 folder: continue its "
                    "pre-training on a text (--task lm), or train a classification head on labelled "
                    "texts (--task classify, evaluated on held-out examples), the whole model or "
                    "LoRA adapters (--lora-rank), with parts frozen (--freeze, --freeze-blocks). "
                    "Logs to OUT/log.jsonl, checkpoints to OUT/ckpt.safetensors (Ctrl-C saves; "
                    "--resume continues), metrics to OUT/metrics.json.")
    add_config_flags(p, FinetuneConfig)
    add_resume_flag(p, finetune.SPEC)
    p.set_defaults(run=run)


def run(args) -> int:
    return run_training(args, FinetuneConfig, finetune)
