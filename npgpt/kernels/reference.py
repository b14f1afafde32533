"""The NumPy reference kernels: the readable definition of every hot operation.

Every other backend (kernels/cpu/, kernels/cuda.py) exposes these functions with these
signatures and is tested equal to them. Nothing here is clever: each line is the formula.

Here too, once for every backend, the cache types (what a forward hands its backward) and the
argument checks a kernel and its NumPy twin run before any work, so that both raise the same
errors. The twins of the fused kernels (LayerNorm, GELU, cross-entropy, the embedding's
scatter-add) are the pure functions of npgpt/nn, which import their cache types from here.

Shapes: q (B, H, Tq, D); k, v (B, H, Tk, D); key_pad (B, Tk) bool, True where a key is padding.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

__all__ = ["matmul", "matmul_add", "attention_forward", "attention_backward", "attention_decode",
           "attention_mask", "erf"]


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b for (..., M, K) @ (K, N) or batched (..., M, K) @ (..., K, N).

    With a 2-D b the leading axes of a are flattened first, (B, T, K) -> (B*T, K): one product
    instead of one per (T, K) slice, which is what np.matmul would do, repacking b for each
    (for GPT-2's head, a fifth of the time saved: benchmarks/results/threads.md).
    """
    check_matmul_args(a, b)
    if b.ndim == 2 and a.ndim > 2:
        out = np.matmul(a.reshape(-1, a.shape[-1]), b)              # (..., M, K) -> (M', K) @ (K, N)
        return out.reshape(a.shape[:-1] + (b.shape[1],))           # (M', N) -> (..., M, N)
    return np.matmul(a, b)


def check_matmul_args(a, b) -> None:
    """The errors every backend's matmul raises before it computes anything."""
    if not isinstance(a, np.ndarray) or not isinstance(b, np.ndarray):
        raise TypeError(f"matmul: a is {type(a).__name__} and b {type(b).__name__}: expected np.ndarray")
    if a.ndim < 2 or b.ndim < 2:
        raise ValueError(f"matmul: a has shape {a.shape} and b {b.shape}: expected at least 2-D arrays")
    if a.shape[-1] != b.shape[-2]:
        raise ValueError(f"matmul: a has shape {a.shape} and b {b.shape}: "
                         f"expected a.shape[-1] == b.shape[-2]")
    if a.dtype != b.dtype:
        raise TypeError(f"matmul: a has dtype {a.dtype} and b {b.dtype}: expected the same dtype")


def check_matmul_add(c, a, b) -> None:
    """Raise a clear error unless c += a @ b fits: 2-D arrays of one float dtype, c (M, N)."""
    for name, t in (("c", c), ("a", a), ("b", b)):
        if not isinstance(t, np.ndarray) or t.ndim != 2:
            raise ValueError(f"matmul_add: {name} has shape {getattr(t, 'shape', type(t).__name__)}: "
                             f"expected a 2-D array")
    if not (c.dtype == a.dtype == b.dtype) or c.dtype not in (np.float32, np.float64):
        raise TypeError(f"matmul_add: c, a, b have dtypes {c.dtype}, {a.dtype}, {b.dtype}: expected "
                        f"one dtype, float32 or float64")
    if a.shape[1] != b.shape[0] or c.shape != (a.shape[0], b.shape[1]):
        raise ValueError(f"matmul_add: c has shape {c.shape}, a {a.shape}, b {b.shape}: expected "
                         f"(M, N), (M, K), (K, N)")


