"""Parameter and Module: the building form of every layer.

A `Parameter` is a pair of arrays of one shape and dtype: `.data` (the value) and `.grad` (the
gradient the backward passes accumulate into). A `Module` owns Parameters and child Modules, set
as attributes; it finds them by walking its attributes, so a model's parameter names follow its
attribute names: ``h.0.attn.c_attn.weight``.

The protocol (ARCHITECTURE.md, "The layer protocol"): ``forward(...)`` computes the output and
keeps the cache of its last call; ``backward(dout)`` adds (``+=``) each parameter's gradient into
``.grad`` and returns the gradient of its input(s). Because gradients accumulate, one Parameter
used in two places (a tied embedding and head) receives the sum of both contributions, which is
the chain rule.

The arrays of a Parameter are only ever updated in place (``p.data[...] = ...``, ``p.grad += ...``),
never rebound by a layer or an optimizer. One explicit, named step moves them:
`flatten_parameters(module)` puts a model's parameters into one flat buffer and makes each
``p.data`` / ``p.grad`` a view of a slice of it, so that an optimizer updates the whole model in
one pass. GPT and Transformer take that step at the end of their constructors, before anyone
can hold an array; after it nothing moves again.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Iterator

import numpy as np

DTYPES = ("float32", "float64")


def as_dtype(dtype) -> np.dtype:
    """The numpy dtype for "float32" | "float64" (or a numpy dtype); anything else is an error."""
    dt = np.dtype(dtype) if not isinstance(dtype, str) or dtype in DTYPES else None
    if dt is None or dt.name not in DTYPES:
        raise TypeError(f"dtype={dtype!r} is not supported: expected one of {DTYPES}")
    return dt


class Parameter:
    """A trainable array and its gradient.

    data: the value, any shape, float32 or float64.
    grad: same shape and dtype as data, zeros at creation; backward passes add into it.
    requires_grad: False freezes the parameter: optimizers skip it and layers may skip the
        work that only produces its gradient.
    decay: whether weight decay applies. Default: matrices yes, vectors (biases, LayerNorm
        gains) no; Embedding sets it False for its table.
    """

    __slots__ = ("data", "grad", "requires_grad", "decay")

    def __init__(self, data: np.ndarray, requires_grad: bool = True, decay: bool | None = None):
        data = np.asarray(data)
        if data.dtype.name not in DTYPES:
            raise TypeError(f"Parameter data has dtype {data.dtype}: expected one of {DTYPES}")
        self.data = np.ascontiguousarray(data)
        self.grad = np.zeros_like(self.data)
        self.requires_grad = requires_grad
        self.decay = self.data.ndim >= 2 if decay is None else decay

    @property
    def shape(self) -> tuple:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def size(self) -> int:
        return self.data.size

    def __repr__(self) -> str:
        frozen = "" if self.requires_grad else ", frozen"
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype}{frozen})"


class Module:
    """Base class: registers Parameters and Modules assigned as attributes.

    Subclasses implement ``forward`` and ``backward``. ``training`` is True after construction
    and after ``train()``; ``eval()`` sets it False in this module and every descendant (dropout
    becomes the identity).
    """

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}.__init__ must call super().__init__() "
                               f"before assigning attribute {name!r}")
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        object.__delattr__(self, name)

    # -- the protocol ------------------------------------------------------------------------

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def backward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__}.backward")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # -- walking the tree --------------------------------------------------------------------

    def named_children(self) -> Iterator[tuple[str, "Module"]]:
        yield from self._modules.items()

    def children(self) -> Iterator["Module"]:
        for _, m in self.named_children():
            yield m

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, "Module"]]:
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self) -> Iterator["Module"]:
        for _, m in self.named_modules():
            yield m

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """(name, Parameter) for every parameter, each object once (the first name wins)."""
        seen = set()
        for mod_name, mod in self.named_modules(prefix):
            for name, p in mod._parameters.items():
                if id(p) in seen:
                    continue
                seen.add(id(p))
                yield (f"{mod_name}.{name}" if mod_name else name), p

    def parameters(self) -> list[Parameter]:
        return [p for _, p in self.named_parameters()]

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.size for p in self.parameters() if p.requires_grad or not trainable_only)

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad.fill(0)

    def train(self, mode: bool = True) -> "Module":
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self) -> "Module":
        return self.train(False)

    # -- state -------------------------------------------------------------------------------

    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """{name: a copy of the parameter's data}, in registration order."""
        return OrderedDict((name, p.data.copy()) for name, p in self.named_parameters())

    def load_state_dict(self, state: dict, strict: bool = True) -> None:
        """Copy arrays into the parameters, in place, after checking every key and shape.

        Nothing is written unless every check passes. With strict=False, missing and unexpected
        keys are allowed (and left alone); a shape mismatch is always an error. Arrays are cast
        to each parameter's dtype.
        """
        params = dict(self.named_parameters())
        missing = [k for k in params if k not in state]
        unexpected = [k for k in state if k not in params]
        if strict and (missing or unexpected):
            raise KeyError(f"load_state_dict for {type(self).__name__}: "
                           f"missing keys {missing or 'none'}; unexpected keys {unexpected or 'none'}")
        for name, p in params.items():
            if name in state and tuple(np.shape(state[name])) != p.shape:
                raise ValueError(f"load_state_dict: {name!r} has shape {tuple(np.shape(state[name]))}, "
                                 f"expected {p.shape}")
        for name, p in params.items():
            if name in state:
                p.data[...] = np.asarray(state[name], dtype=p.dtype)

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, child in self._modules.items():
            child_repr = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {child_repr}")
        return lines[0] + ")" if len(lines) == 1 else "\n".join(lines) + "\n)"

    def extra_repr(self) -> str:
        return ""


class ModuleList(Module):
    """A list of Modules, registered as children named "0", "1", ..."""

    def __init__(self, modules=()):
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, module: Module) -> None:
        setattr(self, str(len(self._modules)), module)

    def __getitem__(self, i: int) -> Module:
        return list(self._modules.values())[i]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())


