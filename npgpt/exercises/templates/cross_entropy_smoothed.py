"""Exercise: cross-entropy with label smoothing and ignored positions (the encoder-decoder's loss).

Write cross_entropy_smoothed_backward, then run `npgpt exercise check cross_entropy_smoothed`.
"""

from typing import NamedTuple

import numpy as np


class CrossEntropyCache(NamedTuple):
    logits: np.ndarray     # (N, V), the rows of the input
    lse: np.ndarray        # (N, 1) log-sum-exp of each row: log p = logits - lse
    targets: np.ndarray    # (N,) int
    valid: np.ndarray      # (N,) bool, False where targets == ignore_index
    n_valid: int
    label_smoothing: float
    shape: tuple           # the shape of the logits as given, (..., V)


def cross_entropy_smoothed_forward(logits, targets, ignore_index=-100, label_smoothing=0.0):
    """The mean cross-entropy of softmax(logits) against smoothed targets, ignoring some rows.

        log p[i, v] = logits[i, v] - lse_i,     lse_i = log sum_v exp(logits[i, v])
        loss_i      = (1 - eps) * (-log p[i, y_i]) + eps * mean_v(-log p[i, v])
        loss        = sum over rows with y_i != ignore_index of loss_i, / their count

    eps = label_smoothing: the target distribution is (1 - eps) onehot(y_i) + eps / V, as in
    torch.nn.functional.cross_entropy. A padded position has y_i == ignore_index.
    logits: (..., V) float   targets: (...) int   ->   loss: a number
    cache: CrossEntropyCache (above).
    """
    V = logits.shape[-1]
    x = logits.reshape(-1, V)                                            # (..., V) -> (N, V)
    targets = targets.reshape(-1)
    valid = targets != ignore_index
    n_valid = int(valid.sum())
    m = x.max(axis=1, keepdims=True)
    lse = m + np.log(np.exp(x - m).sum(axis=1, keepdims=True))          # (N, 1)
    rows = np.flatnonzero(valid)
    nll = lse[rows, 0] - x[rows, targets[rows]]                          # -log p[i, y_i]
    smooth = lse[rows, 0] - x[rows].mean(axis=1)                         # mean_v(-log p[i, v])
    loss = float(np.sum((1 - label_smoothing) * nll + label_smoothing * smooth) / n_valid)
    return loss, CrossEntropyCache(x, lse, targets, valid, n_valid, label_smoothing, logits.shape)


def cross_entropy_smoothed_backward(dloss, cache):
    """Gradient of cross_entropy_smoothed_forward with respect to the logits, in their shape.

    dloss: a number (random in the check). Derive the gradient of loss_i for a valid row: the
    softmax minus what? Then: what do the ignored rows receive, and what divides the sum?
    """
    x, lse, targets, valid, n_valid, eps, shape = cache
    raise NotImplementedError("write cross_entropy_smoothed_backward: return dlogits")


def cross_entropy_smoothed_inputs(rng):
    """logits: (2, 4, 5); targets: (2, 4) with three positions ignored (-100); eps = 0.1."""
    targets = rng.integers(0, 5, size=(2, 4))
    targets[0, 3] = targets[1, 2] = targets[1, 3] = -100
    return [rng.standard_normal((2, 4, 5)), targets, -100, 0.1]
