"""Data parallelism: P processes, one model each, one global batch shared out, one trajectory.

Every rank builds the same model from the same seed and draws the same GLOBAL batch from the
same Generator; each keeps its own rows of it (rank r: rows B r / P .. B (r+1) / P). Then, at
every step:

    L_r  = loss of my rows            (a mean over my units: rows, or real target tokens)
    w_r  = units(my rows) / units(global batch)
    L    = sum_r w_r L_r              one all-reduce of a number: the global batch's mean loss
    g_r  = backward                   the gradient of L_r
    g    = sum_r w_r g_r              one all-reduce of the gradient buffer (sync_gradients)
    clip, AdamW step                  the same numbers on every rank: the same new weights

The mean over the global batch is the weighted sum of the shares' means, so L and g are those
one process computes on the whole batch (up to the order of the additions), whatever P is, and
whether or not P divides the batch. With dropout the masks are drawn per share, so there the
trajectory does depend on P (and ranks draw alike from alike-seeded generators).

    group = DataParallel(world(), method="ring")
    fns = group.wrap(batch_fn, units=rows)                 # batch_fn, loss_fn, tokens_fn
    trainer = Trainer(model, optimizer, parallel=group, **fns, ...)

The Trainer calls group.sync_gradients(optimizer, share) between the backward and the clip,
lets only group.writer (rank 0) write the log, the bar and the checkpoints, and asks
group.any(flag) so that Ctrl-C stops every rank at the same step.
"""

from __future__ import annotations

import time
from typing import Callable, NamedTuple

import numpy as np

from .buffers import Packed
from .comm import Refused, check_method


class Share(NamedTuple):
    """This rank's part of a global batch."""
    batch: tuple        # its rows of every array of the global batch (same type as the batch)
    weight: float       # units(batch) / units(global batch): its part of the global mean
    tokens: int         # tokens of the global batch (for tokens/s)


def rows(batch) -> int:
    """The units of a batch whose loss is a mean over rows (or over rows of equal length)."""
    return len(batch[0])


def share_rows(n: int, parts: int, rank: int) -> tuple[int, int]:
    """Rank's rows (lo, hi) of a batch of n rows cut into parts consecutive shares whose sizes
    differ by at most one."""
    return rank * n // parts, (rank + 1) * n // parts


def take_rows(batch, lo: int, hi: int):
    """Rows lo..hi-1 of every array of batch (a tuple or NamedTuple of arrays, first axis B)."""
    cut = [np.asarray(a)[lo:hi] for a in batch]
    return type(batch)._make(cut) if hasattr(batch, "_fields") else tuple(cut)


def _default_loss(model, batch):
    return model.forward(*batch)[1]


def _default_tokens(batch) -> int:
    return int(np.asarray(batch[0]).size)


class DataParallel:
    """The data-parallel group of a training run (see the module docstring).

    comm: npgpt.dist.Comm; method: "mpi" (MPI_Allreduce) or "ring" (npgpt.dist.ring).
    writer: True on rank 0, the process that writes. sync_seconds: time spent in gradient
    all-reduces so far (for benchmarks).
    """

    def __init__(self, comm, method: str = "mpi"):
        check_method(method)
        self.comm, self.method = comm, method
        self.rank, self.size = comm.rank, comm.size
        self.writer = comm.rank == 0
        self.sync_seconds = 0.0
        self._grads: dict = {}

    def __repr__(self) -> str:
        return f"DataParallel(rank={self.rank}, size={self.size}, method={self.method!r})"

    # -- the batch, the loss ----------------------------------------------------------------

    def share(self, batch, units: Callable = rows, tokens_fn: Callable = _default_tokens) -> Share:
        """This rank's Share of a global batch; units(batch): what its loss is a mean over."""
        n = len(batch[0])
        if n < self.size:
            raise ValueError(f"a batch of {n} rows cannot be shared by {self.size} processes: "
                             f"every process needs at least one row (a --batch-size of at least "
                             f"{self.size}, or fewer processes)")
        mine = take_rows(batch, *share_rows(n, self.size, self.rank))
        return Share(mine, units(mine) / units(batch), tokens_fn(batch))

    def wrap(self, batch_fn: Callable, units: Callable = rows, loss_fn: Callable | None = None,
             tokens_fn: Callable | None = None) -> dict:
        """The Trainer's batch_fn, loss_fn and tokens_fn for this group, from the one-process
        ones: batches become Shares, the loss is the global batch's, tokens/s counts the global
        batch. loss_fn, tokens_fn None: the Trainer's defaults."""
        loss_fn, tokens_fn = loss_fn or _default_loss, tokens_fn or _default_tokens

        def global_loss(model, share: Share) -> float:
            local = float(loss_fn(model, share.batch))
            return float(self.comm.sum([share.weight * local])[0])

        return {"batch_fn": lambda rng: self.share(batch_fn(rng), units, tokens_fn),
                "loss_fn": global_loss, "tokens_fn": lambda share: share.tokens}

    # -- the Trainer's seam -----------------------------------------------------------------

    def sync_gradients(self, optimizer, share: Share) -> None:
        """g <- sum over ranks of weight_r g_r, in the optimizer's runs' gradient buffers (one
        all-reduce over all of them; frozen parameters have no run and are not sent)."""
        packed = self._grads.get(id(optimizer))
        if packed is None:
            packed = self._grads[id(optimizer)] = Packed([run.grad for run in optimizer.runs])
        buf = packed.pack()
        if share.weight != 1:
            buf *= share.weight
        t0 = time.perf_counter()
        self.comm.allreduce(buf, self.method)
        self.sync_seconds += time.perf_counter() - t0
        packed.unpack()

    def any(self, flag: bool) -> bool:
        """flag of any rank, on every rank (Ctrl-C on one stops all at the same step)."""
        return self.comm.any(flag)

    # -- agreeing before the start ----------------------------------------------------------

    def agree(self, facts: dict) -> None:
        """Refuse to start unless every rank has the same facts ({"settings": {...}, "data
        (SHA-256)": ...}): a Refused error naming the first rank that differs and how."""
        everyone = self.comm.allgather_objects(facts)
        for rank, theirs in enumerate(everyone[1:], start=1):
            for key, ours in everyone[0].items():
                if theirs.get(key) != ours:
                    raise Refused(f"the {self.size} processes disagree: rank {rank}'s "
                                  f"{_difference(key, theirs.get(key), ours)}: every process must "
                                  f"run the same command on the same data")


def _difference(key: str, theirs, ours) -> str:
    """How rank r's fact differs from rank 0's, in words (a dict: its first differing entry)."""
    if isinstance(theirs, dict) and isinstance(ours, dict):
        for k in dict.fromkeys([*ours, *theirs]):
            if theirs.get(k) != ours.get(k):
                return f"{key} {k}={theirs.get(k)!r} is not rank 0's {ours.get(k)!r}"
    return f"{key} {theirs!r} is not rank 0's {ours!r}"
