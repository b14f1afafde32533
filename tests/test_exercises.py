"""The gradient-checking exercises: the catalogue's own power (every mistake fails and is named,
every reference passes), the whole flow of every exercise from an empty folder, and the commands."""

import ast
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from npgpt import kernels
from npgpt.cli import main
from npgpt.exercises import EXERCISES, get, mistake_count
from npgpt.exercises.checker import check_function
from npgpt.cli.exercise import watch
from npgpt.exercises.practice import check_with, template_module
from npgpt.exercises.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]
NAMES = [e.name for e in EXERCISES]
MISTAKES = [(e.name, m.name) for e in EXERCISES for m in e.mistakes]


@pytest.fixture(autouse=True)
def numpy_backend():
    """npgpt's references run as the readable NumPy they are (and nothing is compiled)."""
    with kernels.backend("numpy"):
        yield


def pristine(ex):
    return getattr(template_module(ex.name), f"{ex.name}_forward", None)


def test_one_exercise_per_layer_in_teaching_order():
    assert NAMES == ["linear", "relu", "gelu_tanh", "softmax", "cross_entropy", "cross_entropy_smoothed",
                     "layernorm", "embedding", "dropout", "attention", "multihead_attention", "residual",
                     "tied_head", "adamw"]
    for ex in EXERCISES:
        assert len(ex.mistakes) >= 3, ex.name
        assert len({m.name for m in ex.mistakes}) == len(ex.mistakes), ex.name
        assert len(ex.hints) >= 3 and ex.template.is_file(), ex.name


