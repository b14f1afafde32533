"""The backend registry: which module supplies the hot kernels.

Every backend module exposes the same functions with the same signatures (matmul,
attention_forward, attention_backward, ...). The layers never import a backend directly; they ask
the registry for the current one's function:

    attn = npgpt.kernels.get("attention_forward")

Backends:
    "numpy"  kernels/reference.py  the readable definition; every other backend is tested equal to it
    "numba"  kernels/cpu/          Numba @njit kernels, parallel and cached
    "cuda"   kernels/cuda.py       numba.cuda kernels (optional target)

A backend that lacks a function falls back to the reference one, so a backend can be partial
while it grows; `implements(name)` tells which it is.

Choose the backend with `use_backend(name)`, temporarily with `with backend(name): ...`, or for
the whole process with the environment variable NPGPT_BACKEND. Without either, the default is the
fastest correct backend available on this machine. The initial backend is resolved on first use
(the first get, fused, current_backend, backend or implements), not at import: `import npgpt`
never fails, and a bad NPGPT_BACKEND is reported, naming the variable, where a kernel is first
needed.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from types import ModuleType

from . import reference

__all__ = ["available_backends", "backend", "current_backend", "fused", "get", "implements", "use_backend"]

_MODULES = {"numpy": "npgpt.kernels.reference", "numba": "npgpt.kernels.cpu",
            "cuda": "npgpt.kernels.cuda"}
_DEFAULT_ORDER = ("numba", "numpy")   # fastest first; "cuda" only when asked for
_loaded: dict[str, ModuleType] = {"numpy": reference}
_errors: dict[str, str] = {}
_current: str | None = None      # None until the first use resolves it (_resolve)


def _load(name: str) -> ModuleType | None:
    if name in _loaded:
        return _loaded[name]
    if name in _errors:
        return None
    try:
        module = importlib.import_module(_MODULES[name])
        if hasattr(module, "check_available"):
            module.check_available()
    except Exception as e:   # an optional backend may be missing; say why when it is asked for
        _errors[name] = f"{type(e).__name__}: {e}"
        return None
    _loaded[name] = module
    return module


def available_backends() -> list[str]:
    """The names of the backends that import and run on this machine."""
    return [name for name in _MODULES if _load(name) is not None]


def use_backend(name: str) -> None:
    """Make `name` the backend that `get` answers from."""
    global _current
    if name not in _MODULES:
        raise ValueError(f"backend={name!r} is unknown: expected one of {sorted(_MODULES)}")
    if _load(name) is None:
        raise RuntimeError(f"backend={name!r} is not available on this machine: {_errors[name]}")
    _current = name


def current_backend() -> str:
    """The name of the backend that `get` answers from."""
    return _resolve()


@contextlib.contextmanager
def backend(name: str):
    """Use backend `name` inside the with-block, then restore the previous one."""
    previous = _resolve()
    use_backend(name)
    try:
        yield
    finally:
        use_backend(previous)


def implements(name: str, backend_name: str | None = None) -> bool:
    """True if the backend defines `name` itself (rather than falling back to the reference)."""
    module = _load(backend_name or _resolve())
    return module is not None and name in getattr(module, "__all__", ())


def get(name: str):
    """The current backend's function `name`, or the reference one where it has none."""
    module = _loaded[_resolve()]
    if name in getattr(module, "__all__", ()):
        return getattr(module, name)
    if name in reference.__all__:
        return getattr(reference, name)
    raise AttributeError(f"kernel {name!r} does not exist: expected one of {sorted(reference.__all__)}")


def fused(name: str):
    """The current backend's fused kernel `name`, or None if it has none.

    For operations whose readable definition lives in npgpt.nn (LayerNorm, GELU, cross-entropy,
    the AdamW update): the layer runs its NumPy code unless the backend offers a fused
    replacement, which the tests hold equal to that code.
    """
    module = _loaded[_resolve()]
    return getattr(module, name) if name in getattr(module, "__all__", ()) else None


def _resolve() -> str:
    """The current backend, chosen on first use: NPGPT_BACKEND if set, else the fastest available."""
    global _current
    if _current is None:
        _current = _initial_backend()
    return _current


def _initial_backend() -> str:
    requested = os.environ.get("NPGPT_BACKEND")
    if requested:            # an unknown or unavailable name is an error, not a silent default
        if requested not in _MODULES:
            hint = f" (names are lower case: {requested.lower()!r})" if requested.lower() in _MODULES else ""
            raise ValueError(f"NPGPT_BACKEND={requested!r} is unknown{hint}: expected one of "
                             f"{sorted(_MODULES)}, or unset for the fastest available")
        if _load(requested) is None:
            raise RuntimeError(f"NPGPT_BACKEND={requested!r} is not available on this machine: "
                               f"{_errors[requested]}. Expected one of {available_backends()}, or unset "
                               f"for the fastest available")
        return requested
    for name in _DEFAULT_ORDER:
        if _load(name) is not None:
            return name
    return "numpy"
