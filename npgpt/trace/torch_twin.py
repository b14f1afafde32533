"""`--compare torch`: the traced step again in PyTorch, on the same weights and batch, and beside
every recorded tensor its largest difference from PyTorch's.

The twin is written with torch's functional ops, one small function per npgpt Module class, and
walks the same module tree: TorchTwin.call(module, *inputs) runs the twin of `module` and keeps
what it returned under the module's path, the twin of a parent calling its children through
call() as the npgpt parent calls their forward. Each call works on clones of its floating inputs
whose .grad autograd keeps (retain_grad): the gradient that flowed back into the module's inputs
through this call alone, which is what the npgpt module's backward returned. So forward outputs,
backward outputs, parameter gradients (by parameter name), the clipped gradients and AdamW's
update (torch.optim.AdamW, torch.nn.utils.clip_grad_norm_) are all compared one to one.

Dropout draws other masks in torch, so the comparison needs dropout 0 (`npgpt trace` sets it
and says so). torch is an optional dependency: it is imported inside compare_with_torch.
"""

from __future__ import annotations

import numpy as np

from ..models.gpt import GPT
from ..models.transformer import Transformer
from ..nn import (Activation, Block, CrossEntropyLoss, DecoderLayer, Dropout, Embedding, EncoderLayer,
                  LayerNorm, LearnedPositionalEmbedding, Linear, MultiHeadAttention, MLP,
                  SinusoidalPositionalEncoding, Softmax, TiedHead)


class TorchTwin:
    """The PyTorch twin of an npgpt model (GPT or Transformer) for one step (see the module
    docstring). outputs[path]: the torch outputs of each call; inputs[path]: the cloned inputs."""

    def __init__(self, torch, model, weights: dict | None = None):
        """weights: {parameter name: array} to start from (default: the model's values now)."""
        self.torch, self.F = torch, torch.nn.functional
        self.model = model
        self.paths = {}
        for path, module in model.named_modules():
            self.paths.setdefault(id(module), path)
        self.names = {id(p): name for name, p in model.named_parameters()}
        weights = weights if weights is not None else model.state_dict()
        self.leaves = {name: torch.tensor(np.array(weights[name]), requires_grad=p.requires_grad)
                       for name, p in model.named_parameters()}
        self.outputs: dict = {}
        self.inputs: dict = {}

    def w(self, parameter):
        """The torch leaf of an npgpt Parameter (None for None)."""
        return None if parameter is None else self.leaves[self.names[id(parameter)]]

    def tensor(self, a):
        return a if a is None or isinstance(a, self.torch.Tensor) else self.torch.from_numpy(np.asarray(a))

    def call(self, module, *inputs, **kw):
        """The twin of module on inputs, recorded under module's path."""
        torch = self.torch
        path = self.paths[id(module)]
        clones = []
        for x in inputs:
            if isinstance(x, torch.Tensor) and x.is_floating_point() and x.requires_grad:
                x = x.clone()
                x.retain_grad()
            clones.append(x)
        fn = next((TWINS[k] for k in type(module).__mro__ if k in TWINS), None)
        if fn is None:
            raise TypeError(f"--compare torch: no PyTorch twin for {type(module).__name__} ({path!r}): "
                            f"expected a GPT or a Transformer made of npgpt.nn layers")
        out = fn(self, module, *clones, **kw)
        self.outputs.setdefault(path, []).append(out)
        self.inputs.setdefault(path, []).append(clones)
        return out


# -- the twins, one per Module class ---------------------------------------------------------------

def _linear(t, m, x):
    y = x @ t.w(m.weight)
    return y if m.bias is None else y + t.w(m.bias)


def _layernorm(t, m, x):
    return t.F.layer_norm(x, (m.n,), t.w(m.weight), t.w(m.bias), m.eps)


def _activation(t, m, x):
    if m.name == "relu":
        return t.F.relu(x)
    return t.F.gelu(x, approximate="tanh" if m.name == "gelu_tanh" else "none")


def _dropout(t, m, x):
    if m.training and m.p > 0:
        raise ValueError("--compare torch needs dropout 0: PyTorch draws other dropout masks")
    return x


def _attention(t, m, x, memory=None, key_pad=None, kv_cache=None):
    torch = t.torch
    H = m.n_head
    if m.cross:
        q = t.call(m.q_proj, x)
        k, v = t.call(m.kv_proj, memory).chunk(2, dim=-1)
    else:
        q, k, v = t.call(m.c_attn, x).chunk(3, dim=-1)
    split = lambda z: z.reshape(z.shape[0], z.shape[1], H, -1).transpose(1, 2)   # noqa: E731  (B, H, T, D)
    q, k, v = split(q), split(k), split(v)
    s = q @ k.transpose(-1, -2) / float(np.sqrt(q.shape[-1]))                   # (B, H, Tq, Tk)
    Tq, Tk = s.shape[-2:]
    hidden = torch.zeros(Tq, Tk, dtype=torch.bool)
    if m.causal:
        hidden = torch.ones(Tq, Tk, dtype=torch.bool).triu(diagonal=Tk - Tq + 1)
    if key_pad is not None:
        hidden = hidden | torch.from_numpy(np.asarray(key_pad))[:, None, None, :]
    att = torch.softmax(s.masked_fill(hidden, float("-inf")), dim=-1)
    if m.training and m.dropout > 0:
        raise ValueError("--compare torch needs dropout 0: PyTorch draws other dropout masks")
    y = (att @ v).transpose(1, 2).reshape(x.shape[0], Tq, -1)                   # (B, T, C)
    return t.call(m.c_proj, y)