def matmul_add(c: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """c += a @ b in place, for 2-D arrays; returns c.

    What a layer's backward does to add a weight's gradient into its .grad. Here it is the
    formula, with a temporary a @ b; a backend may do it as one product with no temporary.
    """
    check_matmul_add(c, a, b)
    c += matmul(a, b)
    return c


_erf_object = np.frompyfunc(math.erf, 1, 1)


def erf(x: np.ndarray) -> np.ndarray:
    """The error function elementwise, exact to the last bit of libm's erf (slow: one Python call
    per element; the Numba backend vectorises it)."""
    return _erf_object(x).astype(x.dtype)


def attention_mask(Tq: int, Tk: int, causal: bool, key_pad: np.ndarray | None):
    """The boolean mask of the scores, True where a query may NOT look, or None for no mask.

    causal: query i sees keys j <= i + (Tk - Tq): with Tq < Tk (decoding with a KV cache) the last
    query lines up with the last key. key_pad (B, Tk): True keys are hidden from every query.
    Returns an array that broadcasts against (B, H, Tq, Tk).
    """
    mask = None
    if causal:
        mask = np.triu(np.ones((Tq, Tk), dtype=bool), k=Tk - Tq + 1)    # (Tq, Tk)
    if key_pad is not None:
        pad = key_pad[:, None, None, :]                                  # (B, 1, 1, Tk)
        mask = pad if mask is None else (mask | pad)
    return mask


def key_bias(key_pad: np.ndarray | None, B: int, Tk: int, dtype) -> np.ndarray:
    """(B, Tk): 0 where a key is visible, -inf where key_pad hides it: the padding part of the
    mask as a bias added to the scores, the form the fused kernels take (cpu/attention.py,
    cuda.py)."""
    bias = np.zeros((B, Tk), dtype=dtype)
    if key_pad is not None:
        bias[key_pad] = -np.inf
    return bias


def check_attention_args(q, k, v, key_pad=None, causal=False) -> None:
    """Raise a clear error before any work if the attention inputs do not fit together."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, np.ndarray) or t.ndim != 4:
            raise ValueError(f"attention: {name} has shape {getattr(t, 'shape', type(t))}: "
                             f"expected a 4-D array (B, H, T, D)")
        if t.dtype not in (np.float32, np.float64):
            raise TypeError(f"attention: {name} has dtype {t.dtype}: expected float32 or float64")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"attention: q, k, v have dtypes {q.dtype}, {k.dtype}, {v.dtype}: expected one dtype")
    B, H, Tq, D = q.shape
    if k.shape[:2] != (B, H) or k.shape[3] != D:
        raise ValueError(f"attention: k has shape {k.shape}: expected (B, H, Tk, D) = ({B}, {H}, Tk, {D})")
    if v.shape != k.shape:
        raise ValueError(f"attention: v has shape {v.shape}: expected the shape of k, {k.shape}")
    Tk = k.shape[2]
    if causal and Tq > Tk:
        raise ValueError(f"attention: causal with {Tq} queries and {Tk} keys: expected Tq <= Tk")
    if key_pad is not None:
        if not isinstance(key_pad, np.ndarray) or key_pad.dtype != np.bool_ or key_pad.shape != (B, Tk):
            raise ValueError(f"attention: key_pad has shape {getattr(key_pad, 'shape', None)} and dtype "
                             f"{getattr(key_pad, 'dtype', None)}: expected a bool array of shape ({B}, {Tk})")


class AttentionCache(NamedTuple):
    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    att: np.ndarray               # (B, H, Tq, Tk) softmax probabilities, before dropout
    keep: np.ndarray | None       # (B, H, Tq, Tk) dropout mask already scaled by 1/(1-p), or None
    scale: float                  # 1 / sqrt(D)


class FlashAttentionCache(NamedTuple):
    """The cache of the fused attention kernels (cpu/attention.py, cuda.py): the inputs, the
    output and one number per query row, the log-sum-exp, from which the backward recomputes
    the probabilities."""
    q: np.ndarray          # (B, H, Tq, D) C-contiguous
    k: np.ndarray          # (B, H, Tk, D)
    v: np.ndarray          # (B, H, Tk, D)
    out: np.ndarray        # (B, H, Tq, D)
    lse: np.ndarray        # (B, H, Tq) log sum_j exp(s_ij) over visible keys; -inf for a row with none
    key_bias: np.ndarray   # (B, Tk) 0 for a visible key, -inf for a padded one (key_bias())
    causal: bool
    scale: float           # 1 / sqrt(D)


class SoftmaxAttentionCache(NamedTuple):
    """The cache of the Numba backend's short-sequence attention (batched BLAS around a softmax,
    kernels/cpu/attention.py): it keeps the (Tq, Tk) probabilities, as the reference does."""
    q: np.ndarray          # (B, H, Tq, D)
    k: np.ndarray          # (B, H, Tk, D)
    v: np.ndarray          # (B, H, Tk, D)
    att: np.ndarray        # (B, H, Tq, Tk) softmax probabilities (0 where hidden)
    scale: float           # 1 / sqrt(D)


def attention_forward(q, k, v, causal=True, key_pad=None, dropout_p=0.0, rng=None):
    """Scaled dot-product attention, the definition.

        s   = q @ k^T / sqrt(D) + mask     (B, H, Tq, Tk); mask is -inf where hidden
        att = softmax(s) over keys         a row whose every key is hidden gets att = 0
        out = dropout(att) @ v             (B, H, Tq, D)

    dropout_p > 0 drops attention probabilities (as GPT-2 and torch.nn.MultiheadAttention do),
    with the mask drawn from `rng`. cache: AttentionCache (it holds the (Tq, Tk) probabilities:
    the fused backends keep only a row log-sum-exp instead).
    """
    check_attention_args(q, k, v, key_pad, causal)
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    scale = 1.0 / math.sqrt(D)
    s = (q @ k.transpose(0, 1, 3, 2)) * q.dtype.type(scale)         # (B, H, Tq, Tk)
    mask = attention_mask(Tq, Tk, causal, key_pad)
    if mask is not None:
        s = np.where(mask, -np.inf, s)
    m = s.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)                                # all-hidden row: no shift
    e = np.exp(s - m)
    z = e.sum(axis=-1, keepdims=True)
    att = e / np.where(z > 0, z, 1)                                   # all-hidden row: zeros
    keep = None
    if dropout_p > 0:
        if rng is None:
            raise ValueError("attention: dropout_p > 0 needs rng, a np.random.Generator")
        keep = (rng.random(att.shape) >= dropout_p).astype(q.dtype) / q.dtype.type(1 - dropout_p)
        out = (att * keep) @ v
    else:
        out = att @ v
    return out, AttentionCache(q, k, v, att, keep, scale)


def attention_backward(dout, cache: AttentionCache):
    """Gradients of attention_forward: (dq, dk, dv).

        forward: out = a @ v,  a = att * keep          ->  dv = a^T @ dout,  da = dout @ v^T
        forward: a = att * keep                        ->  datt = da * keep
        forward: att = softmax(s)                      ->  ds = att * (datt - sum_k(datt * att))
        forward: s = q @ k^T * scale                   ->  dq = ds @ k * scale,  dk = ds^T @ q * scale
    Masked scores have att = 0, so they pass no gradient.
    """
    q, k, v, att, keep, scale = cache
    a = att if keep is None else att * keep
    dv = a.transpose(0, 1, 3, 2) @ dout                              # (B, H, Tk, D)
    datt = dout @ v.transpose(0, 1, 3, 2)                            # (B, H, Tq, Tk)
    if keep is not None:
        datt = datt * keep
    ds = att * (datt - (datt * att).sum(axis=-1, keepdims=True))
    ds *= q.dtype.type(scale)
    dq = ds @ k                                                      # (B, H, Tq, D)
    dk = ds.transpose(0, 1, 3, 2) @ q                                # (B, H, Tk, D)
    return dq, dk, dv


def attention_decode(q, k_cache, v_cache, length: int):
    """Attention while decoding with a KV cache: the Tq newest of `length` positions attend to
    all positions up to their own.

        out = attention_forward(q, k_cache[:, :, :length], v_cache[:, :, :length], causal=True)

    q: (B, H, Tq, D), the queries of positions length-Tq .. length-1; k_cache, v_cache:
    (B, H, capacity, D), whose first `length` positions are filled (nn.attention.KVCache's
    buffers; the rest is not read). Returns out (B, H, Tq, D) and no cache: inference only.
    """
    check_attention_decode_args(q, k_cache, v_cache, length)
    out, _ = attention_forward(q, k_cache[:, :, :length], v_cache[:, :, :length], causal=True)
    return out


def check_attention_decode_args(q, k_cache, v_cache, length) -> None:
    check_attention_args(q, k_cache, v_cache)
    capacity = k_cache.shape[2]
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) \
            or not q.shape[2] <= length <= capacity:
        raise ValueError(f"attention_decode: length={length!r}: expected an int in [Tq={q.shape[2]}, "
                         f"the cache's capacity {capacity}]")


# ---------------------------------------------------------------------------------------------
# The fused kernels and their NumPy twins (npgpt/nn): one cache type and one check for both
# ---------------------------------------------------------------------------------------------

class LayerNormCache(NamedTuple):
    """What npgpt.nn.norm.layernorm_forward, and every backend's fused twin, hands its backward."""
    x: np.ndarray
    w: np.ndarray
    mu: np.ndarray      # (..., 1) mean of each row
    rstd: np.ndarray    # (..., 1) 1 / sqrt(var + eps)
    has_bias: bool


