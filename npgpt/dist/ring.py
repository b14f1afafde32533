"""The ring all-reduce, written with point-to-point messages: what MPI_Allreduce does for large
buffers, and NCCL on GPUs, made visible.

P ranks sit on a ring; each sends only to its right neighbour (r + 1) and receives only from its
left (r - 1). Every rank's buffer of n numbers is cut into P chunks (bounds: chunk c is
buf[bounds[c]:bounds[c+1]], sizes differing by at most one). Two phases of P - 1 steps each:

  reduce-scatter: at step s, rank r sends chunk (r - 1 - s) to the right and adds the chunk
                  (r - 2 - s) it receives from the left into its own. After P - 1 steps rank r
                  holds chunk r summed over all ranks.
  all-gather:     at step s, rank r sends chunk (r - s), complete, to the right and receives
                  the complete chunk (r - 1 - s) from the left. After P - 1 steps every rank
                  holds every chunk, summed.

P = 3, ranks holding a, b, c (chunks 0 1 2); "ab" is a + b:

                  reduce-scatter                          all-gather
            start      step 0     step 1             step 0       step 1
  rank 0   a0 a1 a2   a0 ac a2   abc ac a2   ->   abc ac abc   abc abc abc
  rank 1   b0 b1 b2   b0 b1 ab   b0 abc ab   ->   abc abc ab   abc abc abc
  rank 2   c0 c1 c2   bc c1 c2   bc c1 abc   ->   bc abc abc   abc abc abc

Cost. Each rank sends 2 (P - 1) chunks of n / P numbers: 2 (P - 1) / P * n, under 2n whatever
P is, and receives as much; no rank is a bottleneck (a reduce to one root and a broadcast back
would send (P - 1) n through the root). With a latency alpha per message, a time beta per byte
and s bytes a number,

    T_ring = 2 (P - 1) alpha + 2 (P - 1) / P * n s beta        (+ (P - 1) / P * n additions)

which is the least bandwidth term any all-reduce can have; the 2 (P - 1) alpha makes it a poor
choice for tiny buffers, where MPI switches to recursive doubling (log2 P messages).

Every chunk is summed along one path and then copied, so all ranks end with the same bits (the
order of the additions differs from chunk to chunk, hence from np.sum's, by rounding only).
"""

from __future__ import annotations

import numpy as np


def chunk_bounds(n: int, parts: int) -> list[int]:
    """[0, ..., n]: parts + 1 bounds cutting range(n) into parts chunks whose sizes differ by at
    most one (chunk c is range(bounds[c], bounds[c + 1]); a chunk is empty when n < parts)."""
    return [c * n // parts for c in range(parts + 1)]


def ring_reduce_scatter(comm, buf: np.ndarray, bounds: list[int]) -> None:
    """Phase 1: afterwards rank r's chunk r, buf[bounds[r]:bounds[r+1]], holds the sum over
    ranks (the other chunks hold partial sums). comm: sendrecv, rank, size (npgpt.dist.Comm)."""
    P, r = comm.size, comm.rank
    right, left = (r + 1) % P, (r - 1) % P
    recv = np.empty(max(np.diff(bounds), default=0), dtype=buf.dtype)
    for s in range(P - 1):
        out, into = (r - 1 - s) % P, (r - 2 - s) % P
        lo, hi = bounds[into], bounds[into + 1]
        comm.sendrecv(buf[bounds[out]:bounds[out + 1]], right, recv[:hi - lo], left)
        buf[lo:hi] += recv[:hi - lo]                # my part of the sum of chunk `into`


def ring_allgather(comm, buf: np.ndarray, bounds: list[int]) -> None:
    """Phase 2 (and the all-gather of ZeRO's weights): rank r's chunk r goes round the ring, so
    that every rank ends with every rank's chunk. Received straight into place."""
    P, r = comm.size, comm.rank
    right, left = (r + 1) % P, (r - 1) % P
    for s in range(P - 1):
        out, into = (r - s) % P, (r - 1 - s) % P
        comm.sendrecv(buf[bounds[out]:bounds[out + 1]], right, buf[bounds[into]:bounds[into + 1]], left)


def ring_allreduce(comm, buf: np.ndarray) -> None:
    """buf <- the sum over ranks of buf, in place: reduce-scatter, then all-gather (see the
    module docstring for the steps and the cost). buf: 1-D and contiguous."""
    if buf.ndim != 1 or not buf.flags.c_contiguous:
        raise ValueError(f"ring_allreduce: buf of shape {buf.shape} is not a contiguous 1-D array")
    bounds = chunk_bounds(buf.size, comm.size)
    ring_reduce_scatter(comm, buf, bounds)
    ring_allgather(comm, buf, bounds)
