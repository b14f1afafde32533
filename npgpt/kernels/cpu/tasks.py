"""How a row or element-wise kernel is shared among threads, and below what size it is not.

A fused kernel on fewer than PARALLEL_FROM elements runs on the calling thread: there a parallel
launch cost more than it saved at every size measured (a sleeping OpenMP thread is slow to wake,
and right after a BLAS product the other cores are held by OpenBLAS's spinning workers). That
covers every LayerNorm and GELU of the benchmark models. From PARALLEL_FROM on (GPT-2's
cross-entropy over 12.9 M logits, the AdamW update over 124 M parameters) the rows are shared
out in tasks of ROWS_PER_TASK rows, a flat buffer in chunks of FLAT_CHUNK elements.

Sums across rows (LayerNorm's dw and db, the loss, the sum of squares) are added per task into
partial sums, then the partials in order: no two threads write one number, and the result does
not depend on how many threads there are.

The measurements behind these choices: benchmarks/results/threads.md.
"""

from __future__ import annotations

import numpy as np

PARALLEL_FROM = 1 << 20      # elements: a kernel on fewer runs on the calling thread
ROWS_PER_TASK = 16           # rows per parallel task (and per partial sum of LayerNorm's dw, db)
FLAT_CHUNK = 1 << 16         # elements per parallel task of the flat kernels (AdamW, sum of squares)


def row_tasks(n_rows: int, row_size: int) -> int:
    """How many parallel tasks for n_rows rows of row_size elements: 0 means the calling thread."""
    return 0 if n_rows * row_size < PARALLEL_FROM else (n_rows + ROWS_PER_TASK - 1) // ROWS_PER_TASK


def flat_tasks(n: int) -> int:
    """How many parallel tasks for a flat buffer of n elements: 0 means the calling thread."""
    return 0 if n < PARALLEL_FROM else (n + FLAT_CHUNK - 1) // FLAT_CHUNK


def as_rows(x: np.ndarray) -> np.ndarray:
    """x (..., C) as a C-contiguous (N, C) array: a view when it is one already."""
    return np.ascontiguousarray(x).reshape(-1, x.shape[-1])
