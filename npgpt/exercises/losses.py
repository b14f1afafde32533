"""The loss exercises: cross-entropy, then with label smoothing and ignored positions.

Each mistake is a wrong backward as people write it, on the template's cache.
"""

from __future__ import annotations

import numpy as np

from .. import nn
from . import reference
from .spec import Exercise, Mistake


def _softmax_minus_onehot(logits, lse, targets):
    p = np.exp(logits - lse)                                   # softmax, (N, V)
    p[np.arange(len(targets)), targets] -= 1
    return p


# -- cross-entropy -------------------------------------------------------------------------

def ce_no_mean(dloss, cache):
    return dloss * _softmax_minus_onehot(*cache)


def ce_onehot_forgotten(dloss, cache):
    logits, lse, targets = cache
    return dloss * np.exp(logits - lse) / logits.shape[0]


def ce_dloss_forgotten(dloss, cache):
    logits, lse, targets = cache
    return _softmax_minus_onehot(*cache) / logits.shape[0]


def ce_sign_flipped(dloss, cache):
    logits, lse, targets = cache
    return -dloss * _softmax_minus_onehot(*cache) / logits.shape[0]


CROSS_ENTROPY = Exercise(
    name="cross_entropy", title="cross-entropy: mean of -log softmax(logits)[target]",
    hints=("Write one row's loss with the log-sum-exp: -log p[y] = lse - logits[y]. Differentiate "
           "each of the two terms with respect to logits[v].",
           "d lse / d logits[v] = softmax(logits)[v]; d logits[y] / d logits[v] is 1 for v = y "
           "and 0 otherwise (a one-hot).",
           "The loss is a mean over N rows: each row's gradient carries a 1/N. Then the chain "
           "rule: multiply by dloss.",
           "dlogits = dloss * (softmax(logits) - onehot(targets)) / N."),
    mistakes=(Mistake("the 1/N of the mean missing", "the loss is the mean over the rows: each "
                      "row's share of it is 1/N.", ce_no_mean),
              Mistake("the one-hot not subtracted", "-log p[y] = lse - logits[y]: the second term "
                      "has a gradient too, -1 at the target.", ce_onehot_forgotten),
              Mistake("dloss not multiplied in", "the chain rule starts from the upstream "
                      "gradient: dloss is 1 only when the loss is the objective itself.",
                      ce_dloss_forgotten),
              Mistake("the sign flipped", "raising a wrong logit raises the loss: softmax "
                      "minus the one-hot, not the other way round.", ce_sign_flipped)),
    reference=reference.cross_entropy_backward,
    sources=(reference.cross_entropy_backward, nn.cross_entropy_forward, nn.cross_entropy_backward),
    npgpt_pair=(nn.cross_entropy_forward, nn.cross_entropy_backward))


# -- with label smoothing and ignore_index -------------------------------------------------

def _smoothed(dloss, cache, zero_ignored=True, count=None, eps=None, uniform=True, reshape=True):
    """The right gradient, or one of its classic variants (the switches)."""
    x, lse, targets, valid, n_valid, cache_eps, shape = cache
    eps = cache_eps if eps is None else eps
    N, V = x.shape
    dx = np.exp(x - lse)                                        # softmax, (N, V)
    rows = np.flatnonzero(valid)
    dx[rows, targets[rows]] -= 1 - eps
    if uniform:
        dx -= eps / V
    if zero_ignored:
        dx[~valid] = 0
    dx *= dloss / (n_valid if count is None else count)
    return dx.reshape(shape) if reshape else dx


def ces_ignored_rows_not_zeroed(dloss, cache):
    return _smoothed(dloss, cache, zero_ignored=False)


def ces_divided_by_all_rows(dloss, cache):
    return _smoothed(dloss, cache, count=cache.logits.shape[0])


def ces_smoothing_forgotten(dloss, cache):
    return _smoothed(dloss, cache, eps=0.0)


def ces_uniform_part_forgotten(dloss, cache):
    return _smoothed(dloss, cache, uniform=False)


def ces_shape_not_restored(dloss, cache):
    return _smoothed(dloss, cache, reshape=False)


CROSS_ENTROPY_SMOOTHED = Exercise(
    name="cross_entropy_smoothed", title="cross-entropy with label smoothing and ignore_index",
    hints=("For a valid row the loss is a cross-entropy against the distribution "
           "q = (1 - eps) onehot(y) + eps / V: its gradient is softmax - q, as in the last exercise.",
           "An ignored row (target == ignore_index) is not in the loss: its gradient is exactly 0.",
           "The mean is over the valid rows only: divide by n_valid, not by N. Return the "
           "gradient in the shape of the logits (cache.shape).",
           "dlogits[i] = dloss * (softmax(x_i) - (1 - eps) onehot(y_i) - eps / V) / n_valid for a "
           "valid row, 0 for an ignored one; reshape to cache.shape."),
    mistakes=(Mistake("ignored rows not zeroed", "a position with target == ignore_index is not "
                      "part of the loss: its logits get no gradient.", ces_ignored_rows_not_zeroed),
              Mistake("divided by every row, not the valid ones", "the loss averages over the "
                      "rows that count: n_valid, not N.", ces_divided_by_all_rows),
              Mistake("label smoothing forgotten", "the target is (1 - eps) onehot + eps / V: "
                      "the one-hot alone is eps = 0.", ces_smoothing_forgotten),
              Mistake("the uniform eps / V part forgotten", "the smoothed target puts eps / V on "
                      "every class: it is subtracted from every logit's gradient.",
                      ces_uniform_part_forgotten),
              Mistake("the logits' shape not restored", "the rows were flattened to (N, V) in the "
                      "forward; the gradient goes back in the logits' shape (cache.shape).",
                      ces_shape_not_restored)),
    reference=nn.cross_entropy_backward, sources=(nn.cross_entropy_forward, nn.cross_entropy_backward))
