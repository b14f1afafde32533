"""The position-wise feed-forward network of every Transformer block."""

from __future__ import annotations

import numpy as np

from .activation import Activation
from .dropout import Dropout
from .linear import Linear
from .module import Module


class MLP(Module):
    """Two Linears with a non-linearity between them, applied to each position alone.

    forward:
        h = act(x @ W_fc + b_fc)            (..., C) -> (..., hidden)     GPT-2: hidden = 4C, GELU
        y = dropout(h) @ W_proj + b_proj    (..., hidden) -> (..., C)
    backward:
        dx = c_fc'(act'(drop'(c_proj'(dy))))       f'(d): f's backward applied to d

    Names follow GPT-2 (c_fc, c_proj). hidden_dropout is torch.nn.TransformerEncoderLayer's
    dropout between the two Linears (GPT-2 has none: 0).
    """

    def __init__(self, n_embd: int, hidden: int, activation: str = "gelu_tanh", *, bias: bool = True,
                 hidden_dropout: float = 0.0, dtype="float32", rng: np.random.Generator | None = None,
                 std: float = 0.02, proj_std: float | None = None,
                 dropout_rng: np.random.Generator | None = None):
        super().__init__()
        rng = rng if rng is not None else np.random.default_rng(0)
        self.c_fc = Linear(n_embd, hidden, bias, dtype=dtype, rng=rng, std=std)
        self.act = Activation(activation)
        self.drop = Dropout(hidden_dropout, dropout_rng)
        self.c_proj = Linear(hidden, n_embd, bias, dtype=dtype, rng=rng,
                             std=std if proj_std is None else proj_std)

    def forward(self, x):
        return self.c_proj.forward(self.drop.forward(self.act.forward(self.c_fc.forward(x))))

    def backward(self, dout, need_dx=True):
        dh = self.act.backward(self.drop.backward(self.c_proj.backward(dout)))
        return self.c_fc.backward(dh, need_dx=need_dx)
