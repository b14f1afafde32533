"""Gradient checking: the student's tool, and the oracle for every backward in npgpt.

The numerical gradient of a scalar L(x) by central differences:

    dL/dx_i ~= (L(x + h e_i) - L(x - h e_i)) / (2 h)           error O(h^2)

A layer's output is not a scalar, so we check the scalar L = sum(f(x) * dout) for a *random*
upstream gradient dout: its gradient is exactly what the layer's backward(dout) must return.
Never use dout = ones: for a normalisation layer the terms that depend on dout cancel against
the ones that do not, and a wrong backward can pass.

Everything runs in float64: with h = 1e-5 the truncation error is ~h^2 = 1e-10 and the rounding
error ~eps/h = 1e-11, so a correct backward agrees to ~1e-9 or better.

Two errors are reported for each tensor, a (the backward's) against b (the numerical one):

    rel_error(a, b)         = max_i |a_i - b_i| / max_i (|a_i| + |b_i|)        norm-wise
    elementwise_error(a, b) = max_i |a_i - b_i| / max(|a_i| + |b_i|, floor)    element-wise
                              floor = 1e-3 * max_i (|a_i| + |b_i|)

The norm-wise error measures every element against the largest one: it is robust (a correct
backward is at ~1e-10), but an element a thousand times smaller than the largest may be wrong
by a few percent and still pass. The element-wise error is CS231n's |a - b| / (|a| + |b|) per
element, so a wrong small element shows; its floor replaces CS231n's absolute 1e-8, because near
a zero of the gradient the numerical gradient's own noise (~1e-10) over a tiny |a| + |b| reads
as an error of order 1 (npgpt's own correct layers reach 4e-2 that way; with the floor, 5e-7).

Which decides: a tensor passes when BOTH hold, rel_error <= its TOLERANCES entry (1e-7) and
elementwise_error <= ELEMENT_TOLERANCE (1e-5). The first is the tight bound on the large
elements, where the numerical gradient is most accurate; the second is the bound no element
above the floor can hide from. (Below the floor an element is judged absolutely: wrong by more
than 1e-8 of the largest, it fails.) compare() applies the rule; check_all() reports both.

A user's own file (`npgpt gradcheck --file`) and the exercises are checked by npgpt.exercises
with these functions and the same rule.

Why one file: the numerical gradient, the two errors, the pass rule and the tiny cases of every
layer that `npgpt gradcheck` runs are one argument, read top to bottom; split, the rule would sit
apart from the cases it was sized on.
"""

from __future__ import annotations

from typing import Callable, Sequence

import math

import numpy as np

from . import nn
from .nn.module import Module

TINY = 1e-30

# How close a float64 backward must be to the numerical gradient to pass, and why that size.
TOLERANCES = {
    # smooth layers: truncation O(h^2) ~ 1e-10 plus rounding ~ 1e-11 / |grad|: 1e-7 leaves room
    "smooth": 1e-7,
    # ReLU (and anything with a kink): a difference that straddles x = 0 is wrong by O(1) at that
    # coordinate; inputs are drawn away from 0, so the same bound holds, but say it separately
    "kinked": 1e-7,
}

# The bound on elementwise_error, for every tensor: npgpt's own layers stay below 5e-7 (module
# docstring), so 1e-5 leaves a factor 20 and still fails an element wrong by 1e-5 of itself.
ELEMENT_TOLERANCE = 1e-5
# elementwise_error's floor, as a fraction of the tensor's largest |a| + |b| (module docstring)
ELEMENT_FLOOR = 1e-3


def rel_error(a, b) -> float:
    """max|a - b| / max(max(|a| + |b|), tiny): 0 for equal arrays, 1 for unrelated ones."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"rel_error: a has shape {a.shape} and b {b.shape}: expected one shape")
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(a) + np.abs(b))), TINY))


def elementwise_error(a, b) -> float:
    """max_i |a_i - b_i| / max(|a_i| + |b_i|, floor), floor = ELEMENT_FLOOR * max(|a| + |b|):
    CS231n's relative error per element, its tiny denominator floored relative to the tensor."""
    return float(elementwise_errors(a, b).max(initial=0.0))


