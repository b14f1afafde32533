"""LoRA (Hu et al., 2021): a trainable low-rank update beside a frozen Linear.

    y = x @ W + b + (alpha / r) * dropout(x) @ A @ B        A: (in, r), B: (r, out), r << in, out

lora_forward / lora_backward are the math; LoRALinear is the layer. Wrapping a model's Linears,
and saving, loading and merging the adapters, is fine-tuning's work: npgpt.finetune.lora.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .. import kernels
from .dropout import dropout_backward, dropout_forward
from .linear import Linear
from .module import Module, Parameter


class LoRACache(NamedTuple):
    u: np.ndarray                # dropout(x): (..., in); x itself without dropout
    mask: np.ndarray | None      # the scaled dropout mask, None without dropout
    z: np.ndarray                # u @ A: (..., r)
    a: np.ndarray                # A: (in, r)
    b: np.ndarray                # B: (r, out)
    scale: float                 # alpha / r


def lora_forward(x, a, b, scale: float, p: float = 0.0, rng=None, train: bool = True):
    """The low-rank update that LoRA adds to a frozen Linear's output (Hu et al., 2021).

        u = dropout(x)             (..., in)     dropout on the adapter's input only
        z = u @ A                  (..., r)      A: (in, r)
        y = scale * (z @ B)        (..., out)    B: (r, out),  scale = alpha / r

    so the layer computes x W + b + scale * dropout(x) A B, a rank-r change of W that costs
    r (in + out) parameters instead of in * out. Dividing by r keeps the size of the update
    about the same when r changes, so alpha need not be re-tuned.
    cache: LoRACache(u, mask, z, a, b, scale).
    """
    u, mask = dropout_forward(x, p, rng, train)
    matmul = kernels.get("matmul")
    z = matmul(u, a)
    y = matmul(z, b)
    y *= y.dtype.type(scale)
    return y, LoRACache(u, mask, z, a, b, scale)


def lora_backward(dout, cache: LoRACache, need_dx: bool = True):
    """Gradients of lora_forward: (dx, dA, dB); dx is None when need_dx is False.

        (rows flattened: U: (N, in), Z: (N, r), dY: (N, out))
        forward: y = s * z @ B     ->  dB = s * Z^T @ dY     (r, out)
                                       dz = s * dY @ B^T     (..., r)
        forward: z = u @ A         ->  dA = U^T @ dZ         (in, r)
                                       du = dz @ A^T         (..., in)
        forward: u = dropout(x)    ->  dx = du * mask
    With B = 0 (LoRA's initialisation) dz and so dA are 0: only B moves on the first step.
    """
    u, mask, z, a, b, scale = cache
    matmul = kernels.get("matmul")
    s = dout.dtype.type(scale)
    dout2 = dout.reshape(-1, dout.shape[-1])                    # (..., out) -> (N, out)
    z2 = z.reshape(-1, z.shape[-1])                             # (..., r) -> (N, r)
    db = matmul(z2.T, dout2)
    db *= s
    dz = matmul(dout2, b.T)                                     # (N, r)
    dz *= s
    da = matmul(u.reshape(-1, u.shape[-1]).T, dz)               # (in, N) @ (N, r)
    if not need_dx:
        return None, da, db
    du = matmul(dz, a.T).reshape(u.shape)                       # (N, in) -> (..., in)
    return dropout_backward(du, mask), da, db


def check_rank(rank, base: Linear, where: str) -> int:
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 1:
        raise ValueError(f"{where}: rank={rank!r}: expected a positive int")
    limit = min(base.in_features, base.out_features)
    if rank > limit:
        raise ValueError(f"{where}: rank={rank} is larger than the layer ({base.in_features} -> "
                         f"{base.out_features}): expected 1 <= rank <= min(in, out) = {limit}")
    return int(rank)


def check_lora_args(alpha, dropout, where: str) -> None:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.number)) \
            or not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"{where}: alpha={alpha!r}: expected a finite number > 0")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float, np.number)) \
            or not 0.0 <= dropout < 1.0:
        raise ValueError(f"{where}: dropout={dropout!r}: expected a probability in [0, 1)")


class LoRALinear(Module):
    """A frozen Linear plus a trainable low-rank update (see lora_forward and lora_backward):

    forward:
        y = x @ W + b + s * dropout(x) @ A @ B,   s = alpha / r
    backward:
        dB += s Z^T @ dY,   dA += U^T @ dZ,   dZ = s dY @ B^T       U = dropout(x), Z = U @ A
        dx = dY @ W^T + dropout'(dZ @ A^T)                          (W, b frozen: no gradient)

    A: (in, r) ~ U(-1/sqrt(in), 1/sqrt(in)) (torch's and PEFT's Kaiming-uniform with a = sqrt(5));
    B: (r, out) = 0, so the wrapped layer starts as the Linear it wraps, exactly.

    The wrapper holds the base Linear's own `weight` and `bias` Parameters (the same objects, now
    frozen) under the same names, so a model's parameter names only gain `lora_A` and `lora_B`:
    h.0.attn.c_attn.weight stays h.0.attn.c_attn.weight. `merge()` folds the update into W and
    returns the plain Linear.
    """

    def __init__(self, base: Linear, rank: int, alpha: float = 16.0, dropout: float = 0.0,
                 rng: np.random.Generator | None = None):
        super().__init__()
        if not isinstance(base, Linear):
            raise TypeError(f"LoRALinear: base is a {type(base).__name__}: expected an npgpt.nn.Linear")
        self.rank = check_rank(rank, base, "LoRALinear")
        check_lora_args(alpha, dropout, "LoRALinear")
        rng = rng if rng is not None else np.random.default_rng(0)
        # the wrapped Linear, kept to compute x W + b and to hand back by merge(); set past
        # Module.__setattr__ so that it is not a child: its Parameters are ours, under our names
        object.__setattr__(self, "base", base)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.alpha, self.dropout, self.scale = float(alpha), float(dropout), float(alpha) / self.rank
        self.weight, self.bias = base.weight, base.bias
        for p in (base.weight, base.bias):
            if p is not None:
                p.requires_grad = False
        dt = base.weight.dtype
        bound = 1.0 / math.sqrt(self.in_features)
        self.lora_A = Parameter(rng.uniform(-bound, bound, (self.in_features, self.rank)).astype(dt))
        self.lora_B = Parameter(np.zeros((self.rank, self.out_features), dtype=dt))
        self.rng = rng.spawn(1)[0]                    # the adapter dropout's masks
        self._cache = None

    def forward(self, x):
        y = self.base.forward(x)                                      # x W + b (checks x)
        delta, self._cache = lora_forward(x, self.lora_A.data, self.lora_B.data, self.scale,
                                          self.dropout, self.rng, self.training)
        y += delta
        return y

    def backward(self, dout, need_dx: bool = True):
        dx = self.base.backward(dout, need_dx=need_dx)                # frozen W: dx only
        dx_lora, da, db = lora_backward(dout, self._cache, need_dx)
        if self.lora_A.requires_grad:
            self.lora_A.grad += da
        if self.lora_B.requires_grad:
            self.lora_B.grad += db
        if not need_dx:
            return None
        dx += dx_lora                       # the input feeds both paths: the gradients add
        return dx

    def merge(self) -> Linear:
        """W <- W + (alpha / r) A B, in place; returns the base Linear (which now computes what
        this wrapper computed, without dropout)."""
        matmul = kernels.get("matmul")
        self.weight.data += self.weight.dtype.type(self.scale) * matmul(self.lora_A.data, self.lora_B.data)
        return self.base

    def extra_repr(self):
        return (f"{self.in_features}, {self.out_features}, rank={self.rank}, alpha={self.alpha:g}, "
                f"dropout={self.dropout:g}")