def _mlp(t, m, x):
    return t.call(m.c_proj, t.call(m.drop, t.call(m.act, t.call(m.c_fc, x))))


def _block(t, m, x, kv_cache=None):
    h = x + t.call(m.drop_1, t.call(m.attn, t.call(m.ln_1, x)))
    return h + t.call(m.drop_2, t.call(m.mlp, t.call(m.ln_2, h)))


def _encoder_layer(t, m, x, src_pad=None):
    sa = lambda z: t.call(m.dropout1, t.call(m.self_attn, z, key_pad=src_pad))   # noqa: E731
    ff = lambda z: t.call(m.dropout2, t.call(m.ff, z))                          # noqa: E731
    if m.norm_first:
        h = x + sa(t.call(m.norm1, x))
        return h + ff(t.call(m.norm2, h))
    h = t.call(m.norm1, x + sa(x))
    return t.call(m.norm2, h + ff(h))


def _decoder_layer(t, m, x, memory, tgt_pad=None, src_pad=None, kv_cache=None, memory_cache=None):
    sa = lambda z: t.call(m.dropout1, t.call(m.self_attn, z, key_pad=tgt_pad))              # noqa: E731
    ca = lambda z: t.call(m.dropout2, t.call(m.cross_attn, z, memory, key_pad=src_pad))     # noqa: E731
    ff = lambda z: t.call(m.dropout3, t.call(m.ff, z))                                     # noqa: E731
    if m.norm_first:
        h = x + sa(t.call(m.norm1, x))
        g = h + ca(t.call(m.norm2, h))
        return g + ff(t.call(m.norm3, g))
    h = t.call(m.norm1, x + sa(x))
    g = t.call(m.norm2, h + ca(h))
    return t.call(m.norm3, g + ff(g))


def _embedding(t, m, idx, name="idx"):
    return t.w(m.weight)[t.torch.from_numpy(np.asarray(idx, dtype=np.int64))]


def _learned_positions(t, m, T, offset=0):
    return t.w(m.weight)[offset:offset + T]


def _sinusoidal(t, m, T, offset=0):
    return t.torch.from_numpy(m.table[offset:offset + T].copy())


def _tied_head(t, m, x):
    y = x @ t.w(m.weight).T
    return y if m.bias is None else y + t.w(m.bias)


def _loss(t, m, logits, targets):
    V = logits.shape[-1]
    y = t.torch.from_numpy(np.asarray(targets, dtype=np.int64)).reshape(-1)
    return t.F.cross_entropy(logits.reshape(-1, V), y, ignore_index=m.ignore_index,
                             label_smoothing=m.label_smoothing)


def _softmax(t, m, x):
    return t.torch.softmax(x, dim=m.axis)


def _gpt(t, m, idx, targets=None, kv_caches=None):
    x = t.call(m.drop, t.call(m.wte, idx) + t.call(m.wpe, idx.shape[1]))
    for block in m.h:
        x = t.call(block, x)
    logits = t.call(m.lm_head, t.call(m.ln_f, x))
    return logits, (None if targets is None else t.call(m.loss_fn, logits, targets))


def _transformer(t, m, src, tgt_in, tgt_out=None, src_pad=None, tgt_pad=None):
    pad = m.config.pad_id
    src_pad = src == pad if src_pad is None else src_pad
    tgt_pad = tgt_in == pad if tgt_pad is None else tgt_pad
    scale = float(m.emb_scale)
    x = t.call(m.src_drop, t.call(m.src_embed, src, "src") * scale + t.call(m.pos, src.shape[1]))
    for layer in m.encoder:
        x = t.call(layer, x, src_pad=src_pad)
    memory = t.call(m.encoder_norm, x)
    y = t.call(m.tgt_drop, t.call(m.tgt_embed, tgt_in, "tgt_in") * scale + t.call(m.pos, tgt_in.shape[1]))
    for layer in m.decoder:
        y = t.call(layer, y, memory, tgt_pad=tgt_pad, src_pad=src_pad)
    logits = t.call(m.generator, t.call(m.decoder_norm, y))
    return logits, (None if tgt_out is None else t.call(m.loss_fn, logits, tgt_out))


TWINS = {Linear: _linear, LayerNorm: _layernorm, Activation: _activation, Dropout: _dropout,
         MultiHeadAttention: _attention, MLP: _mlp, Block: _block, EncoderLayer: _encoder_layer,
         DecoderLayer: _decoder_layer, Embedding: _embedding, LearnedPositionalEmbedding: _learned_positions,
         SinusoidalPositionalEncoding: _sinusoidal, TiedHead: _tied_head, CrossEntropyLoss: _loss,
         Softmax: _softmax, GPT: _gpt, Transformer: _transformer}
