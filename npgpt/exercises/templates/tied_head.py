"""Exercise: the tied head, GPT-2's output layer, which shares the token embedding's table.

Write tied_head_backward, then run `npgpt exercise check tied_head`.
"""

import numpy as np


def tied_head_forward(idx, w, pos):
    """The smallest GPT: embed the tokens, add the positions, read the logits off the same table.

        x      = W[idx] + pos                 token embedding + positions   (B, T, C)
        logits = x @ W^T                      the head, tied to the table   (B, T, V)

    idx: int (B, T)   W: (V, C)   pos: (T, C), added to every sequence   ->   logits: (B, T, V)
    cache: (idx, w, x)
    """
    x = w[idx] + pos
    return x @ w.T, (idx, w, x)


def tied_head_backward(dout, cache):
    """Gradients of tied_head_forward: (None, dw, dpos), dw (V, C), dpos (T, C); idx is an
    integer array: None.

    dout: (B, T, V). W is used twice, as the head and as the table: each use has its gradient.
    pos is added to every sequence of the batch.
    """
    idx, w, x = cache
    raise NotImplementedError("write tied_head_backward: return None, dw, dpos")


def tied_head_inputs(rng):
    """idx: (2, 3) with repeated ids (3 appears three times); W: (7, 4); pos: (3, 4)."""
    idx = np.array([[3, 1, 3], [5, 3, 0]])
    return [idx, rng.standard_normal((7, 4)), rng.standard_normal((3, 4))]