@pytest.mark.parametrize("name", NAMES)
def test_the_template_needs_only_numpy(name):
    tree = ast.parse(get(name).template.read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported <= {"numpy", "typing"}, imported


@pytest.mark.parametrize("name", NAMES)
def test_the_reference_passes(name):
    ex = get(name)
    outcome = check_with(ex, pristine(ex), ex.reference, ex.template)
    assert outcome.status == "pass", outcome.lines


def _npgpt_pair(ex):
    """npgpt's own pure (forward, backward) of the exercise's function, or None for a composite
    (whose reference is npgpt's backwards chained, checked by test_the_reference_passes)."""
    pair = ex.npgpt_pair or tuple(ex.sources[:2])
    return pair if len(pair) == 2 and pair[0].__name__.endswith("_forward") else None


PAIRED = [e.name for e in EXERCISES if e.kind == "gradient" and _npgpt_pair(e) is not None]


def test_most_exercises_have_a_pure_pair_in_npgpt():
    assert len(PAIRED) >= 9, PAIRED


@pytest.mark.parametrize("name", PAIRED)
def test_npgpts_own_forward_and_backward_pass_on_the_exercise_inputs(name):
    """Where npgpt has the exercise's function as a pure pair, that pair passes the same check."""
    ex = get(name)
    pair = _npgpt_pair(ex)
    inputs = getattr(template_module(name), f"{name}_inputs")
    assert check_function(name, *pair, inputs, ex.template).passed


@pytest.mark.parametrize("name,mistake", MISTAKES)
def test_every_catalogued_mistake_fails_and_is_named(name, mistake):
    ex = get(name)
    wrong = next(m for m in ex.mistakes if m.name == mistake)
    outcome = check_with(ex, pristine(ex), wrong.backward, ex.template)
    assert outcome.status == "fail", outcome.lines
    assert any(wrong in found for found in outcome.matches.values()), outcome.lines
    said = " ".join(" ".join(outcome.lines).split())             # the hint is wrapped for a terminal
    assert "This is a known mistake" in said and wrong.hint in said


def test_the_catalogue_count_is_printed(capsys):
    assert main(["exercise", "list", "--catalog"]) == 0
    out = capsys.readouterr().out
    assert mistake_count() == len(MISTAKES) >= 3 * len(EXERCISES)
    assert f"{mistake_count()} catalogued mistakes in {len(EXERCISES)} exercises" in out
    assert "the mean term dropped" in out and "the bias correction left out" in out


def _fill(path: Path, ex, body: str) -> None:
    """Replace the backward's `raise NotImplementedError(...)` (or a previous fill) by body."""
    text = path.read_text()
    params = re.search(rf"def {ex.function}\((.*?)\):", text).group(1)
    call = f"return _get({ex.name!r}).{body}({params})"
    text = re.sub(r"raise NotImplementedError\([^)]*\)|return _get\(.*", lambda _: call, text, count=1)
    if "import get as _get" not in text:
        text += "\nfrom npgpt.exercises import get as _get   # the test fills in npgpt's code\n"
    path.write_text(text)


def _cli(capsys, *argv):
    status = main(["exercise", *argv])
    return status, capsys.readouterr().out


@pytest.mark.parametrize("name", NAMES)
def test_the_whole_flow_from_an_empty_folder(tmp_path, capsys, name):
    ex, ws = get(name), str(tmp_path / "ws")
    assert _cli(capsys, "start", name, "--dir", ws)[0] == 0
    path = Workspace(ws).path(ex)
    assert path.is_file()
    status, out = _cli(capsys, "check", "--dir", ws)              # the current exercise
    assert status == 1 and "not written yet" in out
    first = ex.mistakes[0]
    _fill(path, ex, "mistakes[0].backward")
    status, out = _cli(capsys, "check", name, "--dir", ws)
    assert status == 1 and "FAIL" in out and first.name in out and first.hint in " ".join(out.split())
    assert Workspace(ws).status(ex) == "started"
    _fill(path, ex, "reference")
    status, out = _cli(capsys, "check", name, "--dir", ws)
    assert status == 0 and "PASS" in out, out
    assert Workspace(ws).status(ex) == "done"


def test_start_never_overwrites_the_students_work(tmp_path, capsys):
    ws = str(tmp_path)
    assert _cli(capsys, "start", "softmax", "--dir", ws)[0] == 0
    path = Workspace(ws).path(get("softmax"))
    path.write_text("# my work\n")
    status, out = _cli(capsys, "start", "softmax", "--dir", ws)
    assert status == 0 and "exists: left as it is" in out
    assert path.read_text() == "# my work\n"


def test_no_subcommand_is_the_next_pending_exercise(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)                                     # the default workspace, exercises/
    status, out = _cli(capsys)
    assert status == 0 and "Exercise 1/14: linear" in out and "Wrote exercises/01_linear.py" in out
    assert "Derive dx (..., in)" in out                             # what to derive, from the template
    _fill(tmp_path / "exercises" / "01_linear.py", get("linear"), "reference")
    assert _cli(capsys, "check")[0] == 0
    status, out = _cli(capsys)
    assert "Exercise 2/14: relu" in out and (tmp_path / "exercises" / "02_relu.py").is_file()
    status, out = _cli(capsys, "list")
    assert re.search(r"1  linear +done", out) and re.search(r"2  relu +started", out)
    assert "1/14 done. Next: npgpt exercise start relu" in out


def test_a_pass_goes_stale_when_the_file_is_edited(tmp_path, capsys):
    ws = Workspace(tmp_path)
    ex = get("relu")
    ws.start(ex)
    _fill(ws.path(ex), ex, "reference")
    assert _cli(capsys, "check", "--dir", str(tmp_path))[0] == 0 and ws.status(ex) == "done"
    ws.path(ex).write_text(ws.path(ex).read_text() + "\n# a comment\n")
    assert ws.status(ex) == "edited" and ws.next_pending() == get("linear")


def test_hints_come_one_at_a_time_and_the_formula_last(tmp_path, capsys):
    ws, ex = str(tmp_path), get("layernorm")
    outs = [_cli(capsys, "hint", "layernorm", "--dir", ws)[1] for _ in range(len(ex.hints) + 1)]
    for n, out in enumerate(outs[:-1], start=1):
        assert f"  {n}. " in out and f"  {n + 1}. " not in out
    assert "that was the last, the formula" in outs[-2] and outs[-1] == outs[-2]
    assert "dx = rstd * (g - mean_C(g) - xhat * mean_C(g * xhat))" in outs[-1]
    out = _cli(capsys, "hint", "softmax", "--all", "--dir", ws)[1]
    assert all(f"  {n}. " in out for n in range(1, len(get("softmax").hints) + 1))


def test_solution_prints_npgpts_own_code(capsys):
    out = _cli(capsys, "solution", "layernorm")[1]
    assert "def layernorm_backward(dout, cache" in out and "npgpt/nn/norm.py" in out
    out = _cli(capsys, "solution", "multihead_attention")[1]
    assert "def multihead_attention_backward" in out and "def attention_backward" in out


def test_check_without_a_file_or_with_a_changed_forward(tmp_path, capsys):
    ws = str(tmp_path)
    status, out = _cli(capsys, "check", "gelu_tanh", "--dir", ws)
    assert status == 2 and f"does not exist: start it with `npgpt exercise start gelu_tanh --dir {ws}`" in out
    status, out = _cli(capsys, "check", "gelu_tanh", "--dir", str(tmp_path / "my work"))
    assert f"`npgpt exercise start gelu_tanh --dir '{tmp_path / 'my work'}'`" in out     # pastable
    _cli(capsys, "start", "gelu_tanh", "--dir", ws)
    path = Workspace(ws).path(get("gelu_tanh"))
    path.write_text(path.read_text().replace("return 0.5 * x * (1 + t), (x, t)", "return x * (1 + t), (x, t)"))
    status, out = _cli(capsys, "check", "--dir", ws)
    assert status == 1 and "gelu_tanh_forward no longer computes the exercise's function" in out


def test_a_student_error_names_the_line(tmp_path, capsys):
    ws = str(tmp_path)
    _cli(capsys, "start", "linear", "--dir", ws)
    path = Workspace(ws).path(get("linear"))
    path.write_text(path.read_text().replace('raise NotImplementedError("write linear_backward: return dx, dw, db")',
                                             "return dout @ w.T, x.T @ dout, dout.sum(axis=0)"))
    status, out = _cli(capsys, "check", "--dir", ws)
    assert status == 2 and "linear_backward (line 24) raised ValueError" in out
    assert "at line 33 of 01_linear.py: return dout @ w.T, x.T @ dout" in out and "Traceback" not in out


def test_watch_rechecks_on_save_then_moves_on(tmp_path, capsys):
    ws, ex = Workspace(tmp_path), get("relu")
    ws.start(ex)
    seen = []

    def on_check(n, outcome):
        seen.append(outcome.status)
        if n == 1:
            _fill(ws.path(ex), ex, "reference")               # the student saves the solution

    assert watch(ws, interval=0.01, max_checks=3, on_check=on_check) == 1
    out = capsys.readouterr().out
    assert seen == ["todo", "pass", "todo"]                     # then gelu_tanh, not written yet
    assert ws.path(get("gelu_tanh")).is_file() and "Exercise 3/14: gelu_tanh" in out


def test_watch_stops_cleanly_on_ctrl_c(tmp_path, capsys):
    def press_ctrl_c(n, outcome):
        raise KeyboardInterrupt

    assert watch(Workspace(tmp_path), interval=0.01, on_check=press_ctrl_c) == 0
    assert "Stopped watching." in capsys.readouterr().out
    status, out = _cli(capsys, "watch", "--dir", str(tmp_path), "--max-checks", "1")
    assert status == 1 and "not written yet" in out


def test_an_unknown_exercise_lists_the_names(capsys):
    with pytest.raises(SystemExit):
        main(["exercise", "start", "transformer"])
    err = capsys.readouterr().err
    assert "invalid choice: 'transformer'" in err and "layernorm" in err


def test_a_closed_pipe_ends_quietly():
    """`npgpt exercise list --catalog | head -1`: the reader is gone before npgpt writes (here,
    before it starts): no BrokenPipeError traceback, the status a shell expects of such a writer."""
    child = subprocess.Popen([sys.executable, "-m", "npgpt", "exercise", "list", "--catalog"], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "NPGPT_BACKEND": "numpy"})
    child.stdout.close()
    err = child.stderr.read().decode()
    assert child.wait(timeout=60) == 141 and err == "", err


