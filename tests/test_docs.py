"""Every code block of README.md and docs/*.md runs as pasted, in order, in a fresh folder.

What a docs page must follow (every docs/*.md is picked up by itself):

- A fenced block whose info string starts with `sh` (or `bash`, `shell`) runs in bash, one
  process per block, stopping at the first failing line (`set -e -o pipefail`); one starting
  with `python` runs in a Python process of its own, so each Python block makes its own imports.
  A block with no info string, or `text`, `console`, `json`, ... is output or data: not run.
- The blocks of a page run in order in one fresh, empty temporary folder, so a block may use the
  files of the page's earlier blocks (and only those): a page makes what it needs first (a text
  with `python -m pydoc ... > input.txt`, a GPT-2 folder with `npgpt.checkpoint.save_gpt2`, a
  CSV written by a Python block), and never names a file of the repository or of the reader's.
- `npgpt` is the command line of this checkout; `python` is the interpreter running the tests,
  and the other commands of its environment (`mpiexec` of a venv's bin/) come next on PATH, so
  the blocks run as in an activated venv even when the tests run as `venv/bin/python -m pytest`.
- A shell line that is meant to fail says so in its comment: `... # ... (exits 1 ...)`. The test
  runs it expecting that exit status (a check of an exercise not yet written exits 1, and the
  page says so); any other status, 0 included, fails the test.
- A block that cannot run in a fresh folder in seconds carries `no-run` after its language
  (```` ```sh no-run ````; a code host still highlights it as sh), and the text above it says
  why. Keep these few: only placeholders the reader must fill in, or the benchmark scripts of a
  source checkout (docs/speed.md: they need the checkout and take minutes).
- README.md's "Set up" section is not run here: its two commands install the package and run
  this very suite, and CI runs them itself (.ci/run; tests/test_readme.py holds them to it).

Long trainings would make the suite slow, so the blocks run as pasted except for one thing:
`npgpt` on PATH is a shim that shortens the training commands by the table SHORTER below (and
nothing else), then runs npgpt's own main. The package has no test-only code path: the shim
only rewrites the command line a reader would type.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUNNERS = {"sh": "bash", "bash": "bash", "shell": "bash", "python": "python"}
NO_RUN = "no-run"
NOT_RUN_SECTIONS = {"README.md": ["Set up"]}     # CI runs these itself (see the docstring)
BLOCK_TIMEOUT = 600                              # seconds; a block that takes this long is a bug

# The one substitution the shim makes: each training command gets a shorter run. The command
# line is otherwise passed on unchanged; flags the reader wrote keep their order.
#   command (the words after npgpt) -> {flag: (how the reader's value becomes the test's,
#                                             the value added when the reader gave none)}
# A --resume run keeps the saved settings: nothing is added to it, only a given --max-iters is
# shortened the same way, so a resumed run still goes further than the run it continues.
STEPS = lambda n: max(1, math.ceil(n / 100))     # noqa: E731   300 -> 3, 1500 -> 15, 8000 -> 80
SHORTER = {
    ("train",): {"--max-iters": (STEPS, 15), "--warmup": (STEPS, None),
                 "--sample-tokens": (lambda n: min(n, 30), 30)},
    ("finetune",): {"--max-iters": (STEPS, 3), "--warmup": (STEPS, None),
                    "--sample-tokens": (lambda n: min(n, 30), 30)},
    ("seq2seq", "train"): {"--max-iters": (STEPS, 20), "--warmup": (STEPS, None),
                           "--n-train": (lambda n: min(n, 2000), 2000), "--n-test": (lambda n: min(n, 50), 50)},
    ("sample",): {"--max-new-tokens": (lambda n: min(n, 60), None)},
}


def shorten(argv: list[str]) -> list[str]:
    """The command line argv with the substitutions of SHORTER applied (see the table)."""
    words = tuple(a for a in argv[:2] if not a.startswith("-"))      # the command's words
    command = next((c for c in SHORTER if words[:len(c)] == c), None)
    if command is None:
        return list(argv)
    out, given = [], set()
    it = iter(argv)
    for arg in it:
        flag, eq, value = arg.partition("=")
        if flag in SHORTER[command]:
            value = value if eq else next(it)
            out += [flag, str(SHORTER[command][flag][0](int(value)))]
            given.add(flag)
        else:
            out.append(arg)
    if "--resume" not in argv:
        for flag, (_, default) in SHORTER[command].items():
            if flag not in given and default is not None:
                out += [flag, str(default)]
    return out


def blocks(page: Path) -> list[tuple[int, str, str, str]]:
    """(line, language, info string, code) of every fenced block of the page, in order, but
    those of its NOT_RUN_SECTIONS."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found, section, i = [], None, 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            section = line[3:].strip()
        m = re.match(r"^(\s*)```(.*)$", line)
        if not m:
            i += 1
            continue
        indent, info = m.group(1), m.group(2).strip()
        start, body = i + 1, []
        i += 1
        while i < len(lines) and not re.match(rf"^{indent}```\s*$", lines[i]):
            body.append(lines[i])
            i += 1
        i += 1
        if section in NOT_RUN_SECTIONS.get(page.name, []):
            continue
        language = info.split()[0] if info else ""
        found.append((start, language, info, textwrap.dedent("\n".join(body)) + "\n"))
    return found


def runnable(page: Path) -> list[tuple[int, str, str]]:
    """(line, runner, code) of the blocks the test runs."""
    return [(line, RUNNERS[lang], code) for line, lang, info, code in blocks(page)
            if lang in RUNNERS and NO_RUN not in info.split()[1:]]


