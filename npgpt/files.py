"""Writing files so that nothing is ever half-written: a temporary file beside the target, flushed
to disk, then renamed over it.

    write_atomic("out/ckpt.safetensors", data)       # bytes
    write_atomic("out/metrics.json", text)           # str, written as UTF-8

A crash, Ctrl-C or a full disk at any moment leaves either the old file or the new one, never a
mix. The new file gets the permissions a plain `open(path, "w")` would give it (0666 less the
umask), not the 0600 of a temporary file: a checkpoint is readable by whoever could read the
folder's other files.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _umask() -> int:
    """The process's umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path, data: bytes | str) -> Path:
    """Write data to path atomically (see the module docstring); returns the path.

    str is written as UTF-8 with the line ends as given. The folder is made if missing. On any
    error (KeyboardInterrupt included) the temporary file is removed and path keeps its
    previous content; an OSError that names no file (ENOSPC: a full disk) is raised again
    naming path and saying so.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"path {str(path)!r} is a directory: expected a file name")
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename is None:    # a full disk names no file: say which
            kept = "keeps its previous content" if path.exists() else "was not created"
            raise OSError(e.errno, f"{e.strerror}: writing {str(path)!r} failed; the file {kept}") from e
        raise
    _fsync_dir(path.parent)     # make the rename itself durable
    return path


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:             # not possible on some systems (Windows): the rename still happened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