def test_watch_exits_cleanly_on_a_real_ctrl_c(tmp_path):
    child = subprocess.Popen([sys.executable, "-m", "npgpt", "exercise", "watch", "--dir", str(tmp_path)],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "NPGPT_BACKEND": "numpy"})
    assert child.stdout.readline().startswith("Watching")         # inside the loop: Ctrl-C now
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0 and "Stopped watching." in out and err == "", err


def test_an_update_that_returns_instead_of_updating_in_place(tmp_path, capsys):
    ws = str(tmp_path)
    _cli(capsys, "start", "adamw", "--dir", ws)
    path = Workspace(ws).path(get("adamw"))
    path.write_text(path.read_text().replace('raise NotImplementedError("write adamw_update: update p, m and v in place")',
                                             "return p - lr * g, m, v"))
    status, out = _cli(capsys, "check", "--dir", ws)
    assert status == 2 and "adamw_update (line 10) returned tuple: expected None" in out


@pytest.mark.parametrize("verb", [["start", "linear"], [], ["hint"], ["check"], ["watch", "--max-checks", "1"]])
def test_a_dir_that_is_a_file_is_one_line(tmp_path, capsys, verb):
    taken = tmp_path / "notes.txt"
    taken.write_text("mine\n")
    status = main(["exercise", *verb, "--dir", str(taken)])
    out, err = capsys.readouterr()
    assert status == 2 and len(err.splitlines()) == 1, out + err
    assert f"error: the workspace {taken} is a file: expected a folder" in err
    assert taken.read_text() == "mine\n"


