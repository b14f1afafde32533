"""The check itself: a user's backward against central differences, tensor by tensor, with both
errors of npgpt.gradcheck and the arrays kept for the diagnosis.

Every call into the user's code goes through userfile.call, so a failure names the user's
function and line. A wrong gradient (wrong values, wrong shape, NaN) is a failed row; a file
that cannot be run (a forward that raises or returns no (out, cache), a wrong number of
gradients, no float64 input) raises userfile.Unusable.

What the user's code receives cannot change what it is checked against: the backward gets a
copy of dout (the numerical gradient uses the one drawn), and a Module's .grad arrays hold
random values before its backward, so that what is compared is what the backward added, and a
backward that assigns (p.grad = ...) instead of adding (p.grad += ...) fails.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass, field

import numpy as np

from .. import gradcheck
from .userfile import Unusable, call, line_of


@dataclass
class Tensor:
    """One checked gradient: the user's (analytic) and the numerical one, and its table row."""
    name: str
    key: object                    # the input's position, or the parameter's name
    analytic: np.ndarray | None
    numeric: np.ndarray | None
    row: dict
    problem: str | None = None     # a wrong shape, NaN: why there are no errors to show
    label: str = ""                # how the text names it: "dx" (the default), "p"
    against: str = "numerical"     # what it was compared with

    def __post_init__(self):
        self.label = self.label or f"d{self.name}"


@dataclass
class Result:
    layer: str
    tensors: list[Tensor] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    dout: object = None
    inputs: list = field(default_factory=list)     # as drawn, for running another backward

    @property
    def passed(self) -> bool:
        return bool(self.tensors) and all(t.row["passed"] for t in self.tensors)

    @property
    def rows(self) -> list[dict]:
        return [t.row for t in self.tensors]

    def fresh_inputs(self) -> list:
        """The inputs again, Generators reset to their drawn state (the same dropout mask)."""
        return fresh(self.inputs)


def fresh(inputs: list) -> list:
    return [copy.deepcopy(a) if isinstance(a, np.random.Generator) else a for a in inputs]


def is_checked(x) -> bool:
    """Float64 arrays are checked; anything else is passed through."""
    return isinstance(x, np.ndarray) and x.dtype == np.float64


