"""The processes of an MPI launch, and the few collectives data parallelism needs.

    mpiexec -n 4 npgpt train ...          # 4 processes, ranks 0..3, one world

Whether this process is one of several is read from the launcher's environment, without
starting MPI: MPICH's and Intel MPI's Hydra set PMI_RANK / PMI_SIZE, Open MPI sets
OMPI_COMM_WORLD_RANK / OMPI_COMM_WORLD_SIZE, MVAPICH MV2_COMM_WORLD_*. Only then is mpi4py
imported (importing it starts MPI), so a plain `npgpt train` never loads it.

    launched() -> bool                    several processes? (from the environment alone)
    comm = world()                        this process's Comm, made once
    comm.rank, comm.size
    comm.allreduce(buf, "mpi" | "ring")   buf <- the sum over ranks of buf, in place
    comm.allgather(buf, bounds, method)   rank r's buf[bounds[r]:bounds[r+1]] to every rank
    comm.sum(values), comm.any(flag), comm.allgather_objects(obj)
    comm.ranks_on_this_node()             the processes sharing this machine's cores
    with guard("npgpt train"): ...        an error here ends every process, never a hang

No hang. A process blocked in a collective waits for all the others; if one of them raised and
left, it would wait forever. So:

  - a process that raises calls MPI_Abort (guard), which ends every process of the job;
  - a process killed outright (SIGKILL, out of memory) is noticed by the launcher (mpiexec),
    which ends the others;
  - a process that hangs (alive, but never reaching the collective) is caught by a watchdog: a
    thread that ends the job when this process has waited in one collective for longer than
    NPGPT_DIST_TIMEOUT seconds. As every rank does the same work, a wait is only how far the
    slowest rank lags (rank 0 writing a checkpoint, a busier machine, Numba compiling on one
    machine and loading its cache on another): the default, 1800, is generous.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import threading
import time
import traceback

import numpy as np

from .ring import ring_allgather, ring_allreduce

# The launchers' variables holding the number of processes, and this one's rank.
SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK")
LOCAL_SIZE_VARIABLES = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE")   # processes on this machine
METHODS = ("mpi", "ring")
DEFAULT_TIMEOUT = 1800.0
# An input error raised on a rank other than 0 waits this long for rank 0, which raises the same
# error when it comes from the settings or the files every rank reads, to say it and end the job:
# the message is printed once. A rank still alive after the wait has an error of its own: it says it.
ALIKE_WAIT = 10.0
# Errors of the input (a file, a setting): exit status 2, as the command line's; anything else 1.
INPUT_ERRORS = (ValueError, TypeError, OSError, KeyError)


class Refused(ValueError):
    """Raised alike by every process (the processes disagree on the settings or the data):
    rank 0 alone says so, and the job ends."""


def _from_environment(names: tuple, default: int) -> int:
    for name in names:
        value = os.environ.get(name)
        if value is not None and value.strip().isdigit():
            return int(value)
    return default


def launched() -> bool:
    """True when this process is one of several started by an MPI launcher (mpiexec -n P,
    P > 1). Reads the environment only: MPI is not started, mpi4py not imported."""
    return _from_environment(SIZE_VARIABLES, 1) > 1


def speaks() -> bool:
    """True unless this process is a rank other than 0 of an MPI launch: what every rank would
    say alike (the command line's usage, help and mistakes) is said by rank 0 alone. Reads the
    environment only, as launched() does."""
    return not launched() or _from_environment(RANK_VARIABLES, 0) == 0


class _Watchdog:
    """Ends the job when this process has waited in one collective for more than timeout
    seconds. One thread, started at the first wait; waiting(what) marks a wait."""

    def __init__(self, timeout: float, on_timeout):
        self.timeout, self.on_timeout = float(timeout), on_timeout
        self._since, self._what = 0.0, None      # written in this order, read in the other
        self._thread = None

    @contextlib.contextmanager
    def waiting(self, what: str):
        self._since = time.monotonic()
        self._what = what
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="npgpt-dist-watchdog", daemon=True)
            self._thread.start()
        try:
            yield
        finally:
            self._what = None

    def _watch(self) -> None:
        while True:
            time.sleep(min(1.0, self.timeout / 4))
            what = self._what
            waited = time.monotonic() - self._since
            if what is not None and waited > self.timeout:
                self.on_timeout(what, waited)


class Comm:
    """MPI_COMM_WORLD through mpi4py, with the collectives npgpt uses (see the module docstring).
    Every collective must be called by every rank, in the same order: that is the contract of
    data parallelism, which keeps every rank on the same step of the same program."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT):
        # mpi4py only here, under an MPI launch: importing it starts MPI (MPI_Init)
        from mpi4py import MPI
        self.MPI, self.comm = MPI, MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.watchdog = _Watchdog(timeout, self._timed_out)

    def __repr__(self) -> str:
        return f"Comm(rank={self.rank}, size={self.size})"

    def ranks_on_this_node(self) -> int:
        """How many processes of the job run on this machine (they share its cores): from the
        launcher where it says (MPICH's Hydra: MPI_LOCALNRANKS; Open MPI:
        OMPI_COMM_WORLD_LOCAL_SIZE), else the size of MPI's shared-memory group of this process
        (MPI_Comm_split_type, a collective: every rank calls it, as every rank has the same
        environment)."""
        told = _from_environment(LOCAL_SIZE_VARIABLES, 0)
        if told > 0:
            return told
        node = self.comm.Split_type(self.MPI.COMM_TYPE_SHARED)
        try:
            return node.Get_size()
        finally:
            node.Free()

    # -- arrays ------------------------------------------------------------------------------

    def allreduce(self, buf: np.ndarray, method: str = "mpi") -> None:
        """buf <- sum over ranks of buf, in place (1-D, contiguous). "mpi": MPI_Allreduce, the
        library's own algorithm; "ring": npgpt.dist.ring's, written out with messages."""
        if method == "ring":
            ring_allreduce(self, buf)
            return
        check_method(method)
        with self.watchdog.waiting("all-reduce"):
            self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)

    def allgather(self, buf: np.ndarray, bounds: list[int], method: str = "mpi") -> None:
        """Every rank's part buf[bounds[r]:bounds[r+1]] to every rank, in place."""
        if method == "ring":
            ring_allgather(self, buf, bounds)
            return
        check_method(method)
        counts = np.diff(bounds)
        with self.watchdog.waiting("all-gather"):
            self.comm.Allgatherv(self.MPI.IN_PLACE, [buf, (counts, np.asarray(bounds[:-1]))])

    def sendrecv(self, send: np.ndarray, dest: int, recv: np.ndarray, source: int) -> None:
        """Send `send` to rank dest while receiving `recv` from rank source (one ring step)."""
        with self.watchdog.waiting("a ring step"):
            self.comm.Sendrecv(send, dest=dest, recvbuf=recv, source=source)

    # -- small values ----------------------------------------------------------------------

    def sum(self, values) -> np.ndarray:
        """The sum over ranks of a few float64 values (a loss, a count)."""
        buf = np.array(values, dtype=np.float64).reshape(-1)
        with self.watchdog.waiting("the sum of a scalar"):
            self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        return buf

    def any(self, flag: bool) -> bool:
        """True on every rank when flag is True on any rank."""
        return bool(self.sum([1.0 if flag else 0.0])[0] > 0)

    def allgather_objects(self, obj) -> list:
        """[obj of rank 0, obj of rank 1, ...] on every rank (pickled: for small things)."""
        with self.watchdog.waiting("an exchange of settings"):
            return self.comm.allgather(obj)

    # -- ending the job ----------------------------------------------------------------------

    def abort(self, code: int = 1) -> None:
        """End every process of the job now (MPI_Abort); does not return."""
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        time.sleep(0.5)          # the launcher forwards what was printed before it ends the job
        self.comm.Abort(code)    # tells the launcher, which ends every process...
        os._exit(code)           # ...but may return before it has ended this one

    def _timed_out(self, what: str, waited: float) -> None:
        print(f"npgpt (rank {self.rank} of {self.size}): waited {waited:.0f} s in {what} for the "
              f"other processes (NPGPT_DIST_TIMEOUT={self.watchdog.timeout:g} s): one of them died "
              f"or hangs; ending every process", file=sys.stderr)
        self.abort(1)


