"""The README's promises: exactly two set-up commands, and CI runs the second one verbatim."""

import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def setup_commands():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Set up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)\n```", section, flags=re.S)


def test_readme_has_exactly_two_setup_commands():
    commands = setup_commands()
    assert len(commands) == 2, commands
    assert all("\n" not in c for c in commands)
    assert commands[0].startswith("pip install . && npgpt ")


def test_ci_runs_the_readme_test_command_verbatim():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert setup_commands()[1] == ci[-1]


def test_the_readme_stays_a_front_page():
    """The README is the front page (what npgpt is, set-up, a tour, the sections the issues ask it
    to show, the headline results, a map of the docs); a command's details go to its docs/ page."""
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 320, f"README.md has {len(lines)} lines: move details to docs/"


def test_the_trace_excerpt_is_real_output():
    """Every line of the README's `npgpt trace` excerpt (but its "..." line) is a line that the
    command prints, so the excerpt cannot drift from the tool."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Trace one training step", 1)[1].split("\n## ", 1)[0]
    excerpt = re.findall(r"^```\n(forward:.*?)\n```$", section, flags=re.S | re.M)
    assert excerpt, "the trace section has no excerpt of the terminal view"
    run = subprocess.run([sys.executable, "-m", "npgpt", "trace"], capture_output=True, text=True,
                         cwd=ROOT, check=True)
    printed = {line.rstrip() for line in run.stdout.splitlines()}
    stale = [line for line in excerpt[0].splitlines() if line.strip() != "..." and line.rstrip() not in printed]
    assert not stale, f"README's trace excerpt holds lines npgpt trace does not print: {stale}"