def make_shims(folder: Path) -> None:
    """`npgpt` (this checkout's command line, shortened by SHORTER) and `python` (the test's
    interpreter) in folder, which goes first on PATH."""
    folder.mkdir()
    npgpt = folder / "npgpt"
    npgpt.write_text(f"#!{sys.executable}\n"
                     "import sys\n"
                     "from tests.test_docs import shorten\n"
                     "from npgpt.cli import main\n"
                     "sys.exit(main(shorten(sys.argv[1:])))\n")
    npgpt.chmod(0o755)
    python = folder / "python"          # exec, not a symlink: a venv is found from the path it runs as
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)


EXITS = re.compile(r"^(?P<cmd>[^#\n]*?)\s*(?P<comment>#.*\bexits (?P<status>\d+)\b.*)$", re.M)


def expect_exits(code: str) -> str:
    """A bash block in which each line whose comment says `exits N` must exit N (see the docstring)."""
    def check(m):
        cmd, status = m.group("cmd"), m.group("status")
        return (f'{cmd} && __status=0 || __status=$?   {m.group("comment")}\n'
                f'[ "$__status" -eq {status} ] || {{ echo "expected exit status {status}, got $__status: '
                f'{cmd.strip()}" >&2; exit 1; }}')
    return EXITS.sub(check, code)


def run_block(runner: str, code: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    if runner == "bash":
        cmd = ["bash", "-e", "-o", "pipefail", "-c", expect_exits(code)]
    else:
        cmd = [sys.executable, "-c", code]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT)


def block_env(shims: Path) -> dict:
    """The environment of the blocks: on PATH the shims first, then the folder of the interpreter
    running the tests (a venv's bin/: its mpiexec), then the PATH the tests were given."""
    path = os.pathsep.join([str(shims), str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return dict(os.environ, PATH=path.rstrip(os.pathsep),
                PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
                OPENBLAS_NUM_THREADS="1")


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_every_block_runs_as_pasted(page, tmp_path):
    shims, work = tmp_path / "bin", tmp_path / "work"
    make_shims(shims)
    work.mkdir()
    env = block_env(shims)
    for line, runner, code in runnable(page):
        done = run_block(runner, code, work, env)
        assert done.returncode == 0, (
            f"{page.relative_to(ROOT)} line {line} ({runner}) exited {done.returncode}:\n{code}\n"
            f"--- stdout (end) ---\n{done.stdout[-3000:]}\n--- stderr (end) ---\n{done.stderr[-3000:]}")


# -- the test's own parts ---------------------------------------------------------------------

def test_a_line_that_says_it_exits_must_exit_so(tmp_path):
    env = dict(os.environ)
    assert run_block("bash", "false   # fails on purpose (exits 1)\necho after\n", tmp_path, env).stdout == "after\n"
    assert run_block("bash", "true    # (exits 1)\n", tmp_path, env).returncode == 1
    assert run_block("bash", "(exit 2)  # (exits 1)\n", tmp_path, env).returncode == 1
    assert run_block("bash", "false   # a plain comment\necho after\n", tmp_path, env).returncode == 1


def test_blocks_find_the_interpreters_commands_without_an_activated_venv(tmp_path, monkeypatch):
    """Tests run as venv/bin/python -m pytest, the venv not activated (its bin/ not on PATH): a
    block still finds the venv's commands (the README's `mpiexec`), after the shims."""
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    make_shims(tmp_path / "bin")
    env = block_env(tmp_path / "bin")
    assert env["PATH"].split(os.pathsep)[:2] == [str(tmp_path / "bin"), str(Path(sys.executable).parent)]
    found = run_block("bash", "command -v npgpt python mpiexec || true\n", tmp_path, env).stdout.split()
    assert found[:2] == [str(tmp_path / "bin" / "npgpt"), str(tmp_path / "bin" / "python")]
    if (Path(sys.executable).parent / "mpiexec").exists():
        assert found[2:] == [str(Path(sys.executable).parent / "mpiexec")], found


def test_the_shim_shortens_only_the_training_length():
    assert shorten(["train"]) == ["train", "--max-iters", "15", "--sample-tokens", "30"]
    assert shorten(["train", "--max-iters", "5000", "--n-layer", "6"]) == \
        ["train", "--max-iters", "50", "--n-layer", "6", "--sample-tokens", "30"]
    assert shorten(["train", "--resume", "--out", "r", "--max-iters=8000"]) == \
        ["train", "--resume", "--out", "r", "--max-iters", "80"]
    assert shorten(["seq2seq", "train", "--task", "addition", "--max-iters", "8000"]) == \
        ["seq2seq", "train", "--task", "addition", "--max-iters", "80", "--n-train", "2000", "--n-test", "50"]
    assert shorten(["seq2seq", "translate", "--input", "12"]) == ["seq2seq", "translate", "--input", "12"]
    assert shorten(["gradcheck"]) == ["gradcheck"]
    assert shorten(["sample", "--max-new-tokens", "300"]) == ["sample", "--max-new-tokens", "60"]
    assert shorten(["sample"]) == ["sample"]


def test_blocks_are_found_with_their_languages(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# p\n\n```sh\nnpgpt train\n```\n\n```\noutput\n```\n\n```sh no-run\nslow\n```\n\n"
                    "- a list\n\n  ```python\n  print(1)\n  ```\n")
    assert [(lang, info) for _, lang, info, _ in blocks(page)] == \
        [("sh", "sh"), ("", ""), ("sh", "sh no-run"), ("python", "python")]
    assert [(runner, code) for _, runner, code in runnable(page)] == \
        [("bash", "npgpt train\n"), ("python", "print(1)\n")]


def test_the_readme_set_up_section_is_left_to_ci():
    codes = [code for _, _, _, code in blocks(ROOT / "README.md")]
    assert not any(code.startswith("pip install") for code in codes)
