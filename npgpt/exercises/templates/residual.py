"""Exercise: a residual block, pre-LN, the shape of each half of a GPT-2 block.

Write residual_backward, then run `npgpt exercise check residual`.
"""

from typing import NamedTuple

import numpy as np

SQRT_2_OVER_PI = np.sqrt(2.0 / np.pi)


class ResidualCache(NamedTuple):
    x: np.ndarray        # (B, T, C) the input, which also goes around the branch
    ln_w: np.ndarray     # (C,)
    mu: np.ndarray       # (B, T, 1) LayerNorm's mean and 1 / std of each row
    rstd: np.ndarray
    h: np.ndarray        # (B, T, C) LayerNorm's output
    w_fc: np.ndarray     # (C, F)
    z: np.ndarray        # (B, T, F) the pre-activation
    t: np.ndarray        # (B, T, F) GELU's tanh(u)
    a: np.ndarray        # (B, T, F) the activation
    w_proj: np.ndarray   # (F, C)


def residual_forward(x, ln_w, ln_b, w_fc, b_fc, w_proj, b_proj):
    """A pre-LN residual block with an MLP branch:

        h = LayerNorm(x) * ln_w + ln_b             (the LayerNorm exercise)
        z = h @ W_fc + b_fc                        (B, T, C) -> (B, T, F)
        a = gelu_tanh(z)                           (the GELU exercise)
        y = x + a @ W_proj + b_proj                x goes around the branch and is added back

    x: (B, T, C)   ln_w, ln_b: (C,)   W_fc: (C, F)   b_fc: (F,)   W_proj: (F, C)   b_proj: (C,)
    ->   y: (B, T, C).   cache: ResidualCache (above).
    """
    mu = x.mean(axis=-1, keepdims=True)
    rstd = 1.0 / np.sqrt(((x - mu) ** 2).mean(axis=-1, keepdims=True) + 1e-5)
    h = (x - mu) * rstd * ln_w + ln_b
    z = h @ w_fc + b_fc
    t = np.tanh(SQRT_2_OVER_PI * (z + 0.044715 * z ** 3))
    a = 0.5 * z * (1 + t)
    y = x + a @ w_proj + b_proj
    return y, ResidualCache(x, ln_w, mu, rstd, h, w_fc, z, t, a, w_proj)


def residual_backward(dout, cache):
    """Gradients of residual_forward: (dx, dln_w, dln_b, dw_fc, db_fc, dw_proj, db_proj), each
    the shape of its input.

    dout: (B, T, C). Go back through the branch, last line first, reusing the backwards of the
    earlier exercises (copy them in). Where the stream splits in the forward (x enters the
    branch and also goes around it), what happens to the two gradients in the backward?
    """
    x, ln_w, mu, rstd, h, w_fc, z, t, a, w_proj = cache
    raise NotImplementedError("write residual_backward: return dx, dln_w, dln_b, dw_fc, db_fc, "
                              "dw_proj, db_proj")


def residual_inputs(rng):
    """x: (2, 3, 4), hidden width F = 8; LayerNorm's w, b random (not ones and zeros)."""
    C, F = 4, 8
    return [rng.standard_normal((2, 3, C)), 1.0 + rng.standard_normal(C), rng.standard_normal(C),
            rng.standard_normal((C, F)), rng.standard_normal(F), 0.5 * rng.standard_normal((F, C)),
            rng.standard_normal(C)]