def check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"method={method!r}: expected one of {list(METHODS)}")


@functools.cache
def world() -> Comm:
    """This process's Comm (MPI is started once per process, so the Comm is made once).
    The watchdog's timeout: NPGPT_DIST_TIMEOUT seconds (default 1800)."""
    raw = os.environ.get("NPGPT_DIST_TIMEOUT", str(DEFAULT_TIMEOUT))
    try:
        timeout = float(raw)
    except ValueError:
        raise ValueError(f"NPGPT_DIST_TIMEOUT={raw!r}: expected a number of seconds > 0") from None
    if not timeout > 0:
        raise ValueError(f"NPGPT_DIST_TIMEOUT={raw!r}: expected a number of seconds > 0")
    return Comm(timeout)


def _say(line: str) -> None:
    """One line on stderr in one write, so that the lines of several ranks do not interleave."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


@contextlib.contextmanager
def guard(name: str = "npgpt"):
    """Under an MPI launch, yields world() and turns an exception raised inside into the end of
    every process: one message on stderr naming this rank, then MPI_Abort (exit status 2 for
    bad input, 1 otherwise, 130 for Ctrl-C). A Refused error (raised by every rank alike) is
    told once, by rank 0; so is an input error (a setting, a missing file), which every rank
    meets alike: the other ranks wait ALIKE_WAIT seconds for rank 0 to end the job before they
    say theirs. Without a launch: yields None and changes nothing."""
    if not launched():
        yield None
        return
    comm = world()
    who = f"{name} (rank {comm.rank} of {comm.size})"
    try:
        yield comm
    except Refused as e:
        if comm.rank != 0:           # rank 0 raised the same error and ends the job; wait for it
            time.sleep(30)
        else:
            _say(f"{who}: error: {e}")
        comm.abort(2)
    except SystemExit as e:
        if e.code in (0, None):
            raise
        comm.abort(e.code if isinstance(e.code, int) else 1)
    except KeyboardInterrupt:
        _say(f"{who}: interrupted")
        comm.abort(130)
    except BaseException as e:
        if not isinstance(e, INPUT_ERRORS):        # unexpected: the traceback helps
            traceback.print_exc()
        elif comm.rank != 0:                       # most likely rank 0's too: let it say so
            time.sleep(ALIKE_WAIT)
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        _say(f"{who}: error: {message}; ending every process")
        comm.abort(2 if isinstance(e, INPUT_ERRORS) else 1)
