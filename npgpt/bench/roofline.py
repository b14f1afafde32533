"""The roofline: how much arithmetic and how many bytes each workload needs, and which of the
machine's two roofs (compute, memory) bounds it.

A workload doing F floating-point operations while moving M bytes has the arithmetic intensity
I = F / M (FLOP per byte). On a machine with a compute peak P (FLOP/s) and a bandwidth W
(byte/s) it cannot run faster than

    attainable = min(P, I * W)              FLOP/s (Williams, Waterman & Patterson, 2009)

so its time is bounded below by max(F / P, M / W). The roof that gives the larger of the two is
the one it is bound by, and `fraction` reports the achieved FLOP/s over the attainable: 1.0
would be the machine's limit for that workload. P is the best sgemm of numpy's BLAS, W the
triad (peak.py).

The counts, per unit of work (N_w: the weights that multiply, i.e. every parameter but the
position table; L layers, C wide, V tokens, one batch row unless said):

    train step (B x T tokens)  F = (6 N_w + 12 L C T) B T      nanoGPT's estimate (forward 2,
                                                               backward 4 per weight and token;
                                                               the attention's scores and sums)
                               M = 4 N * 12 bytes              each parameter through the step
                                                               (read twice, its gradient written
                                                               and read, AdamW's 4 reads and 3
                                                               writes, zeroing): a lower bound,
                                                               activations not counted
    prefill (P prompt tokens)  F = 2 N_w P + 2 L C P^2         every weight once per token; the
                                                               causal scores and sums (half of
                                                               P^2, twice: q k^T and p v); the
                                                               head for the last position only
                                      - 2 C V (P - 1)
                               M = 4 N_w                       the weights, read once
    decode (one token after t) F = 2 N_w + 4 L C t             every weight once; attention over
                                                               the t cached positions
                               M = 4 N_w + 8 L C t             the weights and the KV cache read

All float32 (4 bytes a number). A matrix-vector product does 2 FLOPs per 4-byte weight: decode
is bound by memory at every size; training and prefill are bound by compute.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import GPTConfig

FLOAT = 4      # bytes per float32


def weights(cfg: GPTConfig) -> tuple[int, int]:
    """(all parameters N, the ones that multiply N_w = N without the position table)."""
    C, L, V = cfg.n_embd, cfg.n_layer, cfg.vocab_size
    ln = 2 * C
    block = 2 * ln + (C * 3 * C + 3 * C) + (C * C + C) + (C * 4 * C + 4 * C) + (4 * C * C + C)
    wpe = cfg.block_size * C if cfg.pos_encoding == "learned" else 0
    head = 0 if cfg.tie_weights else C * V
    n = V * C + wpe + L * block + ln + head
    return n, n - wpe


def train_step(cfg: GPTConfig, B: int, T: int) -> tuple[float, float]:
    """(FLOPs, bytes) of one training step on B x T tokens (see the module docstring)."""
    n, nw = weights(cfg)
    flops = (6 * nw + 12 * cfg.n_layer * cfg.n_embd * T) * B * T
    return float(flops), float(12 * FLOAT * n)


def prefill(cfg: GPTConfig, P: int) -> tuple[float, float]:
    """(FLOPs, bytes) of reading a P-token prompt and scoring the next token (B = 1)."""
    _, nw = weights(cfg)
    L, C, V = cfg.n_layer, cfg.n_embd, cfg.vocab_size
    flops = 2 * nw * P + 2 * L * C * P * P - 2 * C * V * (P - 1)
    return float(flops), float(FLOAT * nw)


def decode(cfg: GPTConfig, t: float) -> tuple[float, float]:
    """(FLOPs, bytes) of one new token after t cached positions (B = 1); t may be a mean."""
    _, nw = weights(cfg)
    L, C = cfg.n_layer, cfg.n_embd
    return float(2 * nw + 4 * L * C * t), float(FLOAT * nw + 2 * FLOAT * L * C * t)


@dataclass(frozen=True)
class Roofs:
    """The machine's two roofs, measured (peak.py): GFLOP/s and GB/s."""
    gflops: float
    gbs: float

    def bound(self, flops: float, nbytes: float) -> tuple[str, float]:
        """("compute" or "memory", the attainable GFLOP/s) for a workload of flops and bytes."""
        intensity = flops / nbytes
        if intensity * self.gbs < self.gflops:
            return "memory", intensity * self.gbs
        return "compute", self.gflops

    def fraction(self, flops: float, nbytes: float, seconds: float) -> float:
        """Achieved GFLOP/s over the attainable: 1.0 is the machine's limit."""
        return flops / seconds / 1e9 / self.bound(flops, nbytes)[1]
