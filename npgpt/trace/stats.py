"""The numbers a trace keeps of a tensor: its shape and dtype, summary statistics, a histogram,
and the fraction of saturated or dead units where that means something.

Every statistic is computed in float64 from the array as it is when the call returns, and
nothing here writes to an array or draws a random number: a traced step computes what an
untraced one does.

    summary(a)           {"shape", "dtype", "mean", "std", "min", "max", "norm", "hist"}
    saturation(m, ...)   {name: fraction}: GELU inputs far below zero, ReLU's dead units,
                         attention and output softmax rows close to one-hot
"""

from __future__ import annotations

import math

import numpy as np

from ..kernels.reference import attention_forward
from ..nn import Activation, CrossEntropyLoss, Dropout, MultiHeadAttention

BINS = 24                 # histogram bins of every summary
GELU_DEAD = -3.0          # GELU'(x) is below 0.012 in size for x < -3: a unit that passes ~nothing
ONE_HOT = 0.99            # a softmax row whose largest probability exceeds this is ~one-hot


def describe(value) -> dict:
    """What a trace says of an argument that is not an array: its type, and its value when
    it is a plain number, string or bool (T, offset, a flag)."""
    if isinstance(value, (bool, int, float, str, np.integer, np.floating)):
        return {"value": value.item() if isinstance(value, np.generic) else value}
    return {"type": type(value).__name__}


def summary(a, bins: int = BINS) -> dict:
    """Shape, dtype and statistics of an array (a float: a 0-d one). Integer and bool arrays
    get their range; float arrays also mean, std, norm and, with more than one element, a
    histogram of `bins` equal bins between min and max (counts; one bin when all are equal)."""
    arr = np.asarray(a)
    out = {"shape": list(arr.shape), "dtype": str(arr.dtype)}
    if arr.size == 0:
        return out
    if arr.dtype.kind in "iub":
        out.update(min=int(arr.min()), max=int(arr.max()))
        return out
    x = arr.astype(np.float64, copy=False).ravel()
    finite = np.isfinite(x)
    if not finite.all():
        out["nonfinite"] = int((~finite).sum())
        x = x[finite]
        if x.size == 0:
            return out
    lo, hi = float(x.min()), float(x.max())
    out.update(mean=float(x.mean()), std=float(x.std()), min=lo, max=hi,
               norm=math.sqrt(float(np.dot(x, x))))
    if x.size > 1:                                     # a scalar (the loss) has no distribution
        counts, _ = np.histogram(x, bins=bins if hi > lo else 1, range=(lo, hi) if hi > lo else None)
        out["hist"] = counts.tolist()
    return out


def _gelu_dead(x) -> float:
    return float(np.mean(np.asarray(x) < GELU_DEAD))


def _one_hot_rows(p) -> float:
    """The fraction of probability rows (last axis) whose largest entry exceeds ONE_HOT, among
    the rows with a choice: at least two entries above 0 (a causal mask's first row, with one
    visible key, is one-hot by construction)."""
    p = np.asarray(p)
    choice = (p > 0).sum(axis=-1) > 1
    return float(np.mean(p.max(axis=-1)[choice] > ONE_HOT)) if choice.any() else 0.0


def attention_probabilities(cache):
    """The (B, H, Tq, Tk) softmax probabilities of an attention cache: kept by the reference
    and the short-sequence kernel (`att`), recomputed by the reference definition from q, k, v
    for the fused kernels, which keep only a row log-sum-exp."""
    if hasattr(cache, "att"):
        return cache.att
    key_pad = None if cache.key_bias is None else np.isneginf(cache.key_bias)
    if key_pad is not None and not key_pad.any():
        key_pad = None
    _, ref = attention_forward(cache.q, cache.k, cache.v, causal=cache.causal, key_pad=key_pad)
    return ref.att


def saturation(module, phase: str, args: tuple, result) -> dict:
    """{statistic: fraction} for the calls where saturation means something:

        GELU (forward)          dead: inputs x < -3, where GELU and its slope are ~0
        ReLU (forward)          dead: inputs x <= 0, which pass no gradient
        attention (forward)     one_hot: softmax rows with a probability > 0.99
        cross-entropy (forward) one_hot: rows of softmax(logits) with a probability > 0.99
        Dropout (forward)       dropped: elements set to 0
    """
    if phase != "forward" or not args:
        return {}
    x = args[0]
    if isinstance(module, Activation):
        if module.name == "relu":
            return {"dead": float(np.mean(np.asarray(x) <= 0))}
        return {"dead": _gelu_dead(x)}
    if isinstance(module, MultiHeadAttention):
        cache = getattr(module, "_cache", None)     # the attention cache of this very call
        return {} if cache is None else {"one_hot": _one_hot_rows(attention_probabilities(cache))}
    if isinstance(module, CrossEntropyLoss):
        z = np.asarray(x, dtype=np.float64)
        p = np.exp(z - z.max(axis=-1, keepdims=True))
        return {"one_hot": _one_hot_rows(p / p.sum(axis=-1, keepdims=True))}
    if isinstance(module, Dropout) and module.training and module.p > 0:
        return {"dropped": float(np.mean(np.asarray(result) == 0))}
    return {}
