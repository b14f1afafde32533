"""Transformer blocks: the GPT block (pre-LN) and the encoder and decoder layers (post- or pre-LN).

Every sublayer sits on a residual connection. Where the stream splits (x goes both into the
sublayer and around it), the backward adds the two gradients: d(x + f(x)) = dy + f'(x)^T dy.
"""

from __future__ import annotations

import numpy as np

from .attention import MultiHeadAttention
from .dropout import Dropout
from .mlp import MLP
from .module import Module
from .norm import LayerNorm


def _rngs(rng: np.random.Generator, n: int):
    """n independent Generators for the dropouts of a block, spawned from the model's."""
    return rng.spawn(n)


class Block(Module):
    """The GPT-2 block, pre-LN:

    forward:
        h = x + dropout(attn(ln_1(x)))        causal self-attention
        y = h + dropout(mlp(ln_2(h)))
    backward:
        dh = dy + ln_2'(mlp'(drop_2'(dy)))    the residual and the branch add
        dx = dh + ln_1'(attn'(drop_1'(dh)))   f'(d): f's backward applied to d

    proj_std: the init std of the two projections into the residual stream (GPT-2 scales them by
    1 / sqrt(2 n_layer)).
    """

    def __init__(self, n_embd: int, n_head: int, *, dropout: float = 0.0, bias: bool = True,
                 activation: str = "gelu_tanh", eps: float = 1e-5, dtype="float32",
                 rng: np.random.Generator | None = None, proj_std: float = 0.02):
        super().__init__()
        rng = rng if rng is not None else np.random.default_rng(0)
        r_attn, r_drop1, r_drop2 = _rngs(rng, 3)
        self.ln_1 = LayerNorm(n_embd, eps, bias, dtype=dtype)
        self.attn = MultiHeadAttention(n_embd, n_head, causal=True, bias=bias, dropout=dropout,
                                       dtype=dtype, rng=rng, proj_std=proj_std, dropout_rng=r_attn)
        self.drop_1 = Dropout(dropout, r_drop1)
        self.ln_2 = LayerNorm(n_embd, eps, bias, dtype=dtype)
        self.mlp = MLP(n_embd, 4 * n_embd, activation, bias=bias, dtype=dtype, rng=rng, proj_std=proj_std)
        self.drop_2 = Dropout(dropout, r_drop2)

    def forward(self, x, kv_cache=None):
        h = x + self.drop_1.forward(self.attn.forward(self.ln_1.forward(x), kv_cache=kv_cache))
        return h + self.drop_2.forward(self.mlp.forward(self.ln_2.forward(h)))

    def backward(self, dy):
        # forward: y = h + dropout(mlp(ln_2(h)))     -> the residual and the branch add
        dh = dy + self.ln_2.backward(self.mlp.backward(self.drop_2.backward(dy)))
        # forward: h = x + dropout(attn(ln_1(x)))
        return dh + self.ln_1.backward(self.attn.backward(self.drop_1.backward(dh)))


class EncoderLayer(Module):
    """One encoder layer, as torch.nn.TransformerEncoderLayer (ReLU, batch_first), post-LN
    (norm_first=False, the paper) or pre-LN (norm_first=True):

    forward (norm_first=False):
        h = norm1(x + dropout(sa(x)))
        y = norm2(h + dropout(ff(h)))
    backward (norm_first=False):
        ds = norm2'(dy),   dh = ds + ff'(dropout'(ds))          s = h + dropout(ff(h))
        dr = norm1'(dh),   dx = dr + sa'(dropout'(dr))          r = x + dropout(sa(x))
    forward (norm_first=True):
        h = x + dropout(sa(norm1(x)))
        y = h + dropout(ff(norm2(h)))
    backward (norm_first=True):
        dh = dy + norm2'(ff'(dropout'(dy)))
        dx = dh + norm1'(sa'(dropout'(dh)))       f'(d): f's backward applied to d

    sa is bidirectional self-attention with the source padding mask; ff is an MLP of width d_ff
    with dropout between its two Linears.
    """

    def __init__(self, d_model: int, n_head: int, d_ff: int, *, dropout: float = 0.0,
                 norm_first: bool = False, activation: str = "relu", eps: float = 1e-5,
                 dtype="float32", rng: np.random.Generator | None = None, std: float = 0.02):
        super().__init__()
        rng = rng if rng is not None else np.random.default_rng(0)
        r_attn, r_ff, r1, r2 = _rngs(rng, 4)
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, n_head, causal=False, dropout=dropout,
                                            dtype=dtype, rng=rng, std=std, dropout_rng=r_attn)
        self.ff = MLP(d_model, d_ff, activation, hidden_dropout=dropout, dtype=dtype, rng=rng,
                      std=std, dropout_rng=r_ff)
        self.norm1 = LayerNorm(d_model, eps, dtype=dtype)
        self.norm2 = LayerNorm(d_model, eps, dtype=dtype)
        self.dropout1 = Dropout(dropout, r1)
        self.dropout2 = Dropout(dropout, r2)

    def forward(self, x, src_pad=None):
        sa = lambda z: self.dropout1.forward(self.self_attn.forward(z, key_pad=src_pad))  # noqa: E731
        ff = lambda z: self.dropout2.forward(self.ff.forward(z))  # noqa: E731
        if self.norm_first:
            h = x + sa(self.norm1.forward(x))
            return h + ff(self.norm2.forward(h))
        h = self.norm1.forward(x + sa(x))
        return self.norm2.forward(h + ff(h))

    def backward(self, dy):
        sa = lambda d: self.self_attn.backward(self.dropout1.backward(d))  # noqa: E731
        ff = lambda d: self.ff.backward(self.dropout2.backward(d))         # noqa: E731
        if self.norm_first:
            dh = dy + self.norm2.backward(ff(dy))              # forward: y = h + ff(norm2(h))
            return dh + self.norm1.backward(sa(dh))            # forward: h = x + sa(norm1(x))
        ds = self.norm2.backward(dy)                           # forward: y = norm2(s), s = h + ff(h)
        dh = ds + ff(ds)
        dr = self.norm1.backward(dh)                           # forward: h = norm1(r), r = x + sa(x)
        return dr + sa(dr)