def input_names(forward, n: int) -> list[str]:
    """The forward's parameter names (x, w, b), or input0, input1, ... where it has *args."""
    try:
        params = [p for p in inspect.signature(forward).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    names = [p.name for p in params[:n]]
    return names + [f"input{i}" for i in range(len(names), n)]


def as_inputs(value, what: str) -> list:
    """An inputs function's result as a list of inputs."""
    if isinstance(value, np.ndarray):
        return [value]
    if not isinstance(value, (list, tuple)):
        raise Unusable(f"{what} returned {type(value).__name__}: expected a list of the forward's inputs")
    return [a.copy() if isinstance(a, np.ndarray) else a for a in value]


def plural(n: int, word: str) -> str:
    """'1 gradient', '2 gradients'."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def some_float64(inputs: list, names: list[str], what: str) -> None:
    """Unusable when no input is float64 but some are float arrays of another dtype: only float64
    ones are checked, and a float32 x would otherwise be skipped and its gradient miscounted."""
    if any(is_checked(x) for x in inputs):
        return
    others = [f"{name} is {x.dtype}" for name, x in zip(names, inputs)
              if isinstance(x, np.ndarray) and x.dtype.kind == "f"]
    if others:
        raise Unusable(f"{what} returned no float64 array: only float64 inputs are checked "
                       f"({', '.join(others)}): expected them in float64 (float32 central "
                       f"differences are dominated by rounding)")


def changed_dout(what: str) -> str:
    """The note for a backward that wrote into its dout (the check passed it a copy)."""
    return (f"{what} changed dout in place: harmless here (it got a copy), but where dout also "
            f"flows elsewhere (a residual branch) the other use would read your changed values: "
            f"write dx = dout * ..., not dout *= ...")


def per_input(grads, inputs: list, what: str, signature: str) -> tuple:
    """One gradient per input, from a tuple (or list) of them, or from a single array when one
    input is checked (None when none is)."""
    floats = [i for i, x in enumerate(inputs) if is_checked(x)]
    if isinstance(grads, list):
        grads = tuple(grads)
    if isinstance(grads, tuple) and len(grads) == len(inputs):
        return grads
    if grads is None and not floats:
        return (None,) * len(inputs)                    # nothing differentiable, nothing returned
    if len(floats) == 1 and (not isinstance(grads, tuple) or len(grads) == 1):
        single = grads[0] if isinstance(grads, tuple) else grads
        return tuple(single if i == floats[0] else None for i in range(len(inputs)))
    got = plural(len(grads), 'gradient') if isinstance(grads, tuple) else f"a single {type(grads).__name__}"
    raise Unusable(f"{what} returned {got}: expected {len(inputs)}, one per input of {signature} "
                   f"(a tuple, None for an input without a gradient)")


def compare_tensor(layer: str, name: str, key, x, g, f, dout, tol: float) -> Tensor:
    """Check one gradient g of the tensor x (which f reads) against central differences."""
    row = dict(layer=layer, tensor=name, shape=np.shape(x), tolerance=tol, error=None,
               element_error=None, passed=False)
    shape_of = getattr(g, "shape", None)
    if not isinstance(g, np.ndarray) or g.dtype.kind != "f":
        kind = getattr(g, "dtype", type(g).__name__)
        return Tensor(name, key, None, None, row, f"d{name} is {kind}: expected a float array of shape {x.shape}")
    numeric = gradcheck.numerical_gradient(f, x, dout)
    if shape_of != x.shape:
        return Tensor(name, key, g, numeric, row, f"d{name} has shape {shape_of}: expected {x.shape}, "
                                                  f"the shape of {name}")
    bad = ~np.isfinite(g)
    if bad.any():
        at = tuple(int(i) for i in np.argwhere(bad)[0])
        return Tensor(name, key, g, numeric, row, f"d{name} holds {int(bad.sum())} NaN or inf "
                                                  f"(the first at {list(at)})")
    row.update(gradcheck.compare(g, numeric, tol))
    return Tensor(name, key, g, numeric, row)


def check_forward_output(result, what: str, want_pair: bool):
    """(out, cache) from a forward's result, or Unusable saying what was expected."""
    if want_pair:
        if not (isinstance(result, tuple) and len(result) == 2):
            got = f"a tuple of {len(result)}" if isinstance(result, tuple) else type(result).__name__
            raise Unusable(f"{what} returned {got}: expected a pair (out, cache)")
        out, cache = result
    else:
        out, cache = result, None
    if not (isinstance(out, (float, np.floating)) or (isinstance(out, np.ndarray) and out.dtype.kind == "f")):
        raise Unusable(f"{what} returned out = {type(out).__name__} {getattr(out, 'dtype', '')}: "
                       f"expected a float array or a number")
    if not np.all(np.isfinite(out)):
        raise Unusable(f"{what} returned NaN or inf in out: expected finite values for these inputs")
    return out, cache


def unchanged(before: list, after: list, names: list[str], what: str) -> None:
    """A forward must leave its inputs alone: the numerical gradient perturbs them itself."""
    for name, a, b in zip(names, before, after):
        if isinstance(a, np.ndarray) and not np.array_equal(a, b, equal_nan=True):
            raise Unusable(f"{what} changed its input {name} in place: expected it to leave its "
                           f"inputs as they were (write x = x - mu, not x -= mu)")


def check_function(layer: str, forward, backward, inputs_fn, path, seed: int = 0,
                   tol: float = gradcheck.TOLERANCES["smooth"]) -> Result:
    """Check <layer>_backward against the numerical gradient of <layer>_forward."""
    fwd = f"{layer}_forward (line {line_of(forward)})"
    bwd = f"{layer}_backward (line {line_of(backward)})"
    inputs = as_inputs(call(inputs_fn, f"{layer}_inputs", path, np.random.default_rng(seed)),
                       f"{layer}_inputs")
    names = input_names(forward, len(inputs))
    some_float64(inputs, names, f"{layer}_inputs")
    result = Result(layer, inputs=inputs)
    before = [a.copy() if isinstance(a, np.ndarray) else a for a in inputs]
    out, cache = check_forward_output(call(forward, fwd, path, *result.fresh_inputs()), fwd, True)
    unchanged(before, inputs, names, fwd)
    result.dout = gradcheck.upstream_rng(seed).standard_normal(np.shape(out))
    signature = f"{layer}_forward({', '.join(names)})"
    dout = result.dout.copy()              # the backward's own: writing into it changes nothing here
    grads = per_input(call(backward, bwd, path, dout, cache, backward=True), inputs, bwd, signature)
    if not np.array_equal(dout, result.dout):
        result.notes.append(changed_dout(bwd))
    f = lambda: call(forward, fwd, path, *result.fresh_inputs())[0]     # noqa: E731 -- reads x
    for i, (name, x, g) in enumerate(zip(names, inputs, grads)):
        if isinstance(x, np.ndarray) and x.dtype.kind == "f" and not is_checked(x):
            result.notes.append(f"{name} is {x.dtype}: not checked (float64 arrays are)")
        elif is_checked(x) and g is None:
            result.notes.append(f"{name}: no gradient returned (None), not checked")
        elif is_checked(x):
            result.tensors.append(compare_tensor(layer, name, i, x, g, f, result.dout, tol))
    return result


def _generators(module) -> dict:
    """Every np.random.Generator a module and its submodules hold, by (submodule, attribute)."""
    found = {}
    for m in module.modules():
        for attr, value in vars(m).items():
            if isinstance(value, np.random.Generator):
                found[(m, attr)] = copy.deepcopy(value)
    return found


def check_module_class(cls, path, seed: int = 0, tol: float = gradcheck.TOLERANCES["smooth"]) -> Result:
    """Check a Module subclass: built with cls(), fed cls.example_inputs(rng); its input
    gradients (what backward returns) and every trainable parameter's .grad, which backward must
    add to (prefill_grads). Generators held by the module or passed in are reset before every
    forward, so dropout draws the same mask."""
    layer = cls.__name__
    module = call(cls, f"{layer}() (building it with no arguments)", path)
    inputs = as_inputs(call(module.example_inputs, f"{layer}.example_inputs", path,
                            np.random.default_rng(seed)), f"{layer}.example_inputs")
    for name, p in module.named_parameters():
        if p.requires_grad and p.dtype != np.float64:
            raise Unusable(f"{layer}: parameter {name} has dtype {p.dtype}: expected float64 "
                           f"(float32 differences are dominated by rounding)")
    names = input_names(module.forward, len(inputs))
    held = _generators(module)
    result = Result(layer, inputs=inputs)
    fwd, bwd = f"{layer}.forward (line {line_of(module.forward)})", f"{layer}.backward (line {line_of(module.backward)})"

    def forward():
        for (m, attr), g in held.items():
            setattr(m, attr, copy.deepcopy(g))
        return call(module.forward, fwd, path, *result.fresh_inputs())

    out, _ = check_forward_output(forward(), fwd, False)
    result.dout = gradcheck.upstream_rng(seed).standard_normal(np.shape(out))
    module.zero_grad()
    before = prefill_grads(module, seed)
    dout = result.dout.copy()              # the backward's own: writing into it changes nothing here
    grads = call(module.backward, bwd, path, dout, backward=True)
    if not np.array_equal(dout, result.dout):
        result.notes.append(changed_dout(bwd))
    if any(is_checked(x) for x in inputs):
        grads = per_input(grads, inputs, bwd, f"{layer}.forward({', '.join(names)})")
        for i, (name, x, g) in enumerate(zip(names, inputs, grads)):
            if is_checked(x) and g is not None:
                result.tensors.append(compare_tensor(layer, name, i, x, g, forward, result.dout, tol))
    result.notes += [f"{name} is {x.dtype}: not checked (float64 arrays are)" for name, x in zip(names, inputs)
                     if isinstance(x, np.ndarray) and x.dtype.kind == "f" and not is_checked(x)]
    for name, p in module.named_parameters():
        if p.requires_grad:
            array, filled = before.get(name, (None, None))
            t = compare_tensor(layer, name, name, p.data, _added(p.grad, filled), forward, result.dout, tol)
            result.tensors.append(_replaced(t, p.grad, name, bwd))
            if array is not None and p.grad is not array and t.row["passed"]:
                result.notes.append(f"{bwd} rebound {name}.grad to a new array: add into the one it "
                                    f"has ({name}.grad += ...): an optimizer holds that array, and "
                                    f"would not see the new one")
    return result


def prefill_grads(module, seed: int) -> dict:
    """Fill each trainable parameter's .grad with random values before the backward, as another
    use of the parameter (a tied weight, an earlier micro-batch) would have: a backward must add
    to .grad (+=), and one that assigns (=) shows only when .grad is not zero.
    {name: (the .grad array, a copy of its prefilled values)}."""
    rng = np.random.default_rng([seed, 0x6772616473])
    before = {}
    for name, p in module.named_parameters():
        if p.requires_grad and isinstance(p.grad, np.ndarray) and p.grad.shape == p.shape \
                and p.grad.dtype == np.float64 and p.grad.flags.writeable:
            p.grad[...] = rng.standard_normal(p.shape)
            before[name] = (p.grad, p.grad.copy())
    return before


def _added(grad, filled):
    """What the backward added to a prefilled .grad; .grad itself where nothing was prefilled or
    it is no longer a float array of that shape (compare_tensor then says what it is)."""
    if filled is not None and isinstance(grad, np.ndarray) and grad.dtype.kind == "f" \
            and grad.shape == filled.shape:
        return grad - filled
    return grad


def _replaced(t: Tensor, grad, name: str, bwd: str) -> Tensor:
    """t, its problem said plainly when .grad alone, not what was added to it, is the gradient:
    the backward assigned instead of accumulating."""
    if t.row["passed"] or t.problem or not isinstance(grad, np.ndarray) or grad.shape != t.numeric.shape:
        return t
    if gradcheck.compare(grad, t.numeric, t.row["tolerance"])["passed"]:
        t.problem = (f"d{name}: replaced, not accumulated (use +=): after {bwd}, {name}.grad is "
                     f"the gradient alone, and what it held is lost (the check filled it with random "
                     f"values first, as another use of {name} would: a tied weight, an earlier "
                     f"micro-batch): write {name}.grad += ..., not {name}.grad = ...")
    return t
