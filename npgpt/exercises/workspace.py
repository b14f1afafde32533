"""The student's workspace: a folder of exercise files (exercises/ by default) and progress.json.

    exercises/01_linear.py, 02_relu.py, ...    the templates, copied once, then the student's
    exercises/progress.json                    which exercise is current, which passed (with a
                                               hash of the file that passed), hints shown

An exercise counts as done while its file is the one that passed: edit it after a pass and it
is pending again until the next check. Nothing here ever overwrites an exercise file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..files import write_atomic
from .catalog import EXERCISES, get, number
from .spec import Exercise

DEFAULT_DIR = "exercises"
PROGRESS = "progress.json"


class WorkspaceError(Exception):
    """The workspace folder cannot be used (it is a file, it cannot be made or written): the
    message names it and says why."""


class Workspace:
    def __init__(self, root=DEFAULT_DIR):
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise WorkspaceError(f"the workspace {self.root} is a file: expected a folder for the "
                                 f"exercise files (--dir names it; one that does not exist is made)")

    def _make(self) -> None:
        """Make the folder (and its parents), an OSError said as a WorkspaceError."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise WorkspaceError(f"the workspace {self.root} cannot be made ({e.strerror}): "
                                 f"expected a folder, or a path where one can be made") from None

    def path(self, ex: Exercise) -> Path:
        return self.root / f"{number(ex.name):02d}_{ex.name}.py"

    def start(self, ex: Exercise) -> bool:
        """Write the exercise's template into the workspace unless its file exists; make it the
        current exercise. True when the file was written."""
        path = self.path(ex)
        created = False
        if not path.exists():
            self._make()
            try:
                with open(path, "x", encoding="utf-8") as f:       # "x": never over a file
                    f.write(ex.template.read_text(encoding="utf-8"))
                created = True
            except FileExistsError:
                pass
            except OSError as e:
                raise WorkspaceError(f"{path} cannot be written ({e.strerror})") from None
        self.update(current=ex.name)
        return created

    # -- progress ----------------------------------------------------------------------------

    def progress(self) -> dict:
        """{"current": name or None, "passed": {name: sha256 of the file}, "hints": {name: n}}."""
        try:
            data = json.loads((self.root / PROGRESS).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
        data = data if isinstance(data, dict) else {}
        return {"current": data.get("current"), "passed": dict(data.get("passed") or {}),
                "hints": dict(data.get("hints") or {})}

    def update(self, **changes) -> None:
        data = {**self.progress(), **changes}
        self._make()
        try:
            write_atomic(self.root / PROGRESS, json.dumps(data, indent=1, sort_keys=True) + "\n")
        except OSError as e:
            raise WorkspaceError(f"{self.root / PROGRESS} cannot be written ({e.strerror})") from None

    def _hash(self, ex: Exercise) -> str | None:
        try:
            return hashlib.sha256(self.path(ex).read_bytes()).hexdigest()
        except OSError:
            return None

    def record(self, ex: Exercise, passed: bool) -> None:
        """Remember the outcome of a check of the file as it is now."""
        done = self.progress()["passed"]
        if passed:
            done[ex.name] = self._hash(ex)
        else:
            done.pop(ex.name, None)
        self.update(passed=done)

    def status(self, ex: Exercise) -> str:
        """"done", "edited" (passed, then changed), "started" or "not started"."""
        if not self.path(ex).exists():
            return "not started"
        passed = self.progress()["passed"].get(ex.name)
        if passed is None:
            return "started"
        return "done" if passed == self._hash(ex) else "edited"

    def next_pending(self, after: Exercise | None = None) -> Exercise | None:
        """The first exercise, in teaching order, that is not done (the first after `after`,
        if one is, then from the start)."""
        start = number(after.name) if after is not None else 0
        order = EXERCISES[start:] + EXERCISES[:start]
        return next((ex for ex in order if self.status(ex) != "done"), None)

    def current(self) -> Exercise | None:
        """The exercise last started (or moved to), else the next pending one."""
        name = self.progress()["current"]
        try:
            return get(name) if name else self.next_pending()
        except ValueError:
            return self.next_pending()

    def hints_shown(self, ex: Exercise) -> int:
        return int(self.progress()["hints"].get(ex.name, 0))

    def show_hints(self, ex: Exercise, n: int) -> None:
        hints = self.progress()["hints"]
        hints[ex.name] = n
        self.update(hints=hints)
