"""`npgpt gradcheck --file PATH`: check the layers of a user's file (the protocol in userfile).

Exit status: 0 when every gradient passes, 1 when one fails (wrong values, shape, NaN), 2 when
the file, or one of its layers, cannot be checked (the message says which function, which line,
and what was expected).
"""

from __future__ import annotations

import sys

from .. import gradcheck
from . import diagnose
from .checker import check_function, check_module_class
from .userfile import FunctionLayer, NotWritten, Unusable, find_layers, load, unchecked_modules


def check_file(path, seed: int = 0) -> tuple[list, list[str]]:
    """([Result] for every layer that could be checked, [problem message] for the others)."""
    module = load(path)
    layers = find_layers(module, path)
    if not layers:
        raise Unusable(f"{path}: no layer to check: expected functions <name>_forward, "
                       f"<name>_backward and <name>_inputs, or a Module subclass with an "
                       f"example_inputs(rng) method")
    results, problems = [], [f"{path}: class {n} has no example_inputs(rng): not checked"
                             for n in unchecked_modules(module)]
    for layer in layers:
        try:
            if isinstance(layer, FunctionLayer):
                results.append(check_function(layer.name, layer.forward, layer.backward, layer.inputs,
                                              path, seed))
            else:
                results.append(check_module_class(layer.cls, path, seed))
        except (Unusable, NotWritten) as e:
            problems.append(f"{path}: {e}")
            continue
        if not results[-1].tensors:
            problems.append(f"{path}: {layer.name}: nothing to check: expected a float64 input or "
                            f"parameter with a gradient (float64 arrays are checked)")
    return results, problems


def run_file(path, seed: int = 0, layer: str | None = None, out=None, err=None) -> int:
    """Print the table of a user's file (and why each failure failed); return the exit status.
    out, err: where to print (default: sys.stdout, sys.stderr as they are at the call)."""
    out, err = out or sys.stdout, err or sys.stderr
    try:
        results, problems = check_file(path, seed)
    except Unusable as e:
        print(f"npgpt gradcheck: error: {e}", file=err)
        return 2
    if layer:
        names = [r.layer for r in results]
        results = [r for r in results if layer.lower() in r.layer.lower()]
        if not results and names:
            print(f"npgpt gradcheck: error: --layer {layer!r} matches no layer of {path}: expected "
                  f"part of one of: {', '.join(names)}", file=err)
            return 2
    rows = [row for r in results for row in r.rows]
    if rows:
        print(gradcheck.format_table(rows), file=out)
    for r in results:
        for note in r.notes:
            print(f"note: {r.layer}: {note}", file=out)
        if not r.passed:
            print(f"\n{r.layer}:" + "\n".join(diagnose.report(r)), file=out)
    if rows:
        print("\n" + gradcheck.summary_line(rows), file=out)
    for p in problems:
        print(f"npgpt gradcheck: error: {p}", file=err)
    if problems or not rows:
        return 2
    return 0 if all(r["passed"] for r in rows) else 1