class CrossEntropyCache(NamedTuple):
    """What npgpt.nn.loss.cross_entropy_forward, and every backend's fused twin, hands its backward."""
    logits: np.ndarray     # (N, V), the rows of the input
    lse: np.ndarray        # (N, 1) log-sum-exp of each row: log p = logits - lse
    targets: np.ndarray    # (N,) int64
    valid: np.ndarray      # (N,) bool, False where targets == ignore_index
    n_valid: int
    label_smoothing: float
    shape: tuple           # the shape of the logits as given, (..., V)


def check_float_array(name: str, x) -> None:
    """x must be a float32 or float64 array of at least one dimension."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} is a {type(x).__name__}: expected a numpy array")
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name} has dtype {x.dtype} and shape {x.shape}: expected a float32 or "
                        f"float64 array")
    if x.ndim == 0:
        raise ValueError(f"{name} has shape (): expected at least one dimension")


def check_like(name: str, a, shape, dtype, what: str) -> None:
    """a must be an array of exactly this shape and dtype (`what` says why, for the message)."""
    if not isinstance(a, np.ndarray) or a.shape != tuple(shape) or a.dtype != dtype:
        raise ValueError(f"{name} has shape {getattr(a, 'shape', None)} and dtype "
                         f"{getattr(a, 'dtype', None)}: expected {tuple(shape)} {np.dtype(dtype)}, {what}")


def check_layernorm_args(x, w, b) -> None:
    """x: (..., C) float; w: (C,) and b: (C,) or None, of x's dtype."""
    check_float_array("x", x)
    check_like("w", w, x.shape[-1:], x.dtype, "the LayerNorm weight")
    if b is not None:
        check_like("b", b, x.shape[-1:], x.dtype, "the LayerNorm bias")


