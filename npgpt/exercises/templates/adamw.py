"""Exercise: the AdamW update, checked step by step against torch.optim.AdamW's update.

Write adamw_update, then run `npgpt exercise check adamw`. There is no gradient to check here:
npgpt runs three steps of your update and of its own from the same start, and compares.
"""

import numpy as np


def adamw_update(p, g, m, v, decay, lr, beta1, beta2, eps, weight_decay, step):
    """One AdamW step (Loshchilov & Hutter), in place on p, m and v, in torch.optim.AdamW's order:

        decoupled weight decay: shrink p by a factor (1 - lr * weight_decay), where decay is True
        m: the running mean of the gradient g (weight beta1); v: of its square (weight beta2)
        both start at zero, so early on they are biased towards 0: correct that bias (step t
        counts from 1), then move p by lr times m over the square root of v (eps added to the
        root, for the division)

    p, g, m, v: 1-D float arrays of one length; decay: 1-D bool (False for biases and
    LayerNorm gains); lr, beta1, beta2, eps, weight_decay: numbers; step: t = 1, 2, ...
    Returns nothing: update p, m, v in place (p[...] = ..., m *= ..., ...).
    """
    raise NotImplementedError("write adamw_update: update p, m and v in place")


def adamw_inputs(rng):
    """Ten parameters (the last four not decayed), three steps of gradients (one gradient
    element tiny, where eps matters), and hyper-parameters large enough to show every term."""
    grads = [rng.standard_normal(10) for _ in range(3)]
    for g in grads:
        g[2] = 1e-4 * g[2]
    return dict(p=rng.standard_normal(10), decay=np.arange(10) < 6, grads=grads,
                lr=0.1, beta1=0.9, beta2=0.99, eps=1e-3, weight_decay=0.2)
