"""Model configurations: dataclasses checked when they are made, and named presets.

A bad value fails here, with the field, the value and what was expected, before any array is
allocated.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

ACTIVATIONS = ("gelu_tanh", "gelu", "relu")
POS_ENCODINGS = ("learned", "sinusoidal")
DTYPES = ("float32", "float64")


def _positive_int(cfg, *names):
    for name in names:
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{type(cfg).__name__}: {name}={value!r}, expected a positive integer")


def _choice(cfg, name, choices):
    value = getattr(cfg, name)
    if value not in choices:
        raise ValueError(f"{type(cfg).__name__}: {name}={value!r}, expected one of {choices}")


def _probability(cfg, *names):
    for name in names:
        value = getattr(cfg, name)
        if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
            raise ValueError(f"{type(cfg).__name__}: {name}={value!r}, expected a number in [0, 1)")


class _Config:
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        """Build from a dict, naming any key that is not a field (a foreign or newer checkpoint)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - fields)
        if unknown:
            raise ValueError(f"{cls.__name__}.from_dict: unknown keys {unknown}, expected some of {sorted(fields)}")
        return cls(**d)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class GPTConfig(_Config):
    """A decoder-only GPT. The defaults are GPT-2 small's (124M parameters)."""

    vocab_size: int = 50257          # number of token ids
    block_size: int = 1024           # the longest context, in tokens
    n_layer: int = 12                # Transformer blocks
    n_head: int = 12                 # attention heads per block; n_embd % n_head == 0
    n_embd: int = 768                # width of the residual stream
    dropout: float = 0.0             # on embeddings, attention probabilities and residual branches
    bias: bool = True                # biases in the Linears and LayerNorms (GPT-2: True)
    activation: str = "gelu_tanh"    # MLP non-linearity: "gelu_tanh" (GPT-2), "gelu" (erf), "relu"
    pos_encoding: str = "learned"    # "learned" (GPT-2's wpe) or "sinusoidal" (Vaswani et al.)
    tie_weights: bool = True         # lm_head shares the token embedding matrix (GPT-2: True)
    dtype: str = "float32"           # "float32", or "float64" for gradient checks
    layer_norm_eps: float = 1e-5     # eps inside the square root of every LayerNorm

    def __post_init__(self):
        _positive_int(self, "vocab_size", "block_size", "n_layer", "n_head", "n_embd")
        if self.n_embd % self.n_head:
            raise ValueError(f"GPTConfig: n_embd={self.n_embd} is not divisible by n_head={self.n_head}: "
                             f"expected n_embd % n_head == 0")
        _probability(self, "dropout")
        _choice(self, "activation", ACTIVATIONS)
        _choice(self, "pos_encoding", POS_ENCODINGS)
        _choice(self, "dtype", DTYPES)
        if not self.layer_norm_eps > 0:
            raise ValueError(f"GPTConfig: layer_norm_eps={self.layer_norm_eps!r}, expected a positive number")

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    @classmethod
    def preset(cls, name: str, **overrides) -> "GPTConfig":
        """A named configuration (see GPT_PRESETS), with any field overridden."""
        if name not in GPT_PRESETS:
            raise ValueError(f"GPTConfig.preset: name={name!r}, expected one of {sorted(GPT_PRESETS)}")
        return cls(**{**GPT_PRESETS[name], **overrides})


GPT_PRESETS = {
    # tiny enough for a full float64 numerical gradient check in seconds
    "gradcheck": dict(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8, dtype="float64"),
    # the default `npgpt train`: a small char-level model that trains in minutes on 2 cores
    "baby": dict(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128),
    "gpt2": dict(),
    "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024),
}


@dataclass(frozen=True)
class TransformerConfig(_Config):
    """An encoder-decoder Transformer (Vaswani et al., 2017). The defaults are a small model."""

    src_vocab_size: int = 16         # source token ids
    tgt_vocab_size: int = 16         # target token ids
    d_model: int = 128               # width of every layer's input and output
    n_head: int = 4                  # attention heads; d_model % n_head == 0
    n_encoder_layers: int = 3
    n_decoder_layers: int = 3
    d_ff: int = 512                  # hidden width of the feed-forward networks
    max_len: int = 64                # the longest source or target sequence
    dropout: float = 0.1             # on embeddings+positions, attention probabilities, sublayers
    norm_first: bool = False         # False: post-LN as in the paper; True: pre-LN
    share_embeddings: bool = False   # one embedding for source, target and output (one vocabulary)
    label_smoothing: float = 0.1     # epsilon of the smoothed cross-entropy
    pad_id: int = 0                  # the padding token id; target positions equal to it are ignored
    dtype: str = "float32"
    layer_norm_eps: float = 1e-5

    def __post_init__(self):
        _positive_int(self, "src_vocab_size", "tgt_vocab_size", "d_model", "n_head", "d_ff", "max_len")
        for name in ("n_encoder_layers", "n_decoder_layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"TransformerConfig: {name}={value!r}, expected a non-negative integer")
        if self.d_model % self.n_head:
            raise ValueError(f"TransformerConfig: d_model={self.d_model} is not divisible by "
                             f"n_head={self.n_head}: expected d_model % n_head == 0")
        _probability(self, "dropout", "label_smoothing")
        _choice(self, "dtype", DTYPES)
        if self.share_embeddings and self.src_vocab_size != self.tgt_vocab_size:
            raise ValueError(f"TransformerConfig: share_embeddings=True needs one vocabulary, but "
                             f"src_vocab_size={self.src_vocab_size} and tgt_vocab_size={self.tgt_vocab_size}")
        if not 0 <= self.pad_id < min(self.src_vocab_size, self.tgt_vocab_size):
            raise ValueError(f"TransformerConfig: pad_id={self.pad_id}, expected an id in both vocabularies")
        if not self.layer_norm_eps > 0:
            raise ValueError(f"TransformerConfig: layer_norm_eps={self.layer_norm_eps!r}, expected a positive number")

    @property
    def head_size(self) -> int:
        return self.d_model // self.n_head
