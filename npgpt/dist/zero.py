"""ZeRO stage 1 (Rajbhandari et al., 2020): AdamW whose moments are split across the ranks.

Under plain data parallelism every rank holds the whole model, the whole gradient AND the whole
optimizer state: AdamW's m and v, two numbers per parameter, twice the model. All P ranks then
do the same update on the same numbers. ZeRO-1 gives each rank 1/P of that work and memory:

    flat index space of the trainable parameters (the optimizer's runs, end to end), n numbers
    |<------- rank 0 ------->|<------- rank 1 ------->|<------- rank 2 ------->|
    m, v kept here only        m, v kept here only        m, v kept here only

    1. the gradient is all-reduced as before (every rank has the whole averaged gradient, so
       the clip's global norm is computed as in one process)
    2. each rank updates ITS slice of the weights with its slice of m and v (adamw_update, or
       the backend's fused twin: the same rule, on a slice)
    3. an all-gather sends every rank's updated slice to every rank: all hold the whole model

Memory: m and v fall from 2n to 2n/P numbers per rank. Traffic: the all-reduce, 2 (P-1)/P n,
plus the all-gather, (P-1)/P n, per step. (ZeRO proper replaces the all-reduce by a
reduce-scatter, (P-1)/P n, as each rank only needs its slice of the gradient, and computes the
clip's norm from the slices with one all-reduce of a number: the same traffic as plain data
parallelism. npgpt keeps the whole gradient so the Trainer's clip stays the one-process code.)

The state_dict is AdamW's, whole (the slices are gathered): a checkpoint is the one a single
process writes and reads, and a run may resume with another number of processes. Saving is
therefore a collective: every rank calls state_dict() at the same time.
"""

from __future__ import annotations

import numpy as np

from .. import kernels
from ..optim import AdamW, adamw_update
from ..optim.groups import check_number
from ..optim.optimizer import Optimizer
from .buffers import Packed
from .ring import chunk_bounds


class ShardedAdamW(AdamW):
    """AdamW over params, its moments sharded across comm's ranks (ZeRO stage 1).

    comm: npgpt.dist.Comm (rank, size, allgather); method: "mpi" or "ring", the all-gather's.
    Every rank passes the same parameters, in the same order. The other arguments are AdamW's.
    bounds: the flat index space's cut into comm.size slices; rank r updates bounds[r]..bounds[r+1].
    """

    checkpoint_type = "AdamW"       # the state_dict is AdamW's: checkpoints are one process's

    def __init__(self, params, comm, method: str = "mpi", lr: float = 1e-3, betas: tuple = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.01):
        # Optimizer's constructor, not AdamW's: AdamW's would allocate the whole of m and v
        Optimizer.__init__(self, params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})
        self.comm, self.method = comm, method
        self._weights = Packed([run.data for run in self.runs])
        self.bounds = chunk_bounds(self._weights.size, comm.size)
        self.pieces = self._weights.pieces(self.bounds[comm.rank], self.bounds[comm.rank + 1])
        self._m = [np.zeros(e - s, dtype=self.runs[k].data.dtype) for k, s, e in self.pieces]
        self._v = [np.zeros_like(m) for m in self._m]

    def moment_bytes(self) -> int:
        """Bytes of AdamW's m and v held by this rank (AdamW: 2 n itemsize; here about 1/P of it)."""
        return sum(a.nbytes for a in self._m + self._v)

    def step(self, grad_scale: float = 1.0, zero_grad: bool = False) -> None:
        """Update this rank's slice (one update call per piece of a run), then all-gather the
        weights so that every rank holds the whole updated model. grad_scale and zero_grad as
        AdamW.step's: the update uses grad_scale * p.grad; zero_grad leaves every p.grad at 0
        (the whole gradient, not just this rank's slice: every rank holds all of it)."""
        self._prepare_step()
        grad_scale = check_number(type(self).__name__, "grad_scale", grad_scale, 0)
        self.step_count += 1
        update = kernels.fused("adamw_update") or adamw_update
        for (k, s, e), m, v in zip(self.pieces, self._m, self._v):
            run = self.runs[k]
            group = self.param_groups[run.group]
            beta1, beta2 = group["betas"]
            update(run.data[s:e], run.grad[s:e], m, v, run.decay[s:e], group["lr"], beta1, beta2,
                   group["eps"], group["weight_decay"], self.step_count, grad_scale)
        self._gather(self._weights)
        if zero_grad:
            for run in self.runs:
                run.grad.fill(0)

    def _gather(self, packed: Packed) -> None:
        """Every rank's slice of packed's buffer to every rank."""
        buf = packed.pack()
        self.comm.allgather(buf, self.bounds, self.method)
        packed.unpack()

    def _whole(self, slices: list[np.ndarray]) -> list[np.ndarray]:
        """A moment whole, one array per run, from every rank's slices (a collective)."""
        whole = [np.zeros_like(run.data) for run in self.runs]
        for (k, s, e), part in zip(self.pieces, slices):
            whole[k][s:e] = part
        self._gather(Packed(whole))
        return whole

    def state_dict(self) -> dict:
        """AdamW.state_dict() of the whole optimizer: the moments gathered from every rank. A
        collective: every rank calls it at the same point (the Trainer's save does)."""
        return self._arrays_state(m=self._whole(self._m), v=self._whole(self._v))

    def load_state_dict(self, state: dict) -> None:
        """Restore an AdamW state_dict (of any number of processes): each rank keeps its slice."""
        self._load_groups(state, "mv")
        n = len(self._params)
        for prefix, slices in (("m", self._m), ("v", self._v)):
            whole = [np.zeros_like(run.data) for run in self.runs]
            self._load_state(whole, state, prefix, range(n))
            for (k, s, e), part in zip(self.pieces, slices):
                part[...] = whole[k][s:e]
        self.step_count = int(state["step"])
