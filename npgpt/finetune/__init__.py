"""Fine-tuning a pretrained GPT: freezing, LoRA adapters, a classification head, data, evaluation.

Three ways to adapt a language model to a new task, which combine:

    freeze(model, "wte", "wpe", "h.0")        train only some parameters (continue pre-training
                                              the top of the network; the rest stays bit for bit)
    add_lora(model, rank=8, alpha=16)         train a low-rank update of every attention and MLP
                                              weight instead of the weight itself (Hu et al., 2021)
    GPTClassifier(model, n_classes=2)         read a class off the last token's hidden state
                                              (Radford et al., 2018: GPT-1's fine-tuning)

Frozen means `Parameter.requires_grad = False`: the optimizer leaves the parameter out (so
freeze, or add LoRA, *before* building the optimizer), Linear and Embedding skip the work that
would only produce its gradient, and `gpt.backward(frozen_below=frozen_below(gpt))` skips the
backward of the frozen bottom of the network altogether (GPTClassifier does).

The package, one concept per file:

    freeze.py       freeze / unfreeze / freeze_blocks / frozen_below
    lora.py         add_lora, merge_lora, lora_settings, save_lora / load_lora (the layer,
                    LoRALinear, is npgpt.nn.lora's; re-exported here)
    classifier.py   GPTClassifier (the head, the auxiliary LM loss)
    data.py         classification files, the built-in shuffled-words task, encode_texts, batches
    evaluate.py     classification_report, format_report, evaluate
    init.py         load_init: the GPT and tokenizer a fine-tune starts from (npgpt, GPT-2)
    tasks.py        the two tasks of a run: continued pre-training, classification
    run.py          FinetuneConfig and finetune(): the runs behind `npgpt finetune`
    command.py      the arguments of `npgpt finetune` (add_finetune, for npgpt/cli.py)
"""

from ..nn.lora import LoRALinear, lora_backward, lora_forward
from .classifier import GPTClassifier, last_token_index, next_token_targets
from .data import (ClassificationData, classification_batches, encode_texts,
                   load_classification_file, shuffled_words_task)
from .evaluate import classification_report, evaluate, format_report
from .freeze import freeze, freeze_blocks, frozen_below, unfreeze
from .lora import (add_lora, load_lora, load_lora_state_dict, lora_settings, lora_state_dict,
                   merge_lora, save_lora)

__all__ = ["freeze", "unfreeze", "freeze_blocks", "frozen_below", "LoRALinear", "lora_forward",
           "lora_backward", "add_lora", "merge_lora", "lora_settings", "lora_state_dict",
           "load_lora_state_dict", "save_lora", "load_lora", "GPTClassifier", "last_token_index",
           "next_token_targets", "ClassificationData", "load_classification_file", "shuffled_words_task",
           "encode_texts", "classification_batches", "classification_report", "format_report",
           "evaluate"]
