"""The shape of the package (ARCHITECTURE.md): floors, imports, sizes, and pure functions.

- Every import in npgpt/ points down the floors (or stays on its own floor without a cycle):
  a module of the textbook never reaches up into the workshop.
- Imports sit at the top of each module; an import inside a function is allowed only for an
  optional heavy dependency, with a comment on its line or the line above saying why.
- No file over 500 lines; a file over 400 says in its docstring why it holds together
  ("Why one file: ..."). No function over 60 lines, except a kernel factory whose comment
  ("# kernel factory: ...", right above it) says why.
- The pure functions of npgpt/nn run only the NumPy on their page: they never hand their body
  to a fused kernel (the registry's primitives, whose readable definition is
  kernels/reference.py, stay allowed).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "npgpt"
FILES = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)

# Bottom to top. A module may import from its own floor or any floor below it.
FLOORS = [
    {"config", "files", "kernels"},
    {"nn"},
    {"models"},
    {"optim", "data", "tokenizers", "checkpoint", "gradcheck", "finetune", "dist"},
    {"trainer", "settings"},
    {"runs", "sample", "exercises", "trace", "bench"},
    {"cli"},
]
EXEMPT = {"npgpt/__init__.py", "npgpt/__main__.py"}     # the package's front door: names only

# Optional heavy dependencies that may be imported inside a function (with a comment saying why).
LAZY_OK = {"torch", "matplotlib", "mpi4py", "transformers", "numba.cuda", "npgpt.kernels.cuda",
           "IPython", "pyinstrument", "threadpoolctl", "playwright", "jupytext", "nbformat"}

# The registry's primitives, whose readable definition is kernels/reference.py.
PRIMITIVES = {"matmul", "matmul_add", "attention_forward", "attention_backward", "erf"}

MAX_FILE_LINES, EXPLAIN_FROM, MAX_FUNCTION_LINES = 500, 400, 60


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _floor(module: str) -> int | None:
    """The floor of an npgpt module, by its first component under npgpt."""
    parts = module.split(".")
    if parts[0] != "npgpt" or len(parts) < 2:
        return None
    for i, names in enumerate(FLOORS):
        if parts[1] in names:
            return i
    raise AssertionError(f"npgpt.{parts[1]} is on no floor: add it to FLOORS (and ARCHITECTURE.md)")


def _resolve(path: Path, node: ast.ImportFrom | ast.Import) -> list[str]:
    """The absolute module names an import statement refers to."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level == 0:
        base = node.module or ""
    else:
        package = _module_name(path).split(".")
        if path.name != "__init__.py":
            package = package[:-1]
        package = package[:len(package) - (node.level - 1)]
        base = ".".join(package + ([node.module] if node.module else []))
    # `from npgpt import nn` names a module; `from npgpt.nn import Linear` names a module too
    names = [f"{base}.{a.name}" for a in node.names] if base in ("npgpt",) else [base]
    return names


