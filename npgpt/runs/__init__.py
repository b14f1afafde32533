"""The runs behind the training commands, each a settings dataclass and a run on one skeleton:

    pretrain.py     PretrainConfig, run: a GPT on a text                    (`npgpt train`)
    seq2seq.py      Seq2SeqConfig, run: the encoder-decoder on pairs         (`npgpt seq2seq train`)
                    (seq2seq_data.py: the pairs; seq2seq_eval.py: exact match, translation)
    finetune.py     FinetuneConfig, run: a GPT fine-tuned, LoRA, a classifier (`npgpt finetune`)
                    (finetune_tasks.py: the lm and classify tasks)
    trace.py        TraceConfig, run: one traced training step of a new model or of a run's
                    checkpoint, on its next batch                        (`npgpt trace`)
    skeleton.py     what every run does the same way: the backend, --out, the data hash on
                    --resume, AdamW, the checkpoint's meta, the Trainer, resume, the report

The settings' fields and checks (setting(), Checker) are npgpt.settings.

Every training run is `run(cfg, resume=False, progress=True, on_step=None, print_fn=print)`:

    from npgpt.runs import PretrainConfig, pretrain
    result = pretrain.run(PretrainConfig(max_iters=200, out="runs/small"))
"""

from . import finetune, pretrain, seq2seq, trace
from .finetune import FinetuneConfig
from .pretrain import PretrainConfig
from .seq2seq import Seq2SeqConfig
from .trace import TraceConfig

__all__ = ["PretrainConfig", "Seq2SeqConfig", "FinetuneConfig", "TraceConfig", "pretrain", "seq2seq",
           "finetune", "trace"]