class DecoderLayer(Module):
    """One decoder layer, as torch.nn.TransformerDecoderLayer (ReLU, batch_first), post-LN
    (norm_first=False) or pre-LN (norm_first=True):

    forward (norm_first=False):
        h = norm1(x + dropout(sa(x)))
        g = norm2(h + dropout(ca(h, memory)))
        y = norm3(g + dropout(ff(g)))
    backward (norm_first=False):
        dt = norm3'(dy),   dg = dt + ff'(dropout'(dt))
        ds = norm2'(dg),   (dh_ca, dmemory) = ca'(dropout'(ds)),   dh = ds + dh_ca
        dr = norm1'(dh),   dx = dr + sa'(dropout'(dr))
    forward (norm_first=True):
        h = x + dropout(sa(norm1(x)))
        g = h + dropout(ca(norm2(h), memory))
        y = g + dropout(ff(norm3(g)))
    backward (norm_first=True):
        dg = dy + norm3'(ff'(dropout'(dy)))
        (dn, dmemory) = ca'(dropout'(dg)),   dh = dg + norm2'(dn)
        dx = dh + norm1'(sa'(dropout'(dh)))       f'(d): f's backward applied to d

    sa is causal self-attention with the target padding mask; ca attends from the target to the
    encoder's output `memory`, hiding padded source positions. backward returns (dx, dmemory):
    the gradient that flows back into the encoder through this layer's cross-attention.
    """

    def __init__(self, d_model: int, n_head: int, d_ff: int, *, dropout: float = 0.0,
                 norm_first: bool = False, activation: str = "relu", eps: float = 1e-5,
                 dtype="float32", rng: np.random.Generator | None = None, std: float = 0.02):
        super().__init__()
        rng = rng if rng is not None else np.random.default_rng(0)
        r_sa, r_ca, r_ff, r1, r2, r3 = _rngs(rng, 6)
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, n_head, causal=True, dropout=dropout,
                                            dtype=dtype, rng=rng, std=std, dropout_rng=r_sa)
        self.cross_attn = MultiHeadAttention(d_model, n_head, cross=True, dropout=dropout,
                                             dtype=dtype, rng=rng, std=std, dropout_rng=r_ca)
        self.ff = MLP(d_model, d_ff, activation, hidden_dropout=dropout, dtype=dtype, rng=rng,
                      std=std, dropout_rng=r_ff)
        self.norm1 = LayerNorm(d_model, eps, dtype=dtype)
        self.norm2 = LayerNorm(d_model, eps, dtype=dtype)
        self.norm3 = LayerNorm(d_model, eps, dtype=dtype)
        self.dropout1 = Dropout(dropout, r1)
        self.dropout2 = Dropout(dropout, r2)
        self.dropout3 = Dropout(dropout, r3)

    def forward(self, x, memory, tgt_pad=None, src_pad=None, kv_cache=None, memory_cache=None):
        """x: (B, T, d), memory: (B, S, d) -> (B, T, d).

        Incremental decoding (inference only): kv_cache keeps the self-attention's keys and
        values of the positions so far; memory_cache the cross-attention's projection of the
        memory, computed at the first step and reused (both KVCaches).
        """
        sa = lambda z: self.dropout1.forward(self.self_attn.forward(z, key_pad=tgt_pad, kv_cache=kv_cache))  # noqa: E731
        ca = lambda z: self.dropout2.forward(self.cross_attn.forward(z, memory, key_pad=src_pad,  # noqa: E731
                                                                     kv_cache=memory_cache))
        ff = lambda z: self.dropout3.forward(self.ff.forward(z))  # noqa: E731
        if self.norm_first:
            h = x + sa(self.norm1.forward(x))
            g = h + ca(self.norm2.forward(h))
            return g + ff(self.norm3.forward(g))
        h = self.norm1.forward(x + sa(x))
        g = self.norm2.forward(h + ca(h))
        return self.norm3.forward(g + ff(g))

    def backward(self, dy):
        sa = lambda d: self.self_attn.backward(self.dropout1.backward(d))   # noqa: E731
        ca = lambda d: self.cross_attn.backward(self.dropout2.backward(d))  # noqa: E731 (dx, dmemory)
        ff = lambda d: self.ff.backward(self.dropout3.backward(d))          # noqa: E731
        if self.norm_first:
            dg = dy + self.norm3.backward(ff(dy))              # forward: y = g + ff(norm3(g))
            dn, dmemory = ca(dg)                               # forward: g = h + ca(norm2(h), memory)
            dh = dg + self.norm2.backward(dn)
            return dh + self.norm1.backward(sa(dh)), dmemory   # forward: h = x + sa(norm1(x))
        dt = self.norm3.backward(dy)                           # forward: y = norm3(t), t = g + ff(g)
        dg = dt + ff(dt)
        ds = self.norm2.backward(dg)                           # forward: g = norm2(s), s = h + ca(h, memory)
        dh_ca, dmemory = ca(ds)
        dh = ds + dh_ca
        dr = self.norm1.backward(dh)                           # forward: h = norm1(r), r = x + sa(x)
        return dr + sa(dr), dmemory