def test_an_exit_in_the_students_file_is_an_error_not_a_pass(tmp_path, capsys):
    """exit(0) would end npgpt with status 0 and nothing said: a pass that is not one."""
    ws = str(tmp_path)
    _cli(capsys, "start", "relu", "--dir", ws)
    path = Workspace(ws).path(get("relu"))
    path.write_text(path.read_text() + "\nimport sys\nsys.exit(0)\n")
    status, out = _cli(capsys, "check", "--dir", ws)
    assert status == 2 and "running the file called exit(0)" in out and "ERROR" in out
    path.write_text(path.read_text().replace("sys.exit(0)", "").replace(
        'raise NotImplementedError("write relu_backward: return dx")', "exit(3)"))
    status, out = _cli(capsys, "check", "--dir", ws)
    assert status == 2 and "relu_backward (line" in out and "called exit(3): expected it to return" in out


def test_the_docs_say_the_catalogues_true_size():
    """README.md and docs/exercises.md quote the number of catalogued mistakes, and the docs
    table the number per exercise: both are the catalogue's own, so they cannot go stale."""
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    page = (ROOT / "docs" / "exercises.md").read_text(encoding="utf-8")
    assert re.findall(r"which of (\d+) catalogued classic mistakes", readme) == [str(mistake_count())]
    assert re.findall(r"from a catalogue of (\d+)", " ".join(page.split())) == [str(mistake_count())]
    table = dict(re.findall(r"^\| \d+ \| `(\w+)` \| .* \| (\d+) \|$", page, re.M))
    assert table == {ex.name: str(len(ex.mistakes)) for ex in EXERCISES}


def test_the_flow_from_a_fresh_install_in_an_empty_folder(tmp_path):
    """pip install . into a folder (no checkout on the path), then in an empty folder: the next
    exercise is written from the installed templates, check fails until the backward is written,
    hint and solution answer, and check passes once it is."""
    target = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-q",
                          "--target", str(target), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr[-2000:]
    work = tmp_path / "empty"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target), "NPGPT_BACKEND": "numpy"}

    def npgpt(*argv):
        done = subprocess.run([sys.executable, "-m", "npgpt", "exercise", *argv], capture_output=True,
                              text=True, cwd=work, env=env, timeout=120)
        return done.returncode, done.stdout + done.stderr

    status, out = npgpt("-h")
    assert status == 0 and str(target) not in out
    where = subprocess.run([sys.executable, "-c", "import npgpt; print(npgpt.__file__)"], capture_output=True,
                           text=True, cwd=work, env=env).stdout
    assert where.startswith(str(target))                    # the installed copy, not the checkout
    status, out = npgpt()
    assert status == 0 and "Wrote exercises/01_linear.py" in out, out
    status, out = npgpt("check")
    assert status == 1 and "not written yet" in out, out
    status, out = npgpt("hint", "linear")
    assert status == 0 and "1 of" in out, out
    status, out = npgpt("solution", "linear")
    assert status == 0 and "def linear_backward" in out, out
    _fill(work / "exercises" / "01_linear.py", get("linear"), "reference")
    status, out = npgpt("check")
    assert status == 0 and "PASS" in out, out
    status, out = npgpt("list")
    assert status == 0 and "1/14 done. Next: npgpt exercise start relu" in out, out
