"""What tests/test_dist*.py run under `mpiexec -n P`: python tests/dist_script.py SCENARIO ...

    collectives                the ring and MPI all-reduce against np.sum, the all-gathers,
                               Packed, ZeRO-1's moment bytes; prints "ok" on rank 0
    runs FILE.json             the runs listed in FILE ([{"run": "pretrain" | "seq2seq" | "finetune",
                               "settings": {...}, "resume": bool}]); after the last step every
                               rank checks that all ranks hold the same weights, to the bit
    fault KIND STEP FILE.json  one run of FILE's first entry in which rank 1, at STEP, does
                               KIND: "kill" (SIGKILL itself), "raise", or "hang" (sleep)
    threads FILE.json          one run of FILE's first entry; at its last step rank 0 prints
                               "threads: " and the JSON of every rank's Numba and OpenBLAS
                               thread counts ({"numba": [...], "blas": [...]}; blas None where
                               numpy's BLAS is not OpenBLAS)
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import time

import numba
import numpy as np

from npgpt import dist
from npgpt.kernels.cpu.blas import openblas_api
from npgpt.config import GPTConfig
from npgpt.models.gpt import GPT
from npgpt.optim import AdamW
from npgpt.runs import finetune, pretrain, seq2seq

RUNS = {"pretrain": (pretrain, pretrain.PretrainConfig), "seq2seq": (seq2seq, seq2seq.Seq2SeqConfig),
        "finetune": (finetune, finetune.FinetuneConfig)}


def collectives(comm) -> None:
    for n in (0, 1, 2, 3, 7, 64, 1001):
        for dtype, tol in ((np.float64, 1e-13), (np.float32, 1e-5)):
            mine = np.random.default_rng(100 + comm.rank).standard_normal(n).astype(dtype)
            every = [np.random.default_rng(100 + r).standard_normal(n).astype(dtype) for r in range(comm.size)]
            want = np.sum(every, axis=0, dtype=np.float64)
            for method in dist.METHODS:
                got = mine.copy()
                comm.allreduce(got, method)
                assert got.dtype == dtype and np.allclose(got, want, rtol=tol, atol=tol), (method, n, got, want)
                digests = comm.allgather_objects(got.tobytes())
                assert all(d == digests[0] for d in digests), f"{method}: ranks differ (n={n})"
                bounds = dist.chunk_bounds(n, comm.size)
                parts = np.full(n, -1.0, dtype)
                parts[bounds[comm.rank]:bounds[comm.rank + 1]] = comm.rank
                comm.allgather(parts, bounds, method)
                assert (parts == np.repeat(np.arange(comm.size), np.diff(bounds))).all(), (method, n)
    # the processes on this machine: the launcher's count, and MPI's own (without it)
    assert comm.ranks_on_this_node() == comm.size
    for name in dist.comm.LOCAL_SIZE_VARIABLES:
        os.environ.pop(name, None)
    assert comm.ranks_on_this_node() == comm.size
    # several arrays, one buffer
    arrays = [np.full(k, float(comm.rank + 1)) for k in (3, 1, 5)]
    packed = dist.Packed(arrays)
    comm.allreduce(packed.pack(), "ring")
    packed.unpack()
    assert all((a == comm.size * (comm.size + 1) / 2).all() for a in arrays)
    # ZeRO-1: the moments of one rank are about 1/P of AdamW's
    model = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=32), seed=0)
    whole = AdamW(model.parameters())
    sharded = dist.ShardedAdamW(model.parameters(), comm)
    full = sum(a.nbytes for a in whole._m + whole._v)
    every = comm.allgather_objects(sharded.moment_bytes())
    itemsize = np.dtype(model.config.dtype).itemsize
    assert sum(every) == full, (every, full)
    assert max(every) - min(every) <= 2 * itemsize, every        # the shares differ by one number
    if comm.rank == 0:
        print(f"ok: moments {full} bytes in one process, {every} on {comm.size}")


def weights_agree(comm):
    """on_step: at the last step, every rank's weights must be the same bits."""
    def check(trainer, rec):
        if rec["step"] == trainer.max_iters:
            h = hashlib.sha256()
            for _, p in trainer.model.named_parameters():
                h.update(p.data.tobytes())
            digests = comm.allgather_objects(h.hexdigest())
            assert len(set(digests)) == 1, f"the ranks' weights differ: {digests}"
    return check


def start(entry: dict, on_step):
    module, config = RUNS[entry["run"]]
    if entry.get("resume"):
        cfg = module.resume_config(entry["settings"]["out"], entry["settings"])
    else:
        cfg = config(**entry["settings"])
    return module.run(cfg, resume=bool(entry.get("resume")), progress=False, on_step=on_step)


def fault(comm, kind: str, at: int, entry: dict) -> None:
    def misbehave(trainer, rec):
        if comm.rank != 1 or rec["step"] != at:
            return
        if kind == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if kind == "raise":
            raise RuntimeError(f"rank 1 fails on purpose at step {at}")
        time.sleep(120)                                          # "hang"
    start(entry, misbehave)


def threads(comm, entry: dict) -> None:
    get = openblas_api("get_num_threads")

    def report(trainer, rec):
        if rec["step"] == trainer.max_iters:
            every = comm.allgather_objects((numba.get_num_threads(), get() if get else None))
            if comm.rank == 0:
                print("threads: " + json.dumps({"numba": [n for n, _ in every], "blas": [b for _, b in every]}))
    start(entry, report)


def main(argv) -> None:
    with dist.guard("dist_script") as comm:
        if argv[0] == "collectives":
            collectives(comm)
        elif argv[0] == "runs":
            for entry in json.loads(open(argv[1]).read()):
                start(entry, weights_agree(comm))
            if comm.rank == 0:
                print("ok")
        elif argv[0] == "fault":
            fault(comm, argv[1], int(argv[2]), json.loads(open(argv[3]).read())[0])
        elif argv[0] == "threads":
            threads(comm, json.loads(open(argv[1]).read())[0])
        else:
            raise ValueError(f"unknown scenario {argv[0]!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
