"""Input checks shared by the layers: each error names the argument, the value and the expectation.

The checks look only at shapes and dtypes (and, for token ids, one min/max pass), so they cost
nothing next to the arithmetic they guard.
"""

from __future__ import annotations

import numpy as np


def check_array(name: str, x, *, dtype=None, ndim=None, last_dim=None, shape=None) -> None:
    """Raise TypeError/ValueError unless x is an ndarray of the expected dtype and shape."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} is a {type(x).__name__}: expected a numpy array")
    if dtype is not None and x.dtype != dtype:
        raise TypeError(f"{name} has dtype {x.dtype}: expected {np.dtype(dtype)} "
                        f"(the layer's dtype; convert with .astype)")
    if ndim is not None and x.ndim not in np.atleast_1d(ndim):
        raise ValueError(f"{name} has shape {x.shape}: expected {ndim} dimensions")
    if last_dim is not None and (x.ndim == 0 or x.shape[-1] != last_dim):
        raise ValueError(f"{name} has shape {x.shape}: expected the last dimension to be {last_dim}")
    if shape is not None and x.shape != tuple(shape):
        raise ValueError(f"{name} has shape {x.shape}: expected {tuple(shape)}")


def check_ids(name: str, idx, vocab_size: int, ndim=None) -> np.ndarray:
    """Token ids must be an integer array with every value in [0, vocab_size). Returns it as int64."""
    if not isinstance(idx, np.ndarray):
        raise TypeError(f"{name} is a {type(idx).__name__}: expected a numpy array of integer token ids")
    if not np.issubdtype(idx.dtype, np.integer):
        raise TypeError(f"{name} has dtype {idx.dtype}: expected integer token ids (int64)")
    if ndim is not None and idx.ndim != ndim:
        raise ValueError(f"{name} has shape {idx.shape}: expected {ndim} dimensions")
    if idx.size:
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0 or hi >= vocab_size:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{name} contains token id {bad}: expected ids in [0, {vocab_size})")
    return idx.astype(np.int64, copy=False)
