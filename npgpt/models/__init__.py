"""The models: GPT (decoder-only, GPT-2's architecture) and the encoder-decoder Transformer."""

from .gpt import GPT
from .transformer import Transformer

__all__ = ["GPT", "Transformer"]
