"""PyTorch twins of npgpt's layers: the same computation on the same weights, for autograd to check.

Each twin takes the npgpt module (to read its weights and fixed arguments) and torch inputs and
returns (output tensor, {npgpt parameter name: function returning the torch gradient as an
array in npgpt's layout}). Weights are copied, never shared, so the two sides are independent.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def leaf(a) -> torch.Tensor:
    return torch.tensor(np.array(a), requires_grad=True)


def functional(fn):
    """A twin written with torch.nn.functional over leaf copies of every npgpt parameter."""
    def twin(module, *inputs):
        P = {name.replace("inner.", ""): leaf(p.data) for name, p in module.named_parameters()}
        out = fn(module, P, *inputs)
        return out, {name: (lambda t=t: t.grad.numpy()) for name, t in P.items()}
    return twin


def split_heads(x, H):
    B, T, C = x.shape
    return x.reshape(B, T, H, C // H).transpose(1, 2)


def merge_heads(x):
    B, H, T, D = x.shape
    return x.transpose(1, 2).reshape(B, T, H * D)


def sdpa(q, k, v, H, causal, key_pad):
    """Multi-head attention core with torch's scaled_dot_product_attention (mask: True = attend)."""
    mask = None
    if key_pad is not None:
        mask = ~torch.from_numpy(key_pad)[:, None, None, :]
    if causal:
        Tq, Tk = q.shape[1], k.shape[1]
        tri = torch.ones(Tq, Tk, dtype=torch.bool).tril(diagonal=Tk - Tq)
        mask = tri if mask is None else (mask & tri)
    out = F.scaled_dot_product_attention(split_heads(q, H), split_heads(k, H), split_heads(v, H),
                                         attn_mask=mask)
    return merge_heads(out)


def self_attention(m, P, x, prefix="", key_pad=None):
    qkv = x @ P[prefix + "c_attn.weight"] + P[prefix + "c_attn.bias"]
    q, k, v = qkv.split(m.n_embd, dim=-1)
    y = sdpa(q, k, v, m.n_head, m.causal, key_pad)
    return y @ P[prefix + "c_proj.weight"] + P[prefix + "c_proj.bias"]


def layer_norm(P, x, prefix, eps=1e-5):
    return F.layer_norm(x, x.shape[-1:], P[prefix + ".weight"], P[prefix + ".bias"], eps)


@functional
def attention(m, P, x, memory=None):
    m_inner = getattr(m, "inner", m)
    key_pad = getattr(m, "fixed", {}).get("key_pad")
    if not m_inner.cross:
        return self_attention(m_inner, P, x, key_pad=key_pad)
    q = x @ P["q_proj.weight"] + P["q_proj.bias"]
    k, v = (memory @ P["kv_proj.weight"] + P["kv_proj.bias"]).split(m_inner.n_embd, dim=-1)
    return sdpa(q, k, v, m_inner.n_head, False, key_pad) @ P["c_proj.weight"] + P["c_proj.bias"]


@functional
def gpt_block(m, P, x):
    h = x + self_attention(m.attn, P, layer_norm(P, x, "ln_1"), prefix="attn.")
    z = layer_norm(P, h, "ln_2") @ P["mlp.c_fc.weight"] + P["mlp.c_fc.bias"]
    return h + F.gelu(z, approximate="tanh") @ P["mlp.c_proj.weight"] + P["mlp.c_proj.bias"]


# npgpt name -> (torch name, rows of the torch tensor or None, transpose?) for the encoder and
# decoder layers; torch keeps Linear weights (out, in) and fuses q, k, v into in_proj.
def _layer_map(C, cross):
    m = {
        "self_attn.c_attn.weight": ("self_attn.in_proj_weight", None, True),
        "self_attn.c_attn.bias": ("self_attn.in_proj_bias", None, False),
        "self_attn.c_proj.weight": ("self_attn.out_proj.weight", None, True),
        "self_attn.c_proj.bias": ("self_attn.out_proj.bias", None, False),
        "ff.c_fc.weight": ("linear1.weight", None, True), "ff.c_fc.bias": ("linear1.bias", None, False),
        "ff.c_proj.weight": ("linear2.weight", None, True), "ff.c_proj.bias": ("linear2.bias", None, False),
    }
    for i in (1, 2, 3) if cross else (1, 2):
        m[f"norm{i}.weight"] = (f"norm{i}.weight", None, False)
        m[f"norm{i}.bias"] = (f"norm{i}.bias", None, False)
    if cross:
        m.update({
            "cross_attn.q_proj.weight": ("multihead_attn.in_proj_weight", slice(0, C), True),
            "cross_attn.q_proj.bias": ("multihead_attn.in_proj_bias", slice(0, C), False),
            "cross_attn.kv_proj.weight": ("multihead_attn.in_proj_weight", slice(C, 3 * C), True),
            "cross_attn.kv_proj.bias": ("multihead_attn.in_proj_bias", slice(C, 3 * C), False),
            "cross_attn.c_proj.weight": ("multihead_attn.out_proj.weight", None, True),
            "cross_attn.c_proj.bias": ("multihead_attn.out_proj.bias", None, False),
        })
    return m