def _imports(path: Path):
    """(lineno, module name, at top level?) of every import statement in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(n) for n in tree.body}
    for stmt in tree.body:                          # `if TYPE_CHECKING:` / try blocks at the top
        if isinstance(stmt, (ast.If, ast.Try)):
            top |= {id(n) for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for name in _resolve(path, node):
                yield node.lineno, name, id(node) in top


@pytest.mark.parametrize("path", FILES, ids=_rel)
def test_imports_point_down_the_floors(path):
    if _rel(path) in EXEMPT:
        return
    here = _floor(_module_name(path))
    up = [f"line {line}: {name} (floor {_floor(name)} > {here})" for line, name, _ in _imports(path)
          if name.startswith("npgpt") and (_floor(name) or 0) > here]
    assert not up, f"{_rel(path)} (floor {here}) imports up the floors: " + "; ".join(up)


@pytest.mark.parametrize("path", FILES, ids=_rel)
def test_imports_are_at_the_top(path):
    lines = path.read_text(encoding="utf-8").splitlines()
    late = []
    for line, name, at_top in _imports(path):
        if at_top:
            continue
        optional = any(name == m or name.startswith(m + ".") for m in LAZY_OK)
        commented = "#" in lines[line - 1] or lines[line - 2].strip().startswith("#")
        if not (optional and commented):
            late.append(f"line {line}: {name}")
    assert not late, (f"{_rel(path)} imports inside functions (only optional heavy dependencies "
                      f"may, with a comment): " + "; ".join(late))


def test_no_import_cycles():
    graph = {}
    for path in FILES:
        mod = _module_name(path)
        graph[mod] = {n for _, n, top in _imports(path) if top and n.startswith("npgpt") and n != mod}
    known = set(graph)

    def target(name):                     # a name may be an attribute of a module: strip to one
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name

    edges = {m: {target(n) for n in deps if target(n) and target(n) != m} for m, deps in graph.items()}
    # a package's __init__ re-exporting its own submodules is how packages work, not a cycle
    edges = {m: {n for n in deps if not (n.startswith(m + "."))} for m, deps in edges.items()}
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(edges.get(m, ())):
            if state.get(n) == "open":
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(n):] + [n]))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = "done"

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for m in sorted(edges):
        if m not in state:
            visit(m)


@pytest.mark.parametrize("path", FILES, ids=_rel)
def test_file_size(path):
    text = path.read_text(encoding="utf-8")
    n = len(text.splitlines())
    assert n <= MAX_FILE_LINES, f"{_rel(path)} has {n} lines: expected at most {MAX_FILE_LINES}"
    if n > EXPLAIN_FROM:
        doc = ast.get_docstring(ast.parse(text)) or ""
        assert "Why one file:" in doc, (f"{_rel(path)} has {n} lines: a file over {EXPLAIN_FROM} "
                                        f"says in its docstring why it holds together ('Why one file: ...')")


@pytest.mark.parametrize("path", FILES, ids=_rel)
def test_function_size(path):
    lines = path.read_text(encoding="utf-8").splitlines()
    tree = ast.parse("\n".join(lines))
    long = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        n = node.end_lineno - node.lineno + 1
        if n <= MAX_FUNCTION_LINES:
            continue
        first = min([node.lineno] + [d.lineno for d in node.decorator_list])
        above = lines[first - 2].strip() if first >= 2 else ""
        if not above.startswith("# kernel factory:"):
            long.append(f"{node.name} (line {node.lineno}, {n} lines)")
    assert not long, (f"{_rel(path)}: functions over {MAX_FUNCTION_LINES} lines: " + ", ".join(long))


def _pure_functions():
    for path in sorted((PACKAGE / "nn").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.endswith(("_forward", "_backward")):
                yield path, node


def _reached(node, functions):
    """node and every module-level function of its file that it calls, directly or through
    another such function: the code a call of node runs, as far as the file shows it."""
    seen, todo = {}, [node]
    while todo:
        fn = todo.pop()
        if fn.name in seen:
            continue
        seen[fn.name] = fn
        todo += [functions[c.func.id] for c in ast.walk(fn) if isinstance(c, ast.Call)
                 and isinstance(c.func, ast.Name) and c.func.id in functions]
    return list(seen.values())


@pytest.mark.parametrize("path,node", list(_pure_functions()), ids=lambda x: getattr(x, "name", ""))
def test_pure_functions_run_only_their_own_numpy(path, node):
    """A pure x_forward / x_backward of nn/ may call the registry for a primitive (matmul,
    attention, erf: defined in reference.py), never for a fused twin of its own body; nor may a
    helper of the same file that it calls."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    functions = {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef)}
    bad = []
    for fn in _reached(node, functions):
        where = "" if fn is node else f" (in {fn.name}, which it calls)"
        for call in ast.walk(fn):
            if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)):
                continue
            owner = call.func.value
            if not (isinstance(owner, ast.Name) and owner.id == "kernels"):
                continue
            if call.func.attr == "fused":
                bad.append(f"line {call.lineno}: kernels.fused(...){where}")
            elif call.func.attr == "get":
                arg = call.args[0] if call.args else None
                if not (isinstance(arg, ast.Constant) and arg.value in PRIMITIVES):
                    bad.append(f"line {call.lineno}: kernels.get({ast.unparse(arg) if arg else ''}){where}")
    assert not bad, (f"{_rel(path)}: {node.name} hands its body to a kernel (choose fused kernels in "
                     f"the Module): " + "; ".join(bad))


@pytest.mark.parametrize("path", sorted((PACKAGE / "nn").glob("*.py")), ids=lambda p: p.name)
def test_nn_reaches_kernels_only_through_the_registry(path):
    """nn/ imports the kernels package as `kernels` (so every kernel call reads kernels.get /
    kernels.fused, which the test above can see) and names from kernels.reference; never a backend
    module (kernels.cpu, kernels.cuda) nor the registry's functions under a bare name."""
    bad = []
    for imp in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(imp, ast.ImportFrom):
            module = ("." * imp.level) + (imp.module or "")
            names = [a.name for a in imp.names]
            if module == ".." and names != ["kernels"] and "kernels" in names:
                bad.append(f"line {imp.lineno}: from .. import {', '.join(names)}")
            elif module == "..kernels" or (module.startswith("..kernels.") and module != "..kernels.reference"):
                bad.append(f"line {imp.lineno}: from {module} import {', '.join(names)}")
            elif module.startswith("npgpt.kernels"):
                bad.append(f"line {imp.lineno}: from {module} import ... (import it relatively, as `kernels`)")
        elif isinstance(imp, ast.Import):
            bad += [f"line {imp.lineno}: import {a.name}" for a in imp.names if a.name.startswith("npgpt.kernels")]
    assert not bad, f"{_rel(path)} reaches kernels around the registry: " + "; ".join(bad)


def test_there_are_pure_functions_to_check():
    names = {node.name for _, node in _pure_functions()}
    assert {"layernorm_forward", "layernorm_backward", "cross_entropy_forward", "gelu_tanh_forward",
            "embedding_backward", "linear_forward"} <= names
