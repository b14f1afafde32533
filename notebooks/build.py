"""Build the notebooks: each jupytext source NN_name.py becomes NN_name.ipynb, executed.

    python notebooks/build.py          # every notebook
    python notebooks/build.py 02       # the notebooks whose name starts with 02

The .py sources (jupytext's percent format: `# %%` opens a code cell, `# %% [markdown]` a text
cell) are what you edit; the .ipynb files are written from them, with their outputs, so that they
read on a code host. tests/test_notebooks.py runs every source and fails if a stored .ipynb does
not hold its source's cells. The kernel is this interpreter, set up as the tests set it up:
NPGPT_BACKEND=numpy (the readable kernels, no Numba compile time), one BLAS thread, and this
checkout first on the path.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import jupytext
import nbclient
import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

HERE = Path(__file__).resolve().parent
SOURCES = sorted(HERE.glob("[0-9][0-9]_*.py"))
CELL_TIMEOUT = 120          # seconds; the slowest cell (a short training run) takes a few
KERNEL_ENV = {
    "NPGPT_BACKEND": "numpy",
    # one BLAS thread: the matrices are small, and on a busy 2-core machine idle-spinning BLAS
    # threads made the training notebook ten times slower
    "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
    "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE.parent), os.environ.get("PYTHONPATH")])),
    "JUPYTER_PLATFORM_DIRS": "1",
    "PYDEVD_DISABLE_FILE_VALIDATION": "1",      # quiets the debugger's frozen-modules warning
}


def notebook(source: Path) -> nbformat.NotebookNode:
    """The cells of a jupytext source as a notebook without outputs, with stable cell ids."""
    nb = jupytext.read(source, fmt="py:percent")
    nb.metadata = {"kernelspec": {"display_name": "Python 3", "language": "python",
                                  "name": "python3"},
                   "language_info": {"name": "python"}}
    for i, cell in enumerate(nb.cells):
        cell.id = f"nb{source.name[:2]}-{i:02d}"
    return nb


def execute(nb: nbformat.NotebookNode, spec_dir) -> nbformat.NotebookNode:
    """Run nb top to bottom (in notebooks/) in a fresh kernel of this interpreter, whose kernelspec
    is written under spec_dir: a user's own "python3" kernelspec cannot intercept it."""
    spec = Path(spec_dir) / "npgpt-python"
    spec.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "npgpt",
                                                  "language": "python"}))
    km = KernelManager(kernel_name=spec.name,
                       kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(spec_dir)]))
    client = nbclient.NotebookClient(nb, km=km, timeout=CELL_TIMEOUT, record_timing=False,
                                     coalesce_streams=True,
                                     resources={"metadata": {"path": str(HERE)}})
    try:
        client.execute(env={**os.environ, **KERNEL_ENV})
    finally:
        if km.has_kernel:             # a kernel manager handed in is the caller's to shut down
            km.shutdown_kernel(now=True)
    return nb


def main(prefixes: list[str]) -> None:
    with tempfile.TemporaryDirectory() as spec_dir:
        for source in SOURCES:
            if not prefixes or source.name.startswith(tuple(prefixes)):
                nbformat.write(execute(notebook(source), spec_dir), source.with_suffix(".ipynb"))
                print(f"wrote {source.with_suffix('.ipynb').name}")


if __name__ == "__main__":
    main(sys.argv[1:])
