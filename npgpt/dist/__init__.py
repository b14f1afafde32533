"""Data-parallel training over MPI: several processes, on one machine or many, one model.

    mpiexec -n 4 npgpt train --allreduce ring --shard-optimizer ...

Each process (rank) holds the whole model, takes its share of every global batch, and before
each optimizer step the gradients are summed across ranks by an all-reduce, so that every rank
makes the same update and the run follows the trajectory of one process on the same batches.

    comm.py       launched(), speaks() (from the launcher's environment: mpi4py is imported
                  only under mpiexec), world(): the Comm (allreduce, allgather, sum, any, abort), and
                  guard(): an error on one rank ends every rank, never a hang
    ring.py       the ring all-reduce written with point-to-point messages: reduce-scatter then
                  all-gather, P - 1 steps each; each rank sends 2 (P - 1) / P of the buffer
    buffers.py    Packed: several runs of parameters as one buffer, one collective for all
    parallel.py   DataParallel: the shares of a batch, the global loss, the gradient sync, the
                  writer (rank 0), the check that every rank runs the same thing
    zero.py       ShardedAdamW: ZeRO stage 1, AdamW's moments split across the ranks

The runs (npgpt.runs) use it under mpiexec; the Trainer's seam is its `parallel` argument.
"""

from .buffers import Packed
from .comm import METHODS, Comm, Refused, guard, launched, speaks, world
from .parallel import DataParallel, Share, rows, share_rows, take_rows
from .ring import chunk_bounds, ring_allgather, ring_allreduce, ring_reduce_scatter
from .zero import ShardedAdamW

__all__ = ["Comm", "DataParallel", "METHODS", "Packed", "Refused", "Share", "ShardedAdamW",
           "chunk_bounds", "guard", "launched", "ring_allgather", "ring_allreduce",
           "ring_reduce_scatter", "rows", "share_rows", "speaks", "take_rows", "world"]
