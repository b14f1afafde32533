"""Language-model data, as nanoGPT does it: a train/validation split and random windows.

    ids = np.array(tokenizer.encode(text))
    train, val = split(ids, val_fraction=0.1)       # first 90% / last 10%
    x, y = get_batch(train, batch_size=8, block_size=64, rng=np.random.default_rng(0))
"""

from __future__ import annotations

import numpy as np

from .checks import check_int, check_rng


def split(ids, val_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Split a 1-D token array into (train, val): the first 1 - val_fraction and the rest.

    Not shuffled: the validation text is text the model never saw a piece of (nanoGPT's split).
    Both parts are int64 views of ids (no copy when ids is already int64).
    """
    ids = np.asarray(ids)
    if ids.ndim != 1 or not (np.issubdtype(ids.dtype, np.integer) or ids.size == 0):
        raise ValueError(f"ids has shape {ids.shape} and dtype {ids.dtype}: expected a 1-D array "
                         "of integer token ids")
    if not isinstance(val_fraction, (float, int)) or not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction is {val_fraction!r}: expected a number in (0, 1)")
    ids = ids.astype(np.int64, copy=False)
    n_train = int(len(ids) * (1 - val_fraction))
    return ids[:n_train], ids[n_train:]


def get_batch(data: np.ndarray, batch_size: int, block_size: int, rng: np.random.Generator,
              name: str = "data") -> tuple[np.ndarray, np.ndarray]:
    """batch_size random windows of data: x = data[o : o + T], y = data[o + 1 : o + T + 1].

    data: 1-D int array, at least block_size + 1 tokens   ->   x, y: int64 (batch_size, block_size)
    The offsets o are rng.integers(0, len(data) - block_size, batch_size), so the same generator
    state gives the same batch, bit for bit. y[b, t] is the token that follows x[b, t].
    name: what the error message calls data ("train", "val").
    """
    check_rng(rng)
    batch_size = check_int("batch_size", batch_size)
    block_size = check_int("block_size", block_size)
    if (not isinstance(data, np.ndarray) or data.ndim != 1
            or not np.issubdtype(data.dtype, np.integer)):
        raise ValueError(f"{name} is a {type(data).__name__} of shape {np.shape(data)} and dtype "
                         f"{getattr(data, 'dtype', None)}: expected a 1-D array of integer token ids")
    if len(data) < block_size + 1:
        raise ValueError(f"{name} has {len(data)} tokens: expected at least block_size + 1 = "
                         f"{block_size + 1} (use a longer text, a smaller block_size or a smaller "
                         "val_fraction)")
    offsets = rng.integers(0, len(data) - block_size, size=batch_size)
    idx = offsets[:, None] + np.arange(block_size)        # (B, T) positions into data
    return data[idx].astype(np.int64), data[idx + 1].astype(np.int64)
