"""Several 1-D arrays seen as one buffer, so that one collective moves them all.

An optimizer's runs (npgpt.optim.flat) are 1-D views: a flattened GPT is one run, but a model
with adapters (LoRA), a classifier head or frozen layers has several. A collective per run would
pay a message latency per run; instead they travel as one buffer:

    packed = Packed([run.grad for run in optimizer.runs])
    buf = packed.pack()          # one run: buf IS it (no copy); several: [ g0 | g1 | ... ]
    comm.allreduce(buf)
    packed.unpack()              # several: the sums copied back into the runs

The positions of that buffer are the flat index space ZeRO shards (pieces(lo, hi): which parts
of which arrays a rank's range covers).
"""

from __future__ import annotations

import numpy as np


class Packed:
    """arrays (1-D, one dtype) as one buffer of their total size (see the module docstring)."""

    def __init__(self, arrays: list[np.ndarray]):
        if not arrays:
            raise ValueError("Packed: no arrays: expected at least one 1-D array")
        dtypes = sorted({a.dtype.name for a in arrays})
        if len(dtypes) > 1 or any(a.ndim != 1 for a in arrays):
            raise ValueError(f"Packed: arrays of dtypes {dtypes} and shapes "
                             f"{sorted({a.shape for a in arrays})[:3]}: expected 1-D arrays of one dtype")
        self.arrays = list(arrays)
        self.starts = np.concatenate([[0], np.cumsum([a.size for a in arrays])]).tolist()
        self.size = self.starts[-1]
        one = len(arrays) == 1 and arrays[0].flags.c_contiguous
        self.buf = arrays[0] if one else np.empty(self.size, dtype=arrays[0].dtype)
        self.copies = not one        # pack and unpack copy (several arrays)

    def pack(self) -> np.ndarray:
        """The buffer, holding the arrays' values."""
        if self.copies:
            for a, s, e in zip(self.arrays, self.starts, self.starts[1:]):
                self.buf[s:e] = a
        return self.buf

    def unpack(self) -> None:
        """Copy the buffer back into the arrays."""
        if self.copies:
            for a, s, e in zip(self.arrays, self.starts, self.starts[1:]):
                a[...] = self.buf[s:e]

    def pieces(self, lo: int, hi: int) -> list[tuple[int, int, int]]:
        """(k, s, e) for each array k whose elements s..e-1 lie in the buffer's range [lo, hi)."""
        out = []
        for k, (start, stop) in enumerate(zip(self.starts, self.starts[1:])):
            s, e = max(lo, start), min(hi, stop)
            if s < e:
                out.append((k, s - start, e - start))
        return out
