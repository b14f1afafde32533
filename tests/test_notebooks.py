"""Every notebook in notebooks/ runs from top to bottom, so its prose and the library agree.

Each notebook is executed in a fresh Jupyter kernel (nbclient) whose interpreter is the one
running the tests, with notebooks/ as its working directory, the checkout first on its path,
NPGPT_BACKEND=numpy (the reference kernels: no Numba compile time) and one BLAS thread. A cell
that raises fails the test with that cell's traceback; the notebooks' own `assert` cells are
the checks.

The kernel is started from a kernelspec written for this run (argv = this interpreter), so the
test needs only what `pip install ".[test]"` installs (nbformat, nbclient, ipykernel), not a
Jupyter installation, and a user-level "python3" kernelspec pointing elsewhere cannot intercept it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT = 120          # seconds; the slowest cell (a short training run) takes a few
KERNEL_NAME = "npgpt-test-python"


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory):
    """A kernelspec for this interpreter, found first through JUPYTER_PATH; the kernel's env."""
    data_dir = tmp_path_factory.mktemp("jupyter")
    spec_dir = data_dir / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "npgpt tests", "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    env = dict(os.environ)
    env.update({
        "NPGPT_BACKEND": "numpy",
        # one BLAS thread: the matrices are small, and on a busy 2-core machine (CI, pytest -n 2)
        # idle-spinning BLAS threads made the training notebook ten times slower
        "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "JUPYTER_PATH": os.pathsep.join(filter(None, [str(data_dir), os.environ.get("JUPYTER_PATH")])),
        "JUPYTER_PLATFORM_DIRS": "1",
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",     # quiets the debugger's frozen-modules warning
    })
    previous = {k: os.environ.get(k) for k in ("JUPYTER_PATH", "JUPYTER_PLATFORM_DIRS")}
    os.environ["JUPYTER_PATH"] = env["JUPYTER_PATH"]        # where the kernelspec is looked up
    os.environ["JUPYTER_PLATFORM_DIRS"] = "1"
    yield env
    for k, v in previous.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, kernel_env):
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name=KERNEL_NAME,
                                     resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    try:
        client.execute(env=kernel_env)
    except nbclient.exceptions.CellExecutionError as e:
        plain = re.sub(r"\x1b\[[0-9;]*m", "", str(e))          # the traceback without colours
        pytest.fail(f"{path.name}: a cell raised\n{plain}", pytrace=False)


def test_there_are_notebooks():
    assert [p.name for p in NOTEBOOKS][:2] == ["01_backprop_by_hand.ipynb", "02_attention.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_clean_and_checks_something(path):
    """Stored without outputs (the test makes them), and with at least one assert cell, so a
    change in the library that breaks the notebook's math fails here."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), \
        f"{path.name} is stored with outputs: run `python notebooks/build.py`"
    assert any(line.lstrip().startswith("assert ") for c in code for line in c.source.splitlines()), \
        f"{path.name} has no assert cell"


def test_notebooks_match_their_source():
    """notebooks/build.py holds the notebooks' cells; the stored files are what it writes."""
    spec = importlib.util.spec_from_file_location("notebooks_build", NOTEBOOK_DIR / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    assert sorted(build.NOTEBOOKS) == [p.name for p in NOTEBOOKS]
    for name in build.NOTEBOOKS:
        stored = (NOTEBOOK_DIR / name).read_text(encoding="utf-8")
        assert stored == build.render(name), f"{name} differs from notebooks/build.py: run `python notebooks/build.py`"
