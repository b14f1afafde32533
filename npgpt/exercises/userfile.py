"""Running a user's file: load it, find its layers, and call its functions so that anything
that goes wrong is told in terms of the user's file (the function, the line, what was expected),
never as a traceback through npgpt.

The protocol (`npgpt gradcheck --file PATH`, and every exercise file):

    <name>_forward(*inputs) -> (out, cache)
    <name>_backward(dout, cache) -> one gradient per input: a tuple (None for an input without
                                    one), or a single array when one input is a float array
    <name>_inputs(rng) -> the inputs (a list); float64 arrays are checked, anything else (ids,
                          masks, numbers, a np.random.Generator, reset before every call) is
                          passed through

and Module subclasses (npgpt.nn.Module) with an example_inputs(rng) method: their input
gradients and every parameter's.
"""

from __future__ import annotations

import inspect
import itertools
import sys
import traceback
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..nn import Module

_counter = itertools.count()


class Unusable(Exception):
    """The file, or a function in it, cannot be checked; the message says where and why."""


class NotWritten(Exception):
    """The backward still raises NotImplementedError: there is nothing to check yet."""


@dataclass
class FunctionLayer:
    name: str
    forward: Callable
    backward: Callable
    inputs: Callable
    line: int


@dataclass
class ModuleLayer:
    name: str
    cls: type
    line: int


def load(path) -> types.ModuleType:
    """Run the file at `path` as a fresh module (its folder importable while it runs)."""
    path = Path(path)
    if not path.exists():
        raise Unusable(f"{path}: no such file")
    if not path.is_file():
        raise Unusable(f"{path}: not a regular file: expected a Python file")
    try:
        source = path.read_text(encoding="utf-8")
        code = compile(source, str(path), "exec")
    except UnicodeDecodeError as e:
        raise Unusable(f"{path}: not UTF-8 text ({e.reason}): expected a Python file") from None
    except SyntaxError as e:
        raise Unusable(_syntax_message(path, e)) from None
    module = types.ModuleType(f"_npgpt_user_{next(_counter)}_{path.stem}")
    module.__file__ = str(path)
    sys.modules[module.__name__] = module          # dataclasses look it up while the file runs
    sys.path.insert(0, str(path.resolve().parent))
    try:
        exec(code, module.__dict__)
    except SystemExit as e:
        raise Unusable(f"{path}: running the file {_exited(e)}: expected it to define its layers and "
                       f"return (a script's exit belongs under `if __name__ == \"__main__\":`)"
                       f"{where(e, path)}") from None
    except Exception as e:
        raise Unusable(f"{path}: running the file raised {_exception(e)}{where(e, path)}") from None
    finally:
        sys.path.remove(str(path.resolve().parent))
        del sys.modules[module.__name__]           # watch loads a file at every save
    return module


def _syntax_message(path: Path, e: SyntaxError) -> str:
    text = (e.text or "").rstrip("\n")
    caret = " " * (max(e.offset or 1, 1) - 1 + len(text) - len(text.lstrip())) + "^"
    return f"{path}, line {e.lineno}: syntax error: {e.msg}\n    {text.strip()}\n    {caret}"


def _exception(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def _exited(e: SystemExit) -> str:
    """'called exit(3)': a SystemExit (sys.exit, exit, quit) said as what the code did. Caught,
    because it would end npgpt with the user's status and no word (exit(0): a false success)."""
    return f"called exit({'' if e.code is None else repr(e.code)})"


def where(e: BaseException, path) -> str:
    """' at line N: `code`' for the innermost frame of the traceback in the user's file."""
    target = Path(path).resolve()
    frames = [f for f in traceback.extract_tb(e.__traceback__) if Path(f.filename).resolve() == target]
    if not frames:
        return ""
    f = frames[-1]
    return f"\n    at line {f.lineno} of {Path(path).name}: {(f.line or '').strip()}"


def line_of(fn) -> int:
    """The line of a function's `def` (0 when unknown): of the function the user wrote, so a
    bound method is taken to its function and a wrapper (Module wraps every forward and backward,
    nn/module.py) to what it wraps, through __wrapped__."""
    fn = getattr(fn, "__func__", fn)
    try:
        fn = inspect.unwrap(fn)
    except ValueError:                       # a cycle of __wrapped__: keep the outermost
        pass
    code = getattr(fn, "__code__", None)
    return code.co_firstlineno if code is not None else 0


def call(fn, what: str, path, *args, backward: bool = False):
    """fn(*args), with an error from the user's code turned into Unusable (or NotWritten for a
    backward that still raises NotImplementedError); an exit() too. Ctrl-C is left alone."""
    try:
        return fn(*args)
    except NotImplementedError as e:
        if backward:
            raise NotWritten(f"{what} is not written yet (it raises NotImplementedError)") from None
        raise Unusable(f"{what} raised {_exception(e)}{where(e, path)}") from None
    except SystemExit as e:
        raise Unusable(f"{what} {_exited(e)}: expected it to return{where(e, path)}") from None
    except Exception as e:
        raise Unusable(f"{what} raised {_exception(e)}{where(e, path)}") from None


def find_layers(module: types.ModuleType, path) -> list:
    """The layers the file defines, in the order of their lines: FunctionLayer for each
    <name>_forward defined in it (its _backward and _inputs are required), ModuleLayer for each
    Module subclass defined in it with an example_inputs method."""
    found, names = [], vars(module)
    for attr, fn in names.items():
        if not (attr.endswith("_forward") and inspect.isfunction(fn) and fn.__module__ == module.__name__):
            continue
        base = attr[:-len("_forward")]
        for part, expected in (("_backward", "(dout, cache) returning one gradient per input"),
                               ("_inputs", "(rng) returning the inputs of the forward, a list")):
            if not callable(names.get(base + part)):
                raise Unusable(f"{path}: {attr} (line {line_of(fn)}) has no {base}{part}: expected "
                               f"a function {base}{part}{expected}")
        found.append(FunctionLayer(base, fn, names[base + "_backward"], names[base + "_inputs"], line_of(fn)))
    for attr, cls in names.items():
        if inspect.isclass(cls) and issubclass(cls, Module) and cls.__module__ == module.__name__ \
                and callable(getattr(cls, "example_inputs", None)):
            found.append(ModuleLayer(attr, cls, line_of(cls.example_inputs)))
    return sorted(found, key=lambda layer: layer.line)


def unchecked_modules(module: types.ModuleType) -> list[str]:
    """Module subclasses of the file without example_inputs: named, so that none is skipped silently."""
    return [n for n, c in vars(module).items() if inspect.isclass(c) and issubclass(c, Module)
            and c.__module__ == module.__name__ and not callable(getattr(c, "example_inputs", None))]
