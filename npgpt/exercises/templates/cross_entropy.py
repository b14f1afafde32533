"""Exercise: cross-entropy, the loss of every language model here.

Write cross_entropy_backward, then run `npgpt exercise check cross_entropy`.
"""

import numpy as np


def cross_entropy_forward(logits, targets):
    """The mean cross-entropy of softmax(logits) against integer targets.

        log p[i, v] = logits[i, v] - lse_i,    lse_i = log sum_v exp(logits[i, v])
        loss        = mean over the N rows of -log p[i, y_i]

    logits: (N, V) float   targets: (N,) int, each in [0, V)   ->   loss: a number
    cache: (logits, lse, targets) with lse: (N, 1). The mean over rows belongs to this loss.
    """
    m = logits.max(axis=1, keepdims=True)
    lse = m + np.log(np.exp(logits - m).sum(axis=1, keepdims=True))     # max-shifted
    rows = np.arange(logits.shape[0])
    loss = float(np.mean(lse[:, 0] - logits[rows, targets]))
    return loss, (logits, lse, targets)


def cross_entropy_backward(dloss, cache):
    """Gradient of cross_entropy_forward with respect to the logits: dlogits (N, V).

    dloss: a number, the gradient of the objective with respect to the loss (1.0 when the loss
    is the objective; a random number in the check, so that forgetting it shows).
    Derive d(-log p[i, y_i]) / d logits[i, v], then the mean. The targets are integers: they
    have no gradient, so return dlogits alone.
    """
    logits, lse, targets = cache
    raise NotImplementedError("write cross_entropy_backward: return dlogits")


def cross_entropy_inputs(rng):
    """logits: (6, 5); targets: (6,), random classes."""
    return [rng.standard_normal((6, 5)), rng.integers(0, 5, size=6)]
