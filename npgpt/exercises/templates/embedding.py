"""Exercise: the token embedding, a table lookup, and its scatter-add backward.

Write embedding_backward, then run `npgpt exercise check embedding`.
"""

import numpy as np


def embedding_forward(idx, w):
    """Look up one row of the table per token id.

        y[b, t, :] = W[idx[b, t], :]

    idx: int (B, T) (any shape)   W: (V, C)   ->   y: (B, T, C)
    cache: (idx, V): the backward needs only where each row went
    """
    return w[idx], (idx, w.shape[0])


def embedding_backward(dout, cache):
    """Gradient of embedding_forward with respect to the table: dW (V, C).

    dout: (B, T, C). Which rows of W did y[b, t] come from, and what happens to a row that was
    looked up twice? The ids are integers: they have no gradient, so return dW alone.
    """
    idx, V = cache
    raise NotImplementedError("write embedding_backward: return dw")


def embedding_inputs(rng):
    """idx: (2, 3) with id 3 three times (twice in one sequence) and ids 2, 4, 6 never seen;
    W: (7, 4)."""
    idx = np.array([[3, 1, 3], [5, 3, 0]])
    return [idx, rng.standard_normal((7, 4))]
