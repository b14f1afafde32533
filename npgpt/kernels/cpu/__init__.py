"""The Numba backend: the hot kernels compiled with @njit, parallel over all cores, cached on disk.

Every function here has the signature and the semantics of its twin in kernels/reference.py (or,
for the fused kernels, of the NumPy code in npgpt/nn and npgpt/optim that defines them) and is
tested equal to it (tests/kernels/test_cpu_kernels.py, test_fused_kernels.py). One subject per
file, each saying why it is faster:

    gemm.py         the study GEMM (register tiles, cache blocking) and its two loop orders
    blas.py         matmul and matmul_add on numpy's own OpenBLAS (c += a @ b in one product)
    intrinsics.py   exp, tanh and max in forms that vectorise; the compile options
    attention.py    FlashAttention, and BLAS around a Numba softmax for short sequences
    elementwise.py  fused LayerNorm, GELU (tanh), the embedding's scatter-add; erf
    loss.py         fused softmax cross-entropy
    optimizer.py    the AdamW update and the sum of squares over flat buffers
    decode.py       decoding a token: one query's attention over a KV cache, read in place
    tasks.py        when a kernel runs on the calling thread and when on all of them
    precompile.py   warmup(): compile every kernel ahead, and say how long each took

Threads. Numba's parallel loops run on OpenMP; numpy's BLAS keeps its own threads. Idle OpenMP
threads spin by default, waiting for the next parallel loop, and a spinning thread takes a core
from OpenBLAS and from every other process: on a shared or busy machine the training step came
out several times slower that way. So OMP_WAIT_POLICY=PASSIVE (idle threads sleep at once) is
set here, before Numba starts its threads; a value the user exported wins. The measurements
behind this and the other thread settings: benchmarks/results/threads.md.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")   # before Numba's OpenMP starts: see above

from numba import njit  # noqa: E402

from .attention import attention_backward, attention_forward  # noqa: E402
from .blas import matmul, matmul_add  # noqa: E402
from .decode import attention_decode  # noqa: E402
from .elementwise import (embedding_backward, erf, gelu_tanh_backward, gelu_tanh_forward,  # noqa: E402
                          layernorm_backward, layernorm_forward)
from .gemm import gemm  # noqa: E402
from .loss import cross_entropy_backward, cross_entropy_forward, cross_entropy_forward_backward  # noqa: E402
from .optimizer import adamw_update, sum_squares  # noqa: E402
from .precompile import warmup  # noqa: E402

__all__ = ["matmul", "matmul_add", "gemm", "attention_forward", "attention_backward", "attention_decode",
           "erf", "warmup",
           "layernorm_forward", "layernorm_backward", "gelu_tanh_forward", "gelu_tanh_backward",
           "cross_entropy_forward", "cross_entropy_backward", "cross_entropy_forward_backward", "adamw_update", "sum_squares",
           "embedding_backward"]


def check_available() -> None:
    """Raise if Numba cannot run here (the registry then falls back to the NumPy reference)."""
    njit(lambda x: x + 1)(1)
