"""Multi-head attention: causal self-attention (GPT), self-attention (encoder), cross-attention.

The core, softmax(q k^T / sqrt(D) + mask) v and its backward, is a kernel
(`npgpt.kernels.get("attention_forward")`; its readable definition is
kernels/reference.py). This file adds what makes it multi-head: the projections, and the
reshapes that split the width C into H heads of size D = C / H and merge them back.
"""

from __future__ import annotations

import math

import numpy as np

from .. import kernels
from .linear import Linear
from .module import Module, as_dtype
from .validate import check_array


def split_heads(x, n_head: int):
    """(B, T, C) -> (B, H, T, D), contiguous (the kernels want per-head rows in memory)."""
    B, T, C = x.shape
    return np.ascontiguousarray(x.reshape(B, T, n_head, C // n_head).transpose(0, 2, 1, 3))


def merge_heads(x):
    """(B, H, T, D) -> (B, T, C): the inverse of split_heads (and its own backward's inverse)."""
    B, H, T, D = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, T, H * D)


def split_qkv_heads(qkv, n_head: int):
    """(B, T, 3C) -> q, k, v, each (B, H, T, D) and contiguous: split_heads of each third, in one
    copy (the three are slices of one (3, B, H, T, D) array)."""
    B, T, C3 = qkv.shape
    heads = qkv.reshape(B, T, 3, n_head, C3 // (3 * n_head)).transpose(2, 0, 3, 1, 4)  # (3, B, H, T, D)
    q, k, v = np.ascontiguousarray(heads)
    return q, k, v


def merge_qkv_heads(dq, dk, dv):
    """Three (B, H, T, D) -> (B, T, 3C): merge_heads of each, side by side, written straight into
    one array (no concatenate of three merged copies)."""
    B, H, T, D = dq.shape
    out = np.empty((B, T, 3, H, D), dtype=dq.dtype)
    for i, d in enumerate((dq, dk, dv)):
        out[:, :, i] = d.transpose(0, 2, 1, 3)                  # (B, H, T, D) -> (B, T, H, D)
    return out.reshape(B, T, 3 * H * D)


class KVCache:
    """The keys and values of the positions seen so far, for one attention layer at inference.

    Self-attention: each call appends the new positions' keys and values, so generating token t
    costs one query against t cached keys instead of recomputing all t positions.
    Cross-attention: the first call stores the memory's projected keys and values, the next
    ones reuse them (the memory does not change while a sequence is decoded).
    `reorder(index)` follows the surviving hypotheses of a beam search.

    The keys and values live in buffers (B, H, capacity, D) that are written in place: appending
    a position copies only that position, where concatenating would copy every cached one again
    (O(T^2) over a generation). capacity: the positions to make room for at the first append
    (GPT.generate passes block_size); when the buffers fill up, they are replaced by ones twice
    as long. k_buffer, v_buffer are the buffers; k and v the filled part (views).
    """

    def __init__(self, capacity: int | None = None):
        self.capacity = capacity
        self.k_buffer = self.v_buffer = None
        self.length = 0

    @property
    def k(self):
        return None if self.k_buffer is None else self.k_buffer[:, :, :self.length]

    @property
    def v(self):
        return None if self.v_buffer is None else self.v_buffer[:, :, :self.length]

    def append(self, k, v):
        """Add (B, H, T_new, D) keys and values; return all of them so far (views)."""
        n = k.shape[2]
        if self.k_buffer is None or self.length + n > self.k_buffer.shape[2]:
            self._grow(k, self.length + n)
        self.k_buffer[:, :, self.length:self.length + n] = k
        self.v_buffer[:, :, self.length:self.length + n] = v
        self.length += n
        return self.k, self.v

    def _grow(self, k, needed: int) -> None:
        """New buffers with room for `needed` positions (at least capacity, at least twice the
        old), the cached positions copied over."""
        old = 0 if self.k_buffer is None else self.k_buffer.shape[2]
        size = max(needed, self.capacity or 0, 2 * old)
        B, H, _, D = k.shape
        k_new, v_new = (np.empty((B, H, size, D), dtype=k.dtype) for _ in range(2))
        if old:
            k_new[:, :, :self.length], v_new[:, :, :self.length] = self.k, self.v
        self.k_buffer, self.v_buffer = k_new, v_new

    def reorder(self, index) -> None:
        if self.k_buffer is not None:
            self.k_buffer, self.v_buffer = self.k_buffer[index], self.v_buffer[index]


class MultiHeadAttention(Module):
    """Multi-head attention with H heads over a width C.

    Self-attention (cross=False): one projection c_attn: (C, 3C) gives q, k, v from x, as GPT-2
    lays it out. Cross-attention (cross=True): q_proj: (C, C) from x, kv_proj: (C, 2C) from the
    encoder's output `memory`. Then the attention kernel per head, merge the heads, c_proj: (C, C).

    forward (cross=False):
        q, k, v = split(x @ W_attn + b_attn)              (B, T, 3C) -> 3 x (B, H, T, D)
    forward (cross=True):
        q = x @ W_q + b_q,   k, v = split(memory @ W_kv + b_kv)
    forward:
        head_h = softmax(q_h k_h^T / sqrt(D) + mask) v_h  mask: -inf at hidden keys
        y = concat(head_1 .. head_H) @ W_o + b_o
    backward:
        dhead = c_proj'(dy),   dv = att^T @ dhead,   datt = dhead @ v^T      per head
        ds = att * (datt - sum_k(datt * att)),   dq = ds @ k / sqrt(D),   dk = ds^T @ q / sqrt(D)
    backward (cross=False):
        dx = c_attn'([dq | dk | dv])
    backward (cross=True):
        dx = q_proj'(dq),   dmemory = kv_proj'([dk | dv])

    dropout is applied to the attention probabilities (drawn from `rng`) in training mode;
    causal (default: True for self-attention, False for cross) hides later positions;
    key_pad (B, Tk) hides padded keys.
    """

    def __init__(self, n_embd: int, n_head: int, *, causal: bool | None = None, cross: bool = False,
                 bias: bool = True, dropout: float = 0.0, dtype="float32",
                 rng: np.random.Generator | None = None, std: float = 0.02,
                 proj_std: float | None = None, dropout_rng: np.random.Generator | None = None):
        super().__init__()
        if n_embd % n_head:
            raise ValueError(f"MultiHeadAttention: n_embd={n_embd} is not divisible by n_head={n_head}: "
                             f"expected n_embd % n_head == 0")
        if causal is None:
            causal = not cross
        elif causal and cross:
            raise ValueError("MultiHeadAttention: causal=True with cross=True: expected causal=False "
                             "(the decoder may see every encoder position)")
        rng = rng if rng is not None else np.random.default_rng(0)
        kw = dict(bias=bias, dtype=dtype, rng=rng, std=std)
        self.n_embd, self.n_head, self.causal, self.cross = n_embd, n_head, causal, cross
        self.dropout = dropout
        self.dtype = as_dtype(dtype)
        if cross:
            self.q_proj = Linear(n_embd, n_embd, **kw)
            self.kv_proj = Linear(n_embd, 2 * n_embd, **kw)
        else:
            self.c_attn = Linear(n_embd, 3 * n_embd, **kw)
        self.c_proj = Linear(n_embd, n_embd, **{**kw, "std": std if proj_std is None else proj_std})
        self.rng = dropout_rng if dropout_rng is not None else np.random.default_rng(0)
        self._cache = None

    def forward(self, x, memory=None, key_pad=None, kv_cache: KVCache | None = None):
        """x: (B, T, C); memory: (B, S, C) for cross-attention; key_pad: (B, Tk) bool.

        With kv_cache (inference only; nothing is kept for a backward): self-attention appends
        the new keys and values to it and the queries of x attend to every cached position;
        cross-attention projects the memory into it at the first call and reuses it after.
        """
        check_array("x", x, dtype=self.dtype, ndim=3, last_dim=self.n_embd)
        if self.cross:
            q, k, v = self._cross_qkv(x, memory, kv_cache)               # 3 x (B, H, T, D)
        else:
            q, k, v = split_qkv_heads(self.c_attn.forward(x), self.n_head)   # (B, T, 3C) -> 3 x (B, H, T, D)
            if kv_cache is not None and self.causal and key_pad is None:
                # decoding: the new positions attend to the cache's buffers where they lie
                kv_cache.append(k, v)
                out = kernels.get("attention_decode")(q, kv_cache.k_buffer, kv_cache.v_buffer, kv_cache.length)
                self._cache = None
                return self.c_proj.forward(merge_heads(out))             # (B, H, T, D) -> (B, T, C)
            if kv_cache is not None:
                k, v = kv_cache.append(k, v)
        p = self.dropout if self.training and kv_cache is None else 0.0
        out, attn_cache = kernels.get("attention_forward")(
            q, k, v, causal=self.causal, key_pad=key_pad, dropout_p=p, rng=self.rng)
        y = self.c_proj.forward(merge_heads(out))                    # (B, H, T, D) -> (B, T, C)
        self._cache = None if kv_cache is not None else attn_cache
        return y

    def _cross_qkv(self, x, memory, kv_cache: KVCache | None):
        """q from x; k, v from memory, or from kv_cache once it holds them."""
        H = self.n_head
        if memory is None:
            raise ValueError("cross-attention needs memory, the encoder output (B, S, C)")
        check_array("memory", memory, dtype=self.dtype, ndim=3, last_dim=self.n_embd)
        if memory.shape[0] != x.shape[0]:
            raise ValueError(f"memory has batch size {memory.shape[0]}: expected {x.shape[0]}, as x")
        q = split_heads(self.q_proj.forward(x), H)                   # (B, T, C) -> (B, H, T, D)
        if kv_cache is not None and kv_cache.length:
            return q, kv_cache.k, kv_cache.v                         # the memory, projected before
        k, v = np.split(self.kv_proj.forward(memory), 2, axis=-1)    # (B, S, 2C) -> 2 x (B, S, C)
        k, v = split_heads(k, H), split_heads(v, H)                  # (B, H, S, D)
        if kv_cache is not None:
            kv_cache.append(k, v)
        return q, k, v

    def backward(self, dout, need_dx=True):
        """Returns dx for self-attention, (dx, dmemory) for cross-attention."""
        if self._cache is None:
            raise RuntimeError("MultiHeadAttention.backward: no forward to differentiate "
                               "(forward with a kv_cache keeps nothing)")
        dout_heads = split_heads(self.c_proj.backward(dout), self.n_head)    # (B, H, T, D)
        dq, dk, dv = kernels.get("attention_backward")(dout_heads, self._cache)
        if self.cross:
            dq, dk, dv = merge_heads(dq), merge_heads(dk), merge_heads(dv)  # 3 x (B, T, C)
            # the forward's order reversed: kv_proj (from memory) ran after q_proj (from x)
            dmemory = self.kv_proj.backward(np.concatenate([dk, dv], axis=-1))
            dx = self.q_proj.backward(dq, need_dx=need_dx)
            return dx, dmemory
        # forward: q, k, v = split(x @ W_attn + b)  ->  the three gradients side by side
        return self.c_attn.backward(merge_qkv_heads(dq, dk, dv), need_dx=need_dx)   # (B, T, 3C)

    def extra_repr(self):
        kind = "cross" if self.cross else ("causal" if self.causal else "bidirectional")
        return f"{self.n_embd}, n_head={self.n_head}, {kind}"


def scaled_init_std(n_layer: int, std: float = 0.02) -> float:
    """GPT-2's init for projections into the residual stream: std / sqrt(2 * n_layer), since each
    of the 2 n_layer residual branches adds its variance to the stream."""
    return std / math.sqrt(2 * n_layer)
