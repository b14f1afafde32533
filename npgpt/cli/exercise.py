"""`npgpt exercise`: gradient-checking exercises from the command line.

    npgpt exercise                   the next pending exercise (its file written if need be)
    npgpt exercise list [--catalog]  progress; --catalog: every catalogued mistake and the count
    npgpt exercise start NAME        write exercises/NN_NAME.py (never over an existing file)
    npgpt exercise check [NAME]      check it (default: the current exercise), with a diagnosis
    npgpt exercise hint [NAME]       one more hint each time (--all: every one); the formula last
    npgpt exercise watch             re-check the current exercise whenever its file is saved
    npgpt exercise solution NAME     npgpt's own implementation, the reference

Every subcommand takes --dir (the workspace, default exercises/). Exit status of check and
watch: 0 pass, 1 fail or not written yet, 2 the file cannot be checked.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import inspect
import shlex
import sys
import textwrap
import time
from pathlib import Path

from ..exercises.catalog import EXERCISES, get, mistake_count, names, number
from ..exercises.practice import format_outcome, run_check, template_module
from ..exercises.workspace import DEFAULT_DIR, Workspace, WorkspaceError


def add(sub) -> None:
    """Declare `npgpt exercise` and its subcommands on the CLI's subparsers."""
    p = sub.add_parser("exercise", help="gradient-checking exercises: write a backward, check it, "
                                        "learn from the mistake",
                       description="Write the backward of each layer of a GPT (and the AdamW update) "
                                   "yourself: each exercise is checked against the numerical gradient "
                                   "and diagnosed against a catalogue of classic mistakes. With no "
                                   "subcommand: the next pending exercise.")
    p.add_argument("--dir", default=DEFAULT_DIR, help=f"the workspace folder (default: {DEFAULT_DIR}/)")
    p.set_defaults(run=run_next)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dir", default=argparse.SUPPRESS,
                        help=f"the workspace folder (default: {DEFAULT_DIR}/)")
    verbs = p.add_subparsers(dest="verb", metavar="[SUBCOMMAND]")
    q = verbs.add_parser("list", parents=[common], help="the exercises and your progress")
    q.add_argument("--catalog", action="store_true", help="print the catalogue of mistakes and its count")
    q.set_defaults(run=run_list)
    q = verbs.add_parser("start", parents=[common], help="write an exercise's file into the workspace")
    q.add_argument("name", choices=names(), metavar="NAME", help="one of: " + ", ".join(names()))
    q.set_defaults(run=run_start)
    q = verbs.add_parser("check", parents=[common], help="check an exercise (default: the current one)")
    q.add_argument("name", nargs="?", choices=names(), metavar="NAME", help="the exercise")
    q.add_argument("--seed", type=int, default=0, help="seed of the upstream gradient (default: 0)")
    q.set_defaults(run=run_check_command)
    q = verbs.add_parser("hint", parents=[common], help="the next hint (the formula comes last)")
    q.add_argument("name", nargs="?", choices=names(), metavar="NAME", help="the exercise (default: current)")
    q.add_argument("--all", action="store_true", help="every hint at once")
    q.set_defaults(run=run_hint)
    q = verbs.add_parser("watch", parents=[common], help="re-check the current exercise on every save")
    q.add_argument("--interval", type=float, default=0.5, metavar="X",
                   help="seconds between looks at the file (default: 0.5)")
    q.add_argument("--max-checks", type=int, default=None, metavar="N",
                   help="stop after N checks (default: until Ctrl-C)")
    q.set_defaults(run=run_watch)
    q = verbs.add_parser("solution", parents=[common], help="npgpt's own implementation, the reference")
    q.add_argument("name", choices=names(), metavar="NAME", help="the exercise")
    q.set_defaults(run=run_solution)


def _workspace_errors(run):
    """run, with a workspace that cannot be used (--dir names a file) said in one line, exit 2."""
    @functools.wraps(run)
    def guarded(args) -> int:
        try:
            return run(args)
        except WorkspaceError as e:
            prog = " ".join(["npgpt exercise", *([args.verb] if getattr(args, "verb", None) else [])])
            print(f"{prog}: error: {e}", file=sys.stderr)
            return 2
    return guarded


def _pick(args, ws: Workspace):
    """The exercise named on the command line, else the current one."""
    return get(args.name) if getattr(args, "name", None) else ws.current()


@_workspace_errors
def run_next(args) -> int:
    ws = Workspace(args.dir)
    ex = ws.next_pending()
    if ex is None:
        print(f"All {len(EXERCISES)} exercises pass. `npgpt exercise list` shows them.")
        return 0
    created = ws.start(ex)
    print(f"Exercise {number(ex.name)}/{len(EXERCISES)}: {ex.name} -- {ex.title}")
    print(f"{'Wrote' if created else 'Your file:'} {ws.path(ex)}\n")
    print((inspect.getdoc(getattr(template_module(ex.name), ex.function)) or "") + "\n")
    print(f"Write {ex.function} in that file, then:\n"
          f"  npgpt exercise check      check it (with a diagnosis when it fails)\n"
          f"  npgpt exercise watch      re-check it every time you save\n"
          f"  npgpt exercise hint       a hint, one more each time")
    return 0


