"""Softmax cross-entropy, fused with its backward: the loss of every language model here."""

from __future__ import annotations

import numpy as np

from .. import kernels
from ..kernels.reference import CrossEntropyCache, check_cross_entropy_args
from .module import Module


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
    x, targets = check_cross_entropy_args(logits, targets, ignore_index, label_smoothing)  # (N, V), (N,)
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


def cross_entropy_forward_backward(logits, targets, ignore_index: int = -100, label_smoothing: float = 0.0):
    """The loss, its cache and its gradient for dloss = 1, at once: (loss, cache, dlogits) with

        loss, cache = cross_entropy_forward(logits, targets, ...)
        dlogits     = cross_entropy_backward(1.0, cache)

    Here only the two calls; a backend's fused twin computes the gradient while each row of
    logits is in cache, and that is why the pair exists (CrossEntropyLoss in training mode).
    """
    loss, cache = cross_entropy_forward(logits, targets, ignore_index, label_smoothing)
    return loss, cache, cross_entropy_backward(1.0, cache)


class CrossEntropyLoss(Module):
    """The Module form of the loss: forward(logits, targets) -> loss; backward(dloss=1.0) -> dlogits.

    forward:
        log p[i, v] = logits[i, v] - log sum_v exp(logits[i, v])
        loss_i = (1 - eps) (-log p[i, y_i]) + eps mean_v(-log p[i, v])
        loss = mean of loss_i over the rows i with y_i != ignore_index
    backward:
        dlogits[i] = dloss * (softmax(logits[i]) - q_i) / count,   q_i = (1 - eps) onehot(y_i) + eps / V

    Both directions run the backend's fused kernel where it has one (Numba: one pass over the
    logits), else the NumPy functions above; both give the same numbers (tests/kernels).
    In training mode, on a backend with the fused pair, the forward also writes the gradient of
    the mean loss (cross_entropy_forward_backward) and the next backward(1.0) returns that array
    (the same numbers as computing it then); any other dloss, or a second backward, computes it
    from the cache. In eval mode the forward computes the loss only.
    """

    def __init__(self, ignore_index: int = -100, label_smoothing: float = 0.0):
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing={label_smoothing!r}, expected a number in [0, 1)")
        self.ignore_index, self.label_smoothing = ignore_index, label_smoothing
        self._cache = None
        self._dlogits = None          # the gradient for dloss = 1, when the forward wrote it

    def forward(self, logits, targets) -> float:
        both = kernels.fused("cross_entropy_forward_backward") if self.training else None
        if both is not None:
            loss, self._cache, self._dlogits = both(logits, targets, self.ignore_index, self.label_smoothing)
            return loss
        forward = kernels.fused("cross_entropy_forward") or cross_entropy_forward
        loss, self._cache = forward(logits, targets, self.ignore_index, self.label_smoothing)
        self._dlogits = None
        return loss

    def backward(self, dloss: float = 1.0):
        dlogits, self._dlogits = self._dlogits, None
        if dlogits is not None and dloss == 1.0:
            return dlogits                                  # written by the forward
        backward = kernels.fused("cross_entropy_backward") or cross_entropy_backward
        return backward(dloss, self._cache)
