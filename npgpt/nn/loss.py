"""Softmax cross-entropy, fused with its backward: the loss of every language model here."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .. import kernels
from .module import Module
from .validate import check_array


class CrossEntropyCache(NamedTuple):
    logits: np.ndarray     # (N, V), the rows of the input
    lse: np.ndarray        # (N, 1) log-sum-exp of each row: log p = logits - lse
    targets: np.ndarray    # (N,) int64
    valid: np.ndarray      # (N,) bool, False where targets == ignore_index
    n_valid: int
    label_smoothing: float
    shape: tuple           # the shape of the logits as given, (..., V)


def check_targets(targets, shape, vocab_size: int, ignore_index: int) -> np.ndarray:
    """targets must be integers of shape `shape` with values in [0, V) or equal to ignore_index."""
    if not isinstance(targets, np.ndarray) or not np.issubdtype(targets.dtype, np.integer):
        raise TypeError(f"targets has dtype {getattr(targets, 'dtype', type(targets).__name__)}: "
                        f"expected an integer array of class ids")
    if targets.shape != tuple(shape):
        raise ValueError(f"targets has shape {targets.shape}: expected {tuple(shape)}, the logits' shape without V")
    real = targets[targets != ignore_index]
    if real.size and (real.min() < 0 or real.max() >= vocab_size):
        bad = int(real.min()) if real.min() < 0 else int(real.max())
        raise ValueError(f"targets contains {bad}: expected ids in [0, {vocab_size}) "
                         f"or ignore_index={ignore_index}")
    return targets.astype(np.int64, copy=False)


def cross_entropy_forward(logits, targets, ignore_index: int = -100, label_smoothing: float = 0.0):
    """The mean cross-entropy of softmax(logits) against integer targets.

        log p[i, v] = logits[i, v] - lse_i,     lse_i = log sum_v exp(logits[i, v])  (max-shifted)
        loss_i      = (1 - eps) * (-log p[i, y_i]) + eps * mean_v(-log p[i, v])
        loss        = sum over rows with y_i != ignore_index of loss_i, / their count

    eps = label_smoothing: the target distribution is (1 - eps) onehot(y_i) + eps / V, as in
    torch.nn.functional.cross_entropy. With every target ignored the loss is 0 (torch: nan).
    logits: (..., V) float   targets: (...) int   ->   loss: a float
    cache: CrossEntropyCache. The mean over rows belongs to this loss, and so does the 1/count
    in its backward: the chain rule starts here.
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing={label_smoothing!r}, expected a number in [0, 1)")
    check_array("logits", logits)
    if logits.dtype not in (np.float32, np.float64):
        raise TypeError(f"logits has dtype {logits.dtype}: expected float32 or float64")
    V = logits.shape[-1]
    targets = check_targets(targets, logits.shape[:-1], V, ignore_index).reshape(-1)
    x = logits.reshape(-1, V)
    fused = kernels.fused("cross_entropy_forward")
    if fused is not None:
        return fused(x, targets, ignore_index, label_smoothing, logits.shape)
    valid = targets != ignore_index
    n_valid = int(valid.sum())
    m = x.max(axis=1, keepdims=True)
    lse = m + np.log(np.exp(x - m).sum(axis=1, keepdims=True))          # (N, 1)
    rows = np.flatnonzero(valid)
    nll = lse[rows, 0] - x[rows, targets[rows]]                           # -log p[i, y_i]
    loss_rows = (1 - label_smoothing) * nll
    if label_smoothing:
        loss_rows += label_smoothing * (lse[rows, 0] - x[rows].mean(axis=1))  # mean_v(-log p)
    loss = float(loss_rows.sum(dtype=np.float64) / n_valid) if n_valid else 0.0
    return loss, CrossEntropyCache(x, lse, targets, valid, n_valid, label_smoothing, logits.shape)


def cross_entropy_backward(dloss, cache: CrossEntropyCache):
    """Gradient of cross_entropy_forward with respect to the logits.

        dlogits[i] = dloss * (softmax(logits[i]) - q_i) / count,   q_i = (1 - eps) onehot(y_i) + eps / V
        dlogits[i] = 0 where y_i == ignore_index

    (softmax minus the target distribution: the softmax's and the log's derivatives cancel.)
    """
    fused = kernels.fused("cross_entropy_backward")
    if fused is not None:
        return fused(dloss, cache)
    x, lse, targets, valid, n_valid, eps, shape = cache
    N, V = x.shape
    if n_valid == 0:
        return np.zeros(shape, dtype=x.dtype)
    dx = np.exp(x - lse)                                                   # softmax, (N, V)
    rows = np.flatnonzero(valid)
    dx[rows, targets[rows]] -= 1 - eps
    if eps:
        dx -= x.dtype.type(eps / V)
    dx[~valid] = 0
    dx *= x.dtype.type(dloss / n_valid)
    return dx.reshape(shape)


class CrossEntropyLoss(Module):
    """The Module form of the loss: forward(logits, targets) -> loss; backward(dloss=1.0) -> dlogits."""

    def __init__(self, ignore_index: int = -100, label_smoothing: float = 0.0):
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing={label_smoothing!r}, expected a number in [0, 1)")
        self.ignore_index, self.label_smoothing = ignore_index, label_smoothing
        self._cache = None

    def forward(self, logits, targets) -> float:
        loss, self._cache = cross_entropy_forward(logits, targets, self.ignore_index, self.label_smoothing)
        return loss

    def backward(self, dloss: float = 1.0):
        return cross_entropy_backward(dloss, self._cache)
