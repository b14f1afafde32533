"""Token embeddings and the two kinds of positional information: learned and sinusoidal."""

from __future__ import annotations

import numpy as np

from .. import kernels
from ..kernels.reference import check_embedding_backward_args
from .module import Module, Parameter, as_dtype
from .validate import check_ids


def embedding_forward(idx, w):
    """Look up one row of the table per token id.

        y[b, t, :] = W[idx[b, t], :]

    idx: int (B, T) (any shape)   W: (V, C)   ->   y: (B, T, C)
    cache: (idx, V): the backward needs only where each row went
    """
    return w[idx], (idx, w.shape[0])


def embedding_backward(dout, cache, dw_out=None):
    """Gradient of embedding_forward with respect to the table.

        forward: y[b, t] = W[idx[b, t]]   ->   dW[v] = sum over (b, t) with idx[b, t] == v of dy[b, t]

    A token id that appears twice receives both gradients (a scatter-add, not an assignment).
    Returns dW: (V, C). The ids are integers: they have no gradient.
    dw_out: a (V, C) array to add dW into, returned (the Module passes its .grad). Only the
    rows of the ids seen are touched, where a new dW would be a (V, C) array of zeros, most of
    it never written, then added whole (for GPT-2's table, 154 MB per step).
    """
    idx, V = cache
    check_embedding_backward_args(dout, idx, V, dw_out)
    C = dout.shape[-1]
    dw = np.zeros((V, C), dtype=dout.dtype) if dw_out is None else dw_out
    np.add.at(dw, idx.ravel(), dout.reshape(-1, C))                    # dW[idx[i]] += dout[i]
    return dw


def sinusoidal_encoding(T: int, d: int, offset: int = 0, dtype="float32") -> np.ndarray:
    """Vaswani et al.'s fixed positional encoding for positions offset .. offset+T-1.

        PE(pos, 2i)   = sin(pos / 10000^(2i/d))
        PE(pos, 2i+1) = cos(pos / 10000^(2i/d))

    Returns (T, d). With odd d the last column is a sine. Computed in float64, then cast.
    """
    pos = np.arange(offset, offset + T, dtype=np.float64)[:, None]     # (T, 1)
    two_i = np.arange(0, d, 2, dtype=np.float64)                         # 2i = 0, 2, 4, ...
    angle = pos / 10000.0 ** (two_i / d)                                 # (T, ceil(d/2))
    pe = np.empty((T, d), dtype=np.float64)
    pe[:, 0::2] = np.sin(angle)
    pe[:, 1::2] = np.cos(angle[:, : d // 2])
    return pe.astype(as_dtype(dtype))


class Embedding(Module):
    """A table of `num_embeddings` vectors of width `embedding_dim`, drawn from N(0, std^2).

    forward:
        y[b, t] = W[idx[b, t]]                          idx: int (B, T)   W: (V, C)
    backward:
        dW[v] += sum of dy[b, t] over the (b, t) with idx[b, t] == v      (ids: no gradient)

    Token ids are checked (integer dtype, in [0, num_embeddings)) before the lookup. The
    backward runs the backend's fused scatter-add where it has one (Numba: a loop over the
    rows, where np.add.at is slow), else embedding_backward above.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, *, dtype="float32",
                 rng: np.random.Generator | None = None, std: float = 0.02):
        super().__init__()
        rng = rng if rng is not None else np.random.default_rng(0)
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        table = rng.standard_normal((num_embeddings, embedding_dim)) * std
        self.weight = Parameter(table.astype(as_dtype(dtype)), decay=False)
        self._cache = None

    def forward(self, idx, name: str = "idx"):
        idx = check_ids(name, idx, self.num_embeddings)
        y, self._cache = embedding_forward(idx, self.weight.data)
        return y

    def backward(self, dout):
        """Adds the table's gradient; returns None (token ids have no gradient)."""
        if self.weight.requires_grad:
            backward = kernels.fused("embedding_backward") or embedding_backward
            backward(dout, self._cache, dw_out=self.weight.grad)              # adds into .grad
        return None

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}"


class LearnedPositionalEmbedding(Module):
    """GPT-2's wpe: one learned vector per position 0 .. max_positions-1.

    forward:
        y[t] = W[offset + t],   t = 0 .. T-1             (T, C): the model adds it to every sequence
    backward:
        dW[offset + t] += sum_b dy[b, t]

    forward(T, offset=0) returns the rows for positions offset .. offset+T-1: (T, C), which the
    model adds to every sequence of the batch (so the backward sums the batch axis).
    """

    def __init__(self, max_positions: int, embedding_dim: int, *, dtype="float32",
                 rng: np.random.Generator | None = None, std: float = 0.02):
        super().__init__()
        rng = rng if rng is not None else np.random.default_rng(0)
        self.max_positions, self.embedding_dim = max_positions, embedding_dim
        table = rng.standard_normal((max_positions, embedding_dim)) * std
        self.weight = Parameter(table.astype(as_dtype(dtype)), decay=False)
        self._span = None

    def forward(self, T: int, offset: int = 0):
        if offset < 0 or offset + T > self.max_positions:
            raise ValueError(f"positions {offset}..{offset + T - 1} do not fit: expected at most "
                             f"{self.max_positions} positions (block_size)")
        self._span = (offset, offset + T)
        return self.weight.data[offset:offset + T]

    def backward(self, dout):
        """dout: (B, T, C) or (T, C), the gradient of what the positions were added to."""
        if self.weight.requires_grad:
            lo, hi = self._span
            d = dout.reshape(-1, hi - lo, dout.shape[-1]).sum(axis=0)      # sum over the batch
            self.weight.grad[lo:hi] += d
        return None

    def extra_repr(self):
        return f"{self.max_positions}, {self.embedding_dim}"


class SinusoidalPositionalEncoding(Module):
    """The fixed encoding of Vaswani et al. (see sinusoidal_encoding); no parameters.

    forward:
        y[t] = PE(offset + t),   PE(pos, 2i) = sin(pos / 10000^(2i/d)),   PE(pos, 2i+1) = cos(...)
    backward:
        nothing: PE is fixed and the positions are integers

    The table is computed once for max_positions and sliced; there is nothing to learn, so the
    backward passes nothing.
    """

    def __init__(self, max_positions: int, embedding_dim: int, *, dtype="float32"):
        super().__init__()
        self.max_positions, self.embedding_dim = max_positions, embedding_dim
        self.table = sinusoidal_encoding(max_positions, embedding_dim, dtype=dtype)

    def forward(self, T: int, offset: int = 0):
        if offset < 0 or offset + T > self.max_positions:
            raise ValueError(f"positions {offset}..{offset + T - 1} do not fit: expected at most "
                             f"{self.max_positions} positions")
        return self.table[offset:offset + T]

    def backward(self, dout):
        return None

    def extra_repr(self):
        return f"{self.max_positions}, {self.embedding_dim}"
