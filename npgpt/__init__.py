"""npgpt: a GPT and an encoder-decoder Transformer from scratch in NumPy.

Every layer's forward and backward is written by hand (npgpt.nn), checked against the numerical
gradient (npgpt.gradcheck) and PyTorch; the hot kernels are JIT-compiled with Numba
(npgpt.kernels). The textbook: kernels, nn, models, optim, gradcheck, tokenizers, data,
checkpoint, finetune. The workshop above it: trainer (the training loop), runs (pre-training,
seq2seq, fine-tuning), sample, cli (the `npgpt` command). See README.md for a tour.
"""

from . import (checkpoint, data, finetune, gradcheck, kernels, models, nn, optim, runs, sample,
               tokenizers, trainer)
from .config import GPTConfig, TransformerConfig
from .models.gpt import GPT
from .models.transformer import Transformer

__version__ = "0.1.0"

__all__ = ["GPT", "GPTConfig", "Transformer", "TransformerConfig", "kernels", "checkpoint", "data",
           "finetune", "gradcheck", "models", "nn", "optim", "runs", "sample", "tokenizers", "trainer"]