@_workspace_errors
def run_list(args) -> int:
    if args.catalog:
        return _print_catalog()
    ws = Workspace(args.dir)
    print(f"{'#':>3}  {'exercise':<24}{'status':<13}file")
    for ex in EXERCISES:
        print(f"{number(ex.name):>3}  {ex.name:<24}{ws.status(ex):<13}{ws.path(ex)}")
    done = sum(ws.status(ex) == "done" for ex in EXERCISES)
    nxt = ws.next_pending()
    print(f"\n{done}/{len(EXERCISES)} done." + (f" Next: npgpt exercise start {nxt.name}" if nxt else ""))
    return 0


def _print_catalog() -> int:
    for ex in EXERCISES:
        print(f"{number(ex.name)}. {ex.name} -- {ex.title}: {len(ex.mistakes)} mistakes")
        for m in ex.mistakes:
            print(_wrap(f"- {m.name}: {m.hint}", "   ", "     "))
    print(f"\n{mistake_count()} catalogued mistakes in {len(EXERCISES)} exercises")
    return 0


def _wrap(text: str, first: str, rest: str) -> str:
    return textwrap.fill(text, 100, initial_indent=first, subsequent_indent=rest)


@_workspace_errors
def run_start(args) -> int:
    ws = Workspace(args.dir)
    ex = get(args.name)
    if ws.start(ex):
        print(f"Wrote {ws.path(ex)}: write {ex.function} in it, then `npgpt exercise check`.")
    else:
        print(f"{ws.path(ex)} exists: left as it is (your work). It is the current exercise; "
              f"delete the file to start it over.")
    return 0


def check_once(ws: Workspace, ex, seed: int = 0):
    """Check `ex` in the workspace, print the outcome, record it; the outcome."""
    outcome = run_check(ex, ws.path(ex), seed)
    if outcome.status in ("pass", "fail", "todo"):
        ws.record(ex, outcome.status == "pass")
    print(format_outcome(outcome, ws.path(ex), ws.next_pending(after=ex)), flush=True)
    return outcome


@_workspace_errors
def run_check_command(args) -> int:
    ws = Workspace(args.dir)
    ex = _pick(args, ws)
    if ex is None:
        print(f"All {len(EXERCISES)} exercises pass: name one to check it again.")
        return 0
    if not ws.path(ex).exists():
        where = f" --dir {shlex.quote(str(args.dir))}" if args.dir != DEFAULT_DIR else ""
        print(f"npgpt exercise check: error: {ws.path(ex)} does not exist: start it with "
              f"`npgpt exercise start {ex.name}{where}`")
        return 2
    return check_once(ws, ex, args.seed).exit_status


@_workspace_errors
def run_hint(args) -> int:
    ws = Workspace(args.dir)
    ex = _pick(args, ws)
    if ex is None:
        print("Every exercise passes: name one for its hints.")
        return 0
    n = len(ex.hints) if args.all else min(ws.hints_shown(ex) + 1, len(ex.hints))
    ws.show_hints(ex, max(n, ws.hints_shown(ex)))
    print(f"Hints for {ex.name} -- {ex.title}:")
    for i, hint in enumerate(ex.hints[:n], start=1):
        print(_wrap(f"{i}. {hint}", "  ", "     "))
    if n < len(ex.hints):
        print(f"\n(hint {n} of {len(ex.hints)}: `npgpt exercise hint {ex.name}` again for the next)")
    else:
        print(f"\n(that was the last, the formula; `npgpt exercise solution {ex.name}` shows npgpt's code)")
    return 0


def run_solution(args) -> int:
    ex = get(args.name)
    print(f"npgpt's own implementation of {ex.name} (the reference the checks agree with):")
    for fn in ex.sources:
        where = Path(inspect.getsourcefile(fn))
        parts = where.parts[where.parts.index("npgpt"):] if "npgpt" in where.parts else where.parts[-1:]
        print(f"\n# {'/'.join(parts)}, {fn.__module__}.{fn.__name__}\n")
        print(inspect.getsource(fn).rstrip())
    return 0


def _stamp(path: Path):
    """What the file holds now (None if missing): a change means it was saved."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def watch(ws: Workspace, seed: int = 0, interval: float = 0.5, max_checks: int | None = None,
          on_check=None) -> int:
    """Check the current exercise, then again each time its file changes; after a pass, start
    the next pending one and watch it. Returns at Ctrl-C (0), after max_checks checks (the last
    check's exit status), or when every exercise passes (0). on_check(n, outcome): for tests."""
    ex = ws.current() or ws.next_pending()
    checks, last, status = 0, None, 0
    try:
        print(f"Watching {ws.root}/ (Ctrl-C to stop).", flush=True)
        if ex is not None:
            ws.start(ex)
        while ex is not None:
            stamp = _stamp(ws.path(ex))
            if stamp != last:
                last = stamp
                print(f"\n-- {time.strftime('%H:%M:%S')} " + "-" * 60, flush=True)
                outcome = check_once(ws, ex, seed)
                checks, status = checks + 1, outcome.exit_status
                if on_check is not None:
                    on_check(checks, outcome)
                if outcome.status == "pass":
                    ex, last = ws.next_pending(after=ex), None
                    if ex is not None:
                        ws.start(ex)
                if max_checks is not None and checks >= max_checks:
                    return status
                continue
            time.sleep(interval)
    except KeyboardInterrupt:
        print("\nStopped watching.")
        return 0
    print(f"All {len(EXERCISES)} exercises pass.")
    return 0


@_workspace_errors
def run_watch(args) -> int:
    return watch(Workspace(args.dir), interval=args.interval, max_checks=args.max_checks)
