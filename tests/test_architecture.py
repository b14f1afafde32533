"""ARCHITECTURE.md matches the tree: it names every file of the package and no file that is not
there, and its table of floors is the one tests/test_layout.py enforces."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

from tests.test_layout import FLOORS

ROOT = Path(__file__).resolve().parents[1]
TEXT = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")


def test_every_file_of_the_package_is_described():
    files = {p.relative_to(ROOT).as_posix() for p in (ROOT / "npgpt").rglob("*.py")
             if "__pycache__" not in p.parts}
    named = re.findall(r"^- `(npgpt/[\w/*]+\.py)` — \S", TEXT, flags=re.M)   # a glob names a group
    described = {f for f in files if any(fnmatch.fnmatchcase(f, n) for n in named)}
    assert not files - described, f"ARCHITECTURE.md does not describe {sorted(files - described)}"
    empty = [n for n in named if not any(fnmatch.fnmatchcase(f, n) for f in files)]
    assert not empty, f"ARCHITECTURE.md describes files that do not exist: {empty}"


def test_every_path_it_names_exists():
    named = set(re.findall(r"`((?:npgpt|tests|benchmarks|notebooks|docs)/[\w./-]+)`", TEXT))
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert not missing, f"ARCHITECTURE.md names paths that do not exist: {missing}"


def test_the_floor_table_is_the_one_the_layout_test_enforces():
    rows = re.findall(r"^\| (\d) \| [^|]+\| ([^|]+) \|$", TEXT, flags=re.M)
    assert [int(n) for n, _ in rows] == list(range(len(FLOORS)))
    for (n, cell), floor in zip(rows, FLOORS):
        names = {re.sub(r"(\.py|/)$", "", name) for name in re.findall(r"`([\w./]+)`", cell)}
        assert names == floor, f"floor {n}: ARCHITECTURE.md lists {sorted(names)}, test_layout {sorted(floor)}"