def elementwise_errors(a, b) -> np.ndarray:
    """The per-element errors of elementwise_error (a's shape): where the worst ones are."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"a has shape {a.shape} and b {b.shape}: expected one shape")
    size = np.abs(a) + np.abs(b)
    floor = max(float(size.max(initial=0.0)) * ELEMENT_FLOOR, TINY)
    return np.abs(a - b) / np.maximum(size, floor)


def compare(analytic, numeric, tol: float = TOLERANCES["smooth"]) -> dict:
    """Both errors of a backward's gradient against the numerical one, and the verdict:
    {"error": rel_error, "element_error": elementwise_error, "passed": both within bounds}."""
    err, elem = rel_error(analytic, numeric), elementwise_error(analytic, numeric)
    return dict(error=err, element_error=elem, passed=err <= tol and elem <= ELEMENT_TOLERANCE)


def numerical_gradient(f: Callable[[], np.ndarray], x: np.ndarray, dout: np.ndarray,
                       h: float = 1e-5, index: Sequence[tuple] | None = None) -> np.ndarray:
    """Central differences of sum(f() * dout) with respect to x, which f reads and this perturbs
    in place (and restores).

    f: a function of no arguments that recomputes the output from the current x.
    index: if given, only these coordinates are computed (the rest of the result is 0); for large
    tensors, check a sample.
    """
    if x.dtype != np.float64:
        raise TypeError(f"numerical_gradient: x has dtype {x.dtype}: expected float64 "
                        f"(float32 differences are dominated by rounding)")
    grad = np.zeros_like(x)
    coords = np.ndindex(x.shape) if index is None else index
    for i in coords:
        old = x[i]
        x[i] = old + h
        plus = np.sum(f() * dout)
        x[i] = old - h
        minus = np.sum(f() * dout)
        x[i] = old
        grad[i] = (plus - minus) / (2 * h)
    return grad


def upstream_rng(seed: int) -> np.random.Generator:
    """The Generator of the random upstream gradient: a stream of its own, so that a test whose
    inputs come from default_rng(seed) does not draw dout equal to its x (for LayerNorm, that
    dout is nearly orthogonal to the gradient, which then vanishes and hides errors)."""
    return np.random.default_rng([seed, 0x67726164])


def sample_index(shape, n: int | None, rng: np.random.Generator):
    """All coordinates of `shape`, or n of them drawn without replacement."""
    size = int(np.prod(shape))
    if n is None or n >= size:
        return None
    flat = rng.choice(size, size=n, replace=False)
    return [np.unravel_index(i, shape) for i in flat]


def _picked(analytic, numeric, index):
    """The two gradients at the checked coordinates (all of them when index is None)."""
    if index is None:
        return analytic, numeric
    pick = tuple(np.array(ix) for ix in zip(*index))
    return analytic[pick], numeric[pick]


def _compare(analytic, numeric, index):
    return rel_error(*_picked(analytic, numeric, index))


def _as_tuple(grads, inputs) -> tuple:
    """One gradient per input: a single array is the gradient of the only float input."""
    if isinstance(grads, tuple):
        return grads
    floats = [i for i, x in enumerate(inputs) if isinstance(x, np.ndarray) and x.dtype == np.float64]
    out = [None] * len(inputs)
    out[floats[0] if len(floats) == 1 else 0] = grads
    return tuple(out)


def check_layer(forward: Callable, backward: Callable, inputs: Sequence, seed: int = 0,
                samples: int | None = None, h: float = 1e-5) -> dict[str, float]:
    """Check a pure forward/backward pair: {"d0": rel_error, "d1": ...} per float input.

    forward(*inputs) -> (out, cache);  backward(dout, cache) -> one gradient per input
    (a tuple, or a single array when one input is a float array, as embedding_backward's dW).
    Inputs that are not float arrays (token ids, masks) and gradients returned as None are
    skipped. (npgpt.exercises checks a user's file with the same rules and reports both errors.)
    """
    rng = upstream_rng(seed)
    inputs = list(inputs)
    out, cache = forward(*inputs)
    dout = rng.standard_normal(np.shape(out))
    grads = _as_tuple(backward(dout, cache), inputs)
    errors = {}
    for i, (x, g) in enumerate(zip(inputs, grads)):
        if g is None or not isinstance(x, np.ndarray) or x.dtype != np.float64:
            continue
        index = sample_index(x.shape, samples, rng)
        num = numerical_gradient(lambda: forward(*inputs)[0], x, dout, h=h, index=index)
        errors[f"d{i}"] = _compare(g, num, index)
    return errors


def check_module(module: Module, inputs: Sequence, seed: int = 0, samples: int | None = None,
                 h: float = 1e-5, input_names: Sequence[str] | None = None) -> dict[str, float]:
    """Check a Module's input gradients and every parameter gradient in one call.

    The module must be float64 and deterministic (dropout 0, or in eval mode). Its backward(dout)
    returns the gradient of its float inputs (a single array, or a tuple in input order).
    Returns {input name or "input{i}": err, parameter name: err} (rel_error, norm-wise).
    """
    pairs = module_gradients(module, inputs, seed, samples, h, input_names)
    return {name: rel_error(a, b) for name, (a, b) in pairs.items()}


def module_gradients(module: Module, inputs: Sequence, seed: int = 0, samples: int | None = None,
                     h: float = 1e-5, input_names: Sequence[str] | None = None) -> dict:
    """{input or parameter name: (backward's gradient, numerical gradient)} of check_module, at
    the checked coordinates, for callers that want more than one number (compare, the worst).

    A backward adds into each .grad (a tied weight, or gradient accumulation over micro-batches,
    sums several contributions there), so the .grad arrays hold random values before it runs
    and what is compared is what it added: a backward that assigns (p.grad = g, or p.grad[...] =
    g) instead of adding fails here, where from zero it would pass."""
    rng = upstream_rng(seed)
    inputs = list(inputs)
    out = module.forward(*inputs)
    dout = rng.standard_normal(np.shape(out))
    module.zero_grad()
    prefilled = _prefill_grads(module, seed)
    grads = module.backward(dout)
    if not isinstance(grads, tuple):
        grads = (grads,)
    float_inputs = [i for i, x in enumerate(inputs) if isinstance(x, np.ndarray) and x.dtype == np.float64]
    names = input_names or [f"input{i}" for i in range(len(inputs))]
    pairs = {}
    f = lambda: module.forward(*inputs)    # noqa: E731 -- reads the perturbed arrays
    for i, g in zip(float_inputs, grads):
        if g is None:
            continue
        index = sample_index(inputs[i].shape, samples, rng)
        pairs[names[i]] = _picked(g, numerical_gradient(f, inputs[i], dout, h=h, index=index), index)
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        if p.dtype != np.float64:
            raise TypeError(f"check_module: parameter {name} has dtype {p.dtype}: expected float64")
        index = sample_index(p.shape, samples, rng)
        added = p.grad - prefilled[id(p)]
        pairs[name] = _picked(added, numerical_gradient(f, p.data, dout, h=h, index=index), index)
    return pairs


def _prefill_grads(module: Module, seed: int) -> dict:
    """Fill every trainable parameter's .grad with random values, in place (each Parameter once,
    however many names it has); {id(parameter): a copy of what was put there}."""
    rng = np.random.default_rng([seed, 1])
    filled = {}
    for _, p in module.named_parameters():
        if p.requires_grad and id(p) not in filled:
            p.grad[...] = rng.standard_normal(p.shape)
            filled[id(p)] = p.grad.copy()
    return filled


# -- every layer, tiny, in float64: what `npgpt gradcheck` runs ------------------------------

class _Reseeded(Module):
    """Runs a dropout-bearing module with its Generators reset before every forward, so the
    same mask is drawn each time and the function is deterministic enough to differentiate."""

    def __init__(self, module: Module, seed: int = 1):
        super().__init__()
        self.inner, self.seed = module, seed

    def forward(self, *args, **kwargs):
        for i, m in enumerate(self.inner.modules()):
            if hasattr(m, "rng") and isinstance(m.rng, np.random.Generator):
                m.rng = np.random.default_rng([self.seed, i])
        return self.inner.forward(*args, **kwargs)

    def backward(self, dout):
        return self.inner.backward(dout)


def layer_cases(dtype="float64", seed: int = 0) -> dict:
    """{case name: (module, inputs)} for every layer of npgpt.nn, small enough to check every
    coordinate. Inputs are drawn away from ReLU's kink at 0, and attention weights a little
    larger than the model's init so the softmax is not uniform (which would hide errors)."""
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)

    def x(*shape):
        return rng.standard_normal(shape).astype(dt)

    def away_from_zero(*shape):
        v = rng.standard_normal(shape)
        return (np.sign(v) * (0.1 + np.abs(v))).astype(dt)

    pad = np.zeros((2, 5), dtype=bool)
    pad[1, 3:] = True                    # the second sequence has 3 real positions of 5
    src_pad = np.zeros((2, 4), dtype=bool)
    src_pad[0, 2:] = True
    ids = rng.integers(0, 11, size=(2, 5))
    targets = rng.integers(0, 7, size=(2, 5))
    targets[0, 1] = -100                 # an ignored position
    kw = dict(dtype=dtype, rng=rng)
    C, H = 8, 2

    return {
        "Linear": (nn.Linear(7, 5, **kw, std=0.5), [x(2, 3, 7)]),
        "Linear (no bias)": (nn.Linear(7, 5, bias=False, **kw, std=0.5), [x(2, 3, 7)]),
        "Embedding": (nn.Embedding(11, 6, **kw, std=1.0), [ids]),
        "LearnedPositionalEmbedding": (nn.LearnedPositionalEmbedding(9, 6, **kw), [5]),
        "Sinusoidal positions": (_TokensAndPositions(11, 6, dtype, rng, offset=3), [ids]),
        "LayerNorm": (_with_random_params(nn.LayerNorm(7, dtype=dtype), rng), [x(2, 3, 7)]),
        "GELU (erf)": (nn.GELU(), [x(2, 3, 7)]),
        "GELU (tanh)": (nn.GELU("tanh"), [x(2, 3, 7)]),
        "ReLU": (nn.ReLU(), [away_from_zero(2, 3, 7)]),
        "Softmax": (nn.Softmax(), [x(2, 3, 7)]),
        "Dropout": (_Reseeded(nn.Dropout(0.3)), [x(2, 3, 7)]),
        "Attention (causal)": (nn.MultiHeadAttention(C, H, causal=True, **kw, std=0.5), [x(2, 5, C)]),
        "Attention (padded)": (_Keyword(nn.MultiHeadAttention(C, H, causal=False, **kw, std=0.5),
                                        key_pad=pad), [x(2, 5, C)]),
        "Attention (dropout)": (_Reseeded(nn.MultiHeadAttention(C, H, dropout=0.2, **kw, std=0.5)),
                                [x(2, 5, C)]),
        "Cross-attention": (_Keyword(nn.MultiHeadAttention(C, H, cross=True, **kw, std=0.5),
                                     key_pad=src_pad), [x(2, 5, C), x(2, 4, C)]),
        "MLP": (nn.MLP(C, 4 * C, "gelu_tanh", **kw, std=0.3), [x(2, 5, C)]),
        "Block (GPT, pre-LN)": (nn.Block(C, H, **kw), [x(2, 5, C)]),
        "EncoderLayer (post-LN)": (_Keyword(nn.EncoderLayer(C, H, 16, **kw, std=0.3), src_pad=pad),
                                   [x(2, 5, C)]),
        "EncoderLayer (pre-LN)": (_Keyword(nn.EncoderLayer(C, H, 16, norm_first=True, **kw, std=0.3),
                                           src_pad=pad), [x(2, 5, C)]),
        "DecoderLayer (post-LN)": (_Keyword(nn.DecoderLayer(C, H, 16, **kw, std=0.3), tgt_pad=pad,
                                            src_pad=src_pad), [x(2, 5, C), x(2, 4, C)]),
        "DecoderLayer (pre-LN)": (_Keyword(nn.DecoderLayer(C, H, 16, norm_first=True, **kw, std=0.3),
                                           tgt_pad=pad, src_pad=src_pad), [x(2, 5, C), x(2, 4, C)]),
        "CrossEntropy": (_Keyword(nn.CrossEntropyLoss(), targets=targets), [x(2, 5, 7)]),
        "CrossEntropy (smoothed)": (_Keyword(nn.CrossEntropyLoss(label_smoothing=0.1), targets=targets),
                                    [x(2, 5, 7)]),
    }


class _Keyword(Module):
    """A module with some forward arguments fixed (masks, targets): gradcheck varies the rest."""

    def __init__(self, module: Module, **fixed):
        super().__init__()
        self.inner, self.fixed = module, fixed

    def forward(self, *args):
        return self.inner.forward(*args, **self.fixed)

    def backward(self, dout):
        return self.inner.backward(dout)


class _TokensAndPositions(Module):
    """The encoder-decoder's input, then a LayerNorm, so that the positions shape the gradient:

        y = LayerNorm(E[ids] * sqrt(C) + PE[offset .. offset+T-1])

    PE (sinusoidal_encoding) has no parameters and adds nothing to the backward; the LayerNorm's
    row statistics depend on it, so the gradient of E is right only if the forward added the
    right rows of PE (an offset, as when decoding with a KV cache) and the backward applies the
    sqrt(C) scale. Parameters: tok.weight, ln.weight, ln.bias.
    """

    def __init__(self, vocab: int, C: int, dtype, rng: np.random.Generator, offset: int = 0):
        super().__init__()
        self.tok = nn.Embedding(vocab, C, dtype=dtype, rng=rng, std=1.0)
        self.pos = nn.SinusoidalPositionalEncoding(16, C, dtype=dtype)
        self.ln = _with_random_params(nn.LayerNorm(C, dtype=dtype), rng)
        self.offset, self.scale = offset, np.dtype(dtype).type(math.sqrt(C))

    def forward(self, ids):
        x = self.tok.forward(ids) * self.scale + self.pos.forward(ids.shape[1], self.offset)
        return self.ln.forward(x)

    def backward(self, dout):
        # forward: y = ln(E[ids] * sqrt(C) + PE)   (PE is fixed: it passes the gradient through)
        return self.tok.backward(self.ln.backward(dout) * self.scale)


def _with_random_params(module: Module, rng: np.random.Generator) -> Module:
    """Replace ones/zeros initialisations by random values (ones hide a missing `* w`)."""
    for p in module.parameters():
        p.data[...] = rng.standard_normal(p.shape)
    return module


def check_all(seed: int = 0) -> list[dict]:
    """Check every layer of layer_cases() in float64: one row per checked tensor with
    layer, tensor, shape, error (norm-wise), element_error, tolerance and passed (compare())."""
    rows = []
    for layer, (module, inputs) in layer_cases("float64", seed).items():
        pairs = module_gradients(module, inputs, seed=seed)
        shapes = {f"input{i}": np.shape(a) for i, a in enumerate(inputs)}
        shapes.update({name: p.shape for name, p in module.named_parameters()})
        for tensor, (analytic, numeric) in pairs.items():
            tol = TOLERANCES["kinked" if "ReLU" in layer else "smooth"]
            rows.append(dict(layer=layer, tensor=tensor.replace("inner.", ""), shape=shapes[tensor],
                             tolerance=tol, **compare(analytic, numeric, tol)))
    return rows


def format_table(rows: list[dict]) -> str:
    """The rows of check_all as an aligned text table: both errors, then the verdict. A row may
    carry a "result" of its own (a wrong shape, NaN), shown in place of the errors."""
    header = ("layer", "tensor", "shape", "rel. error", "elem. error", "result")
    body = [(r["layer"], r["tensor"], "x".join(map(str, r["shape"])) or "scalar",
             *_error_cells(r), "pass" if r["passed"] else "FAIL") for r in rows]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *body)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(b) for b in body])


def _error_cells(row: dict) -> tuple[str, str]:
    if row.get("error") is None:
        return "-", "-"
    return f"{row['error']:.2e}", f"{row['element_error']:.2e}"


def summary_line(rows: list[dict]) -> str:
    """The last line of `npgpt gradcheck`: how many tensors passed, and the rule they passed."""
    failed = sum(not r["passed"] for r in rows)
    layers = len({r["layer"] for r in rows})
    tol = max(r["tolerance"] for r in rows) if rows else TOLERANCES["smooth"]
    return (f"{len(rows) - failed}/{len(rows)} tensor{'s' * (len(rows) != 1)} of {layers} "
            f"layer{'s' * (layers != 1)} within tolerance (rel. error "
            f"<= {tol:.0e} and elem. error <= {ELEMENT_TOLERANCE:.0e}, float64 central differences)")