def flatten_parameters(params) -> tuple[np.ndarray, np.ndarray]:
    """Move parameters into one flat data buffer and one flat grad buffer, values kept.

        data = [ p0.data.ravel() | p1.data.ravel() | ... ]      p.data == a view of its slice
        grad = [ p0.grad.ravel() | p1.grad.ravel() | ... ]      p.grad == a view of its slice

    params: a Module (its parameters, in named_parameters order) or Parameters (one listed
    twice is stored once); all of one dtype. Returns (data, grad), both 1-D.

    This rebinds p.data and p.grad: arrays taken from them before the call are copies
    afterwards. Call it before anyone holds them, as GPT and Transformer do at the end of their
    constructors. An optimizer finds such runs of neighbouring views and updates each in one
    pass (npgpt.optim.flat).
    """
    if isinstance(params, Module):
        params = params.parameters()
    unique = list({id(p): p for p in params}.values())
    if not unique:
        raise ValueError("flatten_parameters: params is empty: expected at least one Parameter")
    dtypes = {p.dtype for p in unique}
    if len(dtypes) != 1:
        raise TypeError(f"flatten_parameters: params have dtypes {sorted(map(str, dtypes))}, "
                        f"expected a single dtype")
    total = sum(p.size for p in unique)
    data = np.empty(total, dtype=dtypes.pop())
    grad = np.empty_like(data)
    offset = 0
    for p in unique:
        n = p.size
        data[offset:offset + n] = p.data.ravel()
        grad[offset:offset + n] = p.grad.ravel()
        p.data = data[offset:offset + n].reshape(p.shape)
        p.grad = grad[offset:offset + n].reshape(p.shape)
        offset += n
    return data, grad