def check_cross_entropy_args(logits, targets, ignore_index: int, label_smoothing: float):
    """logits: (..., V) float; targets: (...) integers in [0, V) or ignore_index; 0 <= eps < 1.

    Returns the logits as rows (N, V) and the targets as (N,) int64.
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing={label_smoothing!r}, expected a number in [0, 1)")
    check_float_array("logits", logits)
    V = logits.shape[-1]
    if not isinstance(targets, np.ndarray) or not np.issubdtype(targets.dtype, np.integer):
        raise TypeError(f"targets has dtype {getattr(targets, 'dtype', type(targets).__name__)}: "
                        f"expected an integer array of class ids")
    if targets.shape != logits.shape[:-1]:
        raise ValueError(f"targets has shape {targets.shape}: expected {logits.shape[:-1]}, the "
                         f"logits' shape without V")
    real = targets[targets != ignore_index]
    if real.size and (real.min() < 0 or real.max() >= V):
        bad = int(real.min()) if real.min() < 0 else int(real.max())
        raise ValueError(f"targets contains {bad}: expected ids in [0, {V}) or ignore_index={ignore_index}")
    return logits.reshape(-1, V), targets.astype(np.int64, copy=False).reshape(-1)


def check_embedding_backward_args(dout, idx, V: int, dw_out) -> None:
    """dout: (..., C) float, one row per token id of idx; the ids in [0, V); dw_out: None or a
    C-contiguous (V, C) array of dout's dtype."""
    check_float_array("dout", dout)
    if dout.shape[:-1] != np.shape(idx):
        raise ValueError(f"dout has shape {dout.shape}: expected one row per token id "
                         f"({np.shape(idx)} ids)")
    if dw_out is not None:
        check_like("dw_out", dw_out, (V, dout.shape[-1]), dout.dtype, "the embedding table's gradient")
        if not dw_out.flags.c_contiguous:
            raise ValueError("dw_out is not C-contiguous: expected the table's .grad (or a fresh array)")
    if np.size(idx) and (np.min(idx) < 0 or np.max(idx) >= V):
        raise ValueError(f"token ids out of range [0, {V}): min {np.min(idx)}, max {np.max(idx)}")
