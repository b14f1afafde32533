"""The AdamW exercise: an update, checked against npgpt's (torch's) update, not a gradient.

Each mistake is a wrong update as people write it, with the template's signature.
"""

from __future__ import annotations

import numpy as np

from ..optim import adamw_update
from .spec import Exercise, Mistake


def _adamw(p, g, m, v, decay, lr, beta1, beta2, eps, weight_decay, step, correct=True,
           decoupled=True, eps_inside=False, mask=True, decay_lr=True):
    """The right update, or one of its classic variants (the switches), in place."""
    shrink = weight_decay * (lr if decay_lr else 1.0)
    where = decay if mask else np.ones_like(decay)
    if decoupled:
        p[where] *= 1 - shrink
    else:
        g = g + weight_decay * p * where                      # L2: decay inside the gradient
    m[...] = beta1 * m + (1 - beta1) * g
    v[...] = beta2 * v + (1 - beta2) * g * g
    m_hat = m / (1 - beta1 ** step) if correct else m
    v_hat = v / (1 - beta2 ** step) if correct else v
    denom = np.sqrt(v_hat + eps) if eps_inside else np.sqrt(v_hat) + eps
    p -= lr * m_hat / denom


def adamw_no_bias_correction(*args):
    _adamw(*args, correct=False)


def adamw_decay_in_gradient(*args):
    _adamw(*args, decoupled=False)


def adamw_eps_inside_sqrt(*args):
    _adamw(*args, eps_inside=True)


def adamw_decay_everything(*args):
    _adamw(*args, mask=False)


def adamw_decay_without_lr(*args):
    _adamw(*args, decay_lr=False)


ADAMW = Exercise(
    name="adamw", title="the AdamW update (checked against the reference update)",
    hints=("Decoupled weight decay comes first and touches p only: p *= 1 - lr * weight_decay, "
           "where decay is True (it is not added to the gradient: that would be Adam with L2).",
           "The moments: m = beta1 m + (1 - beta1) g, v = beta2 v + (1 - beta2) g^2, in place.",
           "They start at 0, so divide by (1 - beta1^t) and (1 - beta2^t), t = step counted from "
           "1; eps is added to the square root, not inside it.",
           "p *= 1 - lr wd (where decay);  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  "
           "p -= lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)."),
    mistakes=(Mistake("the bias correction left out", "m and v start at 0: early steps divide "
                      "them by (1 - beta^t).", adamw_no_bias_correction),
              Mistake("weight decay inside the gradient, not decoupled", "AdamW shrinks p "
                      "directly (p *= 1 - lr wd); adding wd * p to g is Adam with L2, which the "
                      "moments then rescale.", adamw_decay_in_gradient),
              Mistake("eps inside the square root", "torch adds eps to sqrt(v_hat), outside "
                      "the root.", adamw_eps_inside_sqrt),
              Mistake("every parameter decayed, the mask ignored", "decay is False for biases "
                      "and gains: those are not shrunk.", adamw_decay_everything),
              Mistake("the decay not scaled by lr", "decoupled decay is p *= 1 - lr * "
                      "weight_decay: it follows the learning rate.", adamw_decay_without_lr)),
    reference=adamw_update, sources=(adamw_update,), kind="update")