def _torch_layer(m, cls):
    """A torch.nn.Transformer{Encoder,Decoder}Layer holding m's weights, and the grad getters."""
    inner = m.inner
    C = inner.norm1.n
    H = inner.self_attn.n_head
    d_ff = inner.ff.c_fc.out_features
    dtype = torch.float64 if inner.norm1.weight.dtype == np.float64 else torch.float32
    layer = cls(C, H, d_ff, dropout=0.0, activation="relu", batch_first=True,
                norm_first=inner.norm_first, dtype=dtype)
    tparams = dict(layer.named_parameters())
    mapping = _layer_map(C, cls is torch.nn.TransformerDecoderLayer)
    with torch.no_grad():
        for name, p in inner.named_parameters():
            tname, rows, transpose = mapping[name]
            value = torch.from_numpy(p.data.T.copy() if transpose else p.data.copy())
            target = tparams[tname] if rows is None else tparams[tname][rows]
            target.copy_(value)

    def getter(name):
        tname, rows, transpose = mapping[name]
        g = tparams[tname].grad
        g = (g if rows is None else g[rows]).numpy()
        return g.T if transpose else g

    return layer, {name: (lambda n=name: getter(n)) for name, _ in inner.named_parameters()}


def encoder_layer(m, x):
    layer, grads = _torch_layer(m, torch.nn.TransformerEncoderLayer)
    pad = torch.from_numpy(m.fixed["src_pad"])
    return layer(x, src_key_padding_mask=pad), grads


def decoder_layer(m, x, memory):
    layer, grads = _torch_layer(m, torch.nn.TransformerDecoderLayer)
    T = x.shape[1]
    causal = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)   # True = hidden
    out = layer(x, memory, tgt_mask=causal, tgt_key_padding_mask=torch.from_numpy(m.fixed["tgt_pad"]),
                memory_key_padding_mask=torch.from_numpy(m.fixed["src_pad"]))
    return out, grads


def cross_entropy(smoothing):
    @functional
    def twin(m, P, x):
        t = torch.from_numpy(m.fixed["targets"]).reshape(-1)
        return F.cross_entropy(x.reshape(-1, x.shape[-1]), t, ignore_index=-100, label_smoothing=smoothing)
    return twin


TWINS = {
    "Linear": functional(lambda m, P, x: x @ P["weight"] + P["bias"]),
    "Linear (no bias)": functional(lambda m, P, x: x @ P["weight"]),
    "Embedding": functional(lambda m, P, idx: F.embedding(idx, P["weight"])),
    "LearnedPositionalEmbedding": functional(lambda m, P, T: P["weight"][:T]),
    "Sinusoidal positions": functional(lambda m, P, idx: F.layer_norm(
        F.embedding(idx, P["tok.weight"]) * float(m.scale)
        + torch.from_numpy(m.pos.forward(idx.shape[1], m.offset)), (m.ln.n,), P["ln.weight"], P["ln.bias"])),
    "LayerNorm": functional(lambda m, P, x: F.layer_norm(x, x.shape[-1:], P["weight"], P["bias"], m.eps)),
    "GELU (erf)": functional(lambda m, P, x: F.gelu(x)),
    "GELU (tanh)": functional(lambda m, P, x: F.gelu(x, approximate="tanh")),
    "ReLU": functional(lambda m, P, x: F.relu(x)),
    "Softmax": functional(lambda m, P, x: F.softmax(x, dim=-1)),
    "Attention (causal)": attention,
    "Attention (padded)": attention,
    "Cross-attention": attention,
    "MLP": functional(lambda m, P, x: F.gelu(x @ P["c_fc.weight"] + P["c_fc.bias"], approximate="tanh")
                      @ P["c_proj.weight"] + P["c_proj.bias"]),
    "Block (GPT, pre-LN)": gpt_block,
    "EncoderLayer (post-LN)": encoder_layer,
    "EncoderLayer (pre-LN)": encoder_layer,
    "DecoderLayer (post-LN)": decoder_layer,
    "DecoderLayer (pre-LN)": decoder_layer,
    "CrossEntropy": cross_entropy(0.0),
    "CrossEntropy (smoothed)": cross_entropy(0.1),
}

# Cases whose output depends on a random mask that torch cannot draw the same way; the
# numerical gradient checks them instead.
NO_TWIN = {"Dropout", "Attention (dropout)"}
