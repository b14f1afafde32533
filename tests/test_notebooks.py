"""Every notebook in notebooks/ runs from top to bottom, and the stored .ipynb is its source's.

The notebooks' sources are jupytext percent-format files, notebooks/NN_name.py; notebooks/build.py
writes each NN_name.ipynb from its source and executes it, so the committed notebook carries its
outputs. Here:

- each source is executed as build.py executes it: in a fresh Jupyter kernel (nbclient) whose
  interpreter is the one running the tests, with notebooks/ as its working directory, the
  checkout first on its path, NPGPT_BACKEND=numpy (the reference kernels: no Numba compile time)
  and one BLAS thread. A cell that raises fails the test with that cell's traceback; the
  notebooks' own `assert` cells are the checks;
- each stored .ipynb holds exactly its source's cells (types and sources, read through jupytext),
  executed in order and without an error, so editing one without the other fails here; and it
  holds at least one figure (an image/png output), so it reads with its pictures on a code host;
- notebooks/README.md links every notebook, in the reading order of their numbers.

The kernel is started from a kernelspec written for the run (argv = this interpreter), so the test
needs only what `pip install ".[test]"` installs (jupytext, nbformat, nbclient, ipykernel), not a
Jupyter installation, and a user-level "python3" kernelspec cannot intercept it.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from npgpt.exercises import EXERCISES

pytest.importorskip("jupytext")
nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")         # every notebook draws (the test extra installs it)

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"


def _load_build():
    spec = importlib.util.spec_from_file_location("notebooks_build", NOTEBOOK_DIR / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    return build


build = _load_build()
SOURCES = build.SOURCES


def _cells(nb) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source) for c in nb.cells]


def test_there_are_notebooks_each_with_its_source():
    assert [p.name for p in SOURCES] == [
        "01_backprop_by_hand.py", "02_attention.py", "03_training_a_gpt.py",
        "04_tokens_and_language_models.py", "05_positional_encoding.py",
        "06_from_gradient_descent_to_adamw.py", "07_the_encoder_decoder.py",
        "08_pretraining_and_finetuning.py", "09_from_numpy_to_numba.py"]
    stored = sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb"))
    assert stored == [p.with_suffix(".ipynb").name for p in SOURCES], \
        "every notebook has a source NN_name.py and every source its NN_name.ipynb"


def test_readme_gives_the_reading_order():
    """notebooks/README.md links every notebook, in the order of their numbers."""
    readme = (NOTEBOOK_DIR / "README.md").read_text(encoding="utf-8")
    missing = [p.stem for p in SOURCES if f"({p.stem}.ipynb)" not in readme]
    assert not missing, f"notebooks/README.md does not link {missing}"
    positions = [readme.index(f"({p.stem}.ipynb)") for p in SOURCES]
    assert positions == sorted(positions), "notebooks/README.md lists the notebooks out of order"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_notebook_runs(source, tmp_path):
    try:
        build.execute(build.notebook(source), tmp_path)
    except nbclient.exceptions.CellExecutionError as e:
        plain = re.sub(r"\x1b\[[0-9;]*m", "", str(e))          # the traceback without colours
        pytest.fail(f"{source.name}: a cell raised\n{plain}", pytrace=False)


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_stored_notebook_is_its_source_executed(source):
    """The stored .ipynb has the source's cells, executed in order with no error, and at least
    one assert cell, so a change in the library that breaks the notebook's math fails a test."""
    path = source.with_suffix(".ipynb")
    stored = nbformat.read(path, as_version=4)
    nbformat.validate(stored)
    assert _cells(stored) == _cells(build.notebook(source)), \
        f"{path.name} differs from {source.name}: run `python notebooks/build.py {source.name[:2]}`"
    code = [c for c in stored.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), \
        f"{path.name} is not stored as executed top to bottom: run `python notebooks/build.py`"
    assert not [o for c in code for o in c.outputs if o.output_type == "error"], \
        f"{path.name} is stored with an error output"
    assert any(line.lstrip().startswith("assert ") for c in code for line in c.source.splitlines()), \
        f"{path.name} has no assert cell"
    assert any("image/png" in o.get("data", {}) for c in code for o in c.outputs), \
        f"{path.name} is stored without a figure (an image/png output): every notebook draws"


def _suggested_exercises(text: str) -> set[str]:
    """The exercise names a notebook tells its reader to start: each `npgpt exercise start X`,
    and the backticked names of a "then `a`, `b`" that follows it, up to the next ':', '.' or ')'."""
    names = set()
    for m in re.finditer(r"`npgpt exercise start (\w+)`", text):
        names.add(m[1])
        tail = re.split(r"[:.)]", text[m.end():], maxsplit=1)[0]
        if re.match(r"\s*,?\s*\(?then\b", tail):
            names.update(re.findall(r"`(\w+)`", tail))
    return names


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_the_exercises_a_notebook_suggests_exist(source):
    """A notebook's "Exercises" send the reader to `npgpt exercise start NAME`: every such NAME is
    one npgpt has (a misspelt one answers "invalid choice")."""
    known = {exercise.name for exercise in EXERCISES}
    suggested = _suggested_exercises(source.read_text(encoding="utf-8"))
    assert suggested <= known, \
        f"{source.name} suggests exercises npgpt does not have: {sorted(suggested - known)}"
