"""npgpt: a GPT and an encoder-decoder Transformer from scratch in NumPy.

Every layer's forward and backward is written by hand (npgpt.nn), checked against the numerical
gradient (npgpt.gradcheck) and PyTorch; the hot kernels are JIT-compiled with Numba
(npgpt.kernels). See README.md for a tour.
"""

import importlib

from . import kernels
from .config import GPTConfig, TransformerConfig

__version__ = "0.1.0"

# Imported on first use, so that `import npgpt` stays light (and the CLI starts fast).
_LAZY = {
    "GPT": ("npgpt.models.gpt", "GPT"),
    "Transformer": ("npgpt.models.transformer", "Transformer"),
}
_SUBMODULES = ("checkpoint", "data", "finetune", "gradcheck", "models", "nn", "optim", "sample",
               "tokenizers", "train")

__all__ = ["GPT", "GPTConfig", "Transformer", "TransformerConfig", "kernels", *_SUBMODULES]


def __getattr__(name):
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    if name in _SUBMODULES:
        return importlib.import_module(f"npgpt.{name}")
    raise AttributeError(f"module 'npgpt' has no attribute {name!r}")
