"""Optimizers (SGD, AdamW), gradient clipping and learning-rate schedules, in NumPy.

Both optimizers follow torch.optim step for step (the tests hold them equal to it), with one
npgpt convention on top: weight decay applies only to parameters whose ``p.decay`` is True (the
layers set it: matrices yes; biases, LayerNorm gains and embedding tables no), so
``AdamW(model.parameters(), weight_decay=0.1)`` decays what it should.

The flat buffer. At construction an optimizer moves its trainable parameters into one flat
buffer per dtype (`npgpt.nn.module.flatten_parameters`): afterwards ``p.data`` and ``p.grad`` are
views of slices of it. Layers only update parameters in place, so they keep working, and a step
is one pass over a few flat arrays (parameters, gradients, moments, the decay mask) instead of a
Python loop over parameters. Arrays obtained from ``p.data`` / ``p.grad`` *before* the optimizer
was built are stale copies afterwards.

    data[float32] = [ w0.ravel() | b0.ravel() | w1.ravel() | ... ]    p.data == a view of a slice
    grad[float32] = [ dw0        | db0        | dw1        | ... ]    p.grad == a view of a slice
    decay         = [ True ...   | False ...  | True ...   | ... ]

Within a buffer the parameters lie in the order given, group after group, so each param group is
one contiguous segment of each buffer.

Steps and schedules count from 1: the first call of ``step()`` is step 1 (AdamW's bias
corrections use it), and a schedule is called with the number of the step about to be taken:

    for it in range(max_iters):
        opt.lr = schedule(it + 1)
        ...forward, backward...
        opt.step()
"""

from __future__ import annotations

import math
import operator

import numpy as np

from . import kernels
from .nn.module import Parameter, flatten_parameters

__all__ = ["SGD", "AdamW", "adamw_update", "sgd_update", "clip_grad_norm",
           "constant", "warmup_cosine", "noam", "Constant", "WarmupCosine", "Noam"]

BLOCK = 1 << 16   # elements per chunk of a flat update: the chunk's scratch stays in cache


def _chunks(n: int):
    """(start, stop) of consecutive blocks of at most BLOCK elements covering range(n)."""
    for start in range(0, n, BLOCK):
        yield start, min(start + BLOCK, n)


# -- the updates: one pass over flat arrays ----------------------------------------------------

def adamw_update(p, g, m, v, decay, lr, beta1, beta2, eps, weight_decay, step) -> None:
    """One AdamW step over flat arrays, in place (p, m, v), in torch.optim.AdamW's order:

        p <- p * (1 - lr * wd)                 where decay (decoupled weight decay)
        m <- m + (1 - beta1) * (g - m)         (= beta1 m + (1 - beta1) g, torch's lerp)
        v <- beta2 * v + (1 - beta2) * g * g
        p <- p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    p, g, m, v: 1-D arrays of one dtype; decay: 1-D bool; step: t, counted from 1.
    The arrays are walked in cache-sized chunks with one scratch array, so the update makes no
    array-sized temporaries. A backend may supply a fused twin (kernels.fused("adamw_update")).
    """
    step_size = lr / (1 - beta1 ** step)
    bc2_sqrt = (1 - beta2 ** step) ** 0.5
    scratch = np.empty(min(p.size, BLOCK), dtype=p.dtype)
    for s, e in _chunks(p.size):
        t = scratch[:e - s]
        if weight_decay != 0:
            np.multiply(p[s:e], 1 - lr * weight_decay, out=p[s:e], where=decay[s:e])
        np.subtract(g[s:e], m[s:e], out=t)        # m += (1 - beta1) * (g - m)
        t *= 1 - beta1
        m[s:e] += t
        v[s:e] *= beta2                            # v = beta2 v + (1 - beta2) g^2
        np.multiply(g[s:e], g[s:e], out=t)
        t *= 1 - beta2
        v[s:e] += t
        np.sqrt(v[s:e], out=t)                     # denom = sqrt(v) / sqrt(bc2) + eps
        t /= bc2_sqrt
        t += eps
        np.divide(m[s:e], t, out=t)                # p -= step_size * m / denom
        t *= -step_size
        p[s:e] += t


def sgd_update(p, g, buf, decay, lr, momentum, dampening, nesterov, weight_decay, first) -> None:
    """One SGD step over flat arrays, in place (p, buf), as torch.optim.SGD:

        d <- g + wd * p                        (wd only where decay)
        buf <- d  (first step)   or   buf <- momentum * buf + (1 - dampening) * d
        d <- d + momentum * buf  (nesterov)   or   d <- buf   (momentum > 0)
        p <- p - lr * d

    buf may be None when momentum is 0; first: True on the first step with momentum.
    g is not modified.
    """
    scratch = np.empty((2, min(p.size, BLOCK)), dtype=p.dtype)
    for s, e in _chunks(p.size):
        d, t = scratch[0, :e - s], scratch[1, :e - s]
        d.fill(0)
        if weight_decay != 0:
            np.multiply(p[s:e], weight_decay, out=d, where=decay[s:e])
        d += g[s:e]
        if momentum != 0:
            d = _momentum(d, t, buf[s:e], momentum, dampening, nesterov, first)
        np.multiply(d, -lr, out=t)
        p[s:e] += t


def _momentum(d, t, buf, momentum, dampening, nesterov, first):
    """The momentum part of sgd_update on one chunk; returns the direction to step along."""
    if first:
        buf[...] = d
    else:
        buf *= momentum
        np.multiply(d, 1 - dampening, out=t)
        buf += t
    if not nesterov:
        return buf
    np.multiply(buf, momentum, out=t)
    d += t
    return d


# -- checking arguments ------------------------------------------------------------------------

def _check_number(where: str, name: str, value, lo: float, hi: float = math.inf,
                  lo_open: bool = False, hi_open: bool = False) -> float:
    """float(value) if it is a finite real number in the interval, else a ValueError/TypeError."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{where}: {name}={value!r} is a {type(value).__name__}: expected a real number")
    x = float(value)
    low_ok = x > lo if lo_open else x >= lo
    high_ok = x < hi if hi_open else x <= hi
    if not (math.isfinite(x) and low_ok and high_ok):
        interval = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
        raise ValueError(f"{where}: {name}={value!r}: expected a finite number in {interval}")
    return x


def _as_param_list(where: str, params) -> list:
    if isinstance(params, Parameter):
        return [params]
    if isinstance(params, (np.ndarray, dict, str)) or not hasattr(params, "__iter__"):
        raise TypeError(f"{where}: params is a {type(params).__name__}: expected an iterable of "
                        f"Parameters (e.g. model.parameters()) or of param-group dicts")
    return list(params)


def _parse_groups(name: str, params, defaults: dict) -> list[dict]:
    """torch-style param groups: [{"params": [...], hyper-parameter: value, ...}, ...].

    A plain list of Parameters is one group. Each group gets the defaults for the keys it does
    not set; a Parameter listed twice in a group is kept once; in two groups it is an error.
    """
    items = _as_param_list(name, params)
    if not items:
        raise ValueError(f"{name}: params is empty: expected at least one Parameter")
    if not any(isinstance(x, dict) for x in items):
        items = [{"params": items}]
    groups, owner = [], {}
    for i, raw in enumerate(items):
        if not isinstance(raw, dict):
            raise TypeError(f"{name}: params mixes dicts and {type(raw).__name__}: expected all "
                            f"Parameters or all param-group dicts")
        unknown = sorted(set(raw) - {"params", *defaults})
        if unknown or "params" not in raw:
            raise ValueError(f"{name}: param_groups[{i}] has keys {sorted(raw)}: expected 'params' "
                             f"and any of {sorted(defaults)}")
        group = {**defaults, **raw, "params": _unique_params(f"{name}: param_groups[{i}]", raw["params"])}
        for p in group["params"]:
            if owner.setdefault(id(p), i) != i:
                raise ValueError(f"{name}: a {p!r} is in param_groups[{owner[id(p)]}] and "
                                 f"param_groups[{i}]: expected each parameter in one group")
        groups.append(group)
    return groups


def _unique_params(where: str, params, allow_empty: bool = False) -> list[Parameter]:
    """The Parameters of `params`, each object once, in order; anything else is a TypeError."""
    items = _as_param_list(where, params)
    if not items and not allow_empty:
        raise ValueError(f"{where}: 'params' is empty: expected at least one Parameter")
    for j, p in enumerate(items):
        if not isinstance(p, Parameter):
            raise TypeError(f"{where}: params[{j}] is a {type(p).__name__}: expected an "
                            f"npgpt.nn.Parameter")
    return list({id(p): p for p in items}.values())


# -- the flat layout ---------------------------------------------------------------------------

class _FlatParams:
    """The trainable parameters of some groups, moved into one flat buffer per dtype.

    params: the trainable parameters in order (group after group); state_dict indexes them.
    frozen: the parameters left out because requires_grad was False.
    data, grad, decay: {dtype name: 1-D array}; segments[i]: [(dtype name, start, stop)] of group i;
    slots[j]: (dtype name, start, stop) of params[j]; group_of[j]: its group;
    group_sizes[i]: how many trainable parameters group i has.
    """

    def __init__(self, groups: list[dict]):
        self.params = [p for g in groups for p in g["params"] if p.requires_grad]
        self.frozen = [p for g in groups for p in g["params"] if not p.requires_grad]
        self.data, self.grad, self.decay = {}, {}, {}
        for key in sorted({p.dtype.name for p in self.params}):
            members = [p for p in self.params if p.dtype.name == key]
            self.data[key], self.grad[key] = flatten_parameters(members)
            self.decay[key] = np.repeat([bool(p.decay) for p in members], [p.size for p in members])
        self.slots, self.segments, self.group_of, offset = [], [], [], dict.fromkeys(self.data, 0)
        for i, g in enumerate(groups):
            start = dict(offset)
            for p in (p for p in g["params"] if p.requires_grad):
                key = p.dtype.name
                self.slots.append((key, offset[key], offset[key] + p.size))
                self.group_of.append(i)
                offset[key] += p.size
            self.segments.append([(k, start[k], offset[k]) for k in self.data if offset[k] > start[k]])
        self.group_sizes = [self.group_of.count(i) for i in range(len(groups))]

    def zeros(self) -> dict:
        """A zero {dtype name: 1-D array} shaped like the buffers (for m, v, momentum)."""
        return {key: np.zeros_like(buf) for key, buf in self.data.items()}

    def split(self, flat: dict) -> list[np.ndarray]:
        """Per-parameter copies of a flat {dtype: array} state, shaped like the parameters."""
        return [flat[k][s:e].reshape(p.shape).copy() for p, (k, s, e) in zip(self.params, self.slots)]

    def check(self, name: str) -> None:
        """Fail loudly if the layout no longer holds (a parameter was frozen, unfrozen, moved)."""
        for j, (p, (key, _, _)) in enumerate(zip(self.params, self.slots)):
            if not p.requires_grad:
                raise RuntimeError(f"{name}: parameter {j} {p!r} was frozen after the optimizer was "
                                   f"built: expected it trainable; build a new optimizer after freezing")
            if p.data.base is not self.data[key] or p.grad.base is not self.grad[key]:
                raise RuntimeError(f"{name}: parameter {j} {p!r} is no longer a view of this "
                                   f"optimizer's flat buffer (another optimizer flattened it, or a "
                                   f"layer rebound p.data/p.grad): build the optimizer again")
        for p in self.frozen:
            if p.requires_grad:
                raise RuntimeError(f"{name}: {p!r} was frozen when the optimizer was built and is "
                                   f"trainable now: build a new optimizer after unfreezing")


# -- the optimizers ----------------------------------------------------------------------------

class _Optimizer:
    """What SGD and AdamW share: param groups, the flat buffers, lr, zero_grad, state checks.

    param_groups: [{"params": [...], hyper-parameter: value, ...}], as torch's; a training loop
    may change a group's values between steps (they are checked again at each step).
    step_count: the number of steps taken.
    """

    def __init__(self, params, defaults: dict):
        name = type(self).__name__
        self.defaults = dict(defaults)
        self.param_groups = _parse_groups(name, params, defaults)
        several = len(self.param_groups) > 1
        for i, group in enumerate(self.param_groups):
            self._check_group(group, f"{name}: param_groups[{i}]" if several else name)
        self._flat = _FlatParams(self.param_groups)
        if not self._flat.params:
            raise ValueError(f"{name}: every parameter in params is frozen (requires_grad False): "
                             f"expected at least one trainable Parameter")
        self.step_count = 0

    @property
    def lr(self) -> float:
        """The learning rate of the first group; setting it sets every group's."""
        return self.param_groups[0]["lr"]

    @lr.setter
    def lr(self, value) -> None:
        value = _check_number(type(self).__name__, "lr", value, 0.0)
        for group in self.param_groups:
            group["lr"] = value

    @property
    def params(self) -> list[Parameter]:
        """The trainable parameters this optimizer updates, in state_dict order."""
        return list(self._flat.params)

    @property
    def buffers(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """{dtype name: (data, grad)}: the flat buffers whose slices the parameters are views of."""
        return {key: (self._flat.data[key], self._flat.grad[key]) for key in self._flat.data}

    def zero_grad(self) -> None:
        """Set the gradients of this optimizer's parameters to 0 (one fill per flat buffer)."""
        for grad in self._flat.grad.values():
            grad.fill(0)

    def _prepare_step(self) -> None:
        name = type(self).__name__
        self._flat.check(name)
        for i, group in enumerate(self.param_groups):
            self._check_group(group, f"{name}: param_groups[{i}]")

    def _check_group(self, group: dict, where: str) -> None:
        """Check a group's hyper-parameters; normalise them in place (floats, a betas tuple)."""
        raise NotImplementedError

    def _hyper_state(self) -> dict:
        """Per-group hyper-parameters as {key: [value per group]} plus the layout and the step."""
        state = {"step": int(self.step_count), "group_sizes": list(self._flat.group_sizes)}
        for key in self.defaults:
            state[key] = [_plain(g[key]) for g in self.param_groups]
        return state

    def _check_state(self, state: dict, array_keys: list[str]) -> list[dict]:
        """Validate a state dict against this optimizer (keys, layout, step, arrays, values);
        return the param groups' new hyper-parameters. Writes nothing."""
        name = f"{type(self).__name__}.load_state_dict"
        missing = [k for k in ("step", "group_sizes", *self.defaults, *array_keys) if k not in state]
        if missing:
            raise KeyError(f"{name}: state is missing keys {missing}: expected the keys of "
                           f"{type(self).__name__}.state_dict()")
        sizes = self._flat.group_sizes
        if [int(n) for n in state["group_sizes"]] != sizes:
            raise ValueError(f"{name}: group_sizes={list(state['group_sizes'])}: expected {sizes} "
                             f"(trainable parameters per group of this optimizer)")
        step = np.asarray(state["step"])
        if step.shape != () or step.dtype.kind not in "iu" or step < 0:
            raise ValueError(f"{name}: step={state['step']!r}: expected an int >= 0")
        for key in array_keys:
            arr, shape = np.asarray(state[key]), self._flat.params[int(key.rsplit(".", 1)[1])].shape
            if arr.shape != shape or arr.dtype.kind != "f":
                raise ValueError(f"{name}: {key!r} is a {arr.dtype} array of shape {arr.shape}: "
                                 f"expected a float array of shape {shape}")
        return [self._state_group(name, state, i) for i in range(len(sizes))]

    def _state_group(self, name: str, state: dict, i: int) -> dict:
        """Group i's hyper-parameters from a state dict, checked."""
        for key in self.defaults:
            if len(state[key]) != len(self.param_groups):
                raise ValueError(f"{name}: {key}={state[key]!r}: expected one value per group "
                                 f"({len(self.param_groups)} groups)")
        group = {k: _from_plain(k, state[k][i]) for k in self.defaults}
        self._check_group(group, f"{name}: group {i}")
        return group

    def _load_flat(self, target: dict, state: dict, prefix: str, indices) -> None:
        """Copy the arrays state[f"{prefix}.{j}"] into their slots of a flat {dtype: array}."""
        for j in indices:
            key, s, e = self._flat.slots[j]
            target[key][s:e] = np.asarray(state[f"{prefix}.{j}"]).ravel()


def _plain(value):
    """A hyper-parameter as a checkpoint-friendly value: floats, ints, lists of those."""
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, tuple):
        return [float(x) for x in value]
    return float(value)


def _from_plain(key: str, value):
    if key == "betas":
        return tuple(float(x) for x in value)
    if key == "nesterov":
        return bool(value)
    return value


class SGD(_Optimizer):
    """Stochastic gradient descent with momentum, as torch.optim.SGD (see sgd_update).

    params: Parameters, or torch-style param groups [{"params": [...], "lr": ..., ...}].
    Weight decay is added to the gradient (L2), only for parameters with p.decay True.
    nesterov requires momentum > 0 and dampening 0. Frozen parameters (requires_grad False)
    are left out and never changed.
    """

    def __init__(self, params, lr: float, momentum: float = 0.0, dampening: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "momentum": momentum, "dampening": dampening,
                                  "nesterov": nesterov, "weight_decay": weight_decay})
        self._buf = self._flat.zeros() if any(g["momentum"] for g in self.param_groups) else None
        self._started = [False] * len(self.param_groups)   # momentum buffer holds a value

    def _check_group(self, group: dict, where: str) -> None:
        for key, lo, hi in (("lr", 0, math.inf), ("momentum", 0, math.inf),
                            ("dampening", 0, 1), ("weight_decay", 0, math.inf)):
            group[key] = _check_number(where, key, group[key], lo, hi)
        if not isinstance(group["nesterov"], (bool, np.bool_)):
            raise TypeError(f"{where}: nesterov={group['nesterov']!r}: expected True or False")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(f"{where}: nesterov=True with momentum={group['momentum']} and "
                             f"dampening={group['dampening']}: Nesterov momentum requires "
                             f"momentum > 0 and dampening 0")

    def step(self) -> None:
        """p <- p - lr * direction, for every trainable parameter (see sgd_update)."""
        self._prepare_step()
        if self._buf is None and any(g["momentum"] for g in self.param_groups):
            self._buf = self._flat.zeros()
        for i, (group, segments) in enumerate(zip(self.param_groups, self._flat.segments)):
            for key, s, e in segments:
                buf = self._buf[key][s:e] if self._buf is not None else None
                sgd_update(self._flat.data[key][s:e], self._flat.grad[key][s:e], buf,
                           self._flat.decay[key][s:e], group["lr"], group["momentum"],
                           group["dampening"], group["nesterov"], group["weight_decay"],
                           first=not self._started[i])
            self._started[i] = self._started[i] or group["momentum"] != 0
        self.step_count += 1

    def state_dict(self) -> dict:
        """{"step", "group_sizes", "lr", "momentum", "dampening", "nesterov" (0/1),
        "weight_decay", "momentum_started" (0/1 per group), "momentum_buffer.{j}"}: plain values
        and numpy copies; j indexes `params`, buffers only for groups whose momentum started."""
        state = self._hyper_state()
        state["momentum_started"] = [int(x) for x in self._started]
        for j, buf in enumerate(self._flat.split(self._buf) if self._buf is not None else []):
            if self._started[self._flat.group_of[j]]:
                state[f"momentum_buffer.{j}"] = buf
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore a state_dict() of an SGD over the same parameters; checks all, then writes."""
        if "momentum_started" not in state:
            raise KeyError("SGD.load_state_dict: state is missing keys ['momentum_started']: "
                           "expected the keys of SGD.state_dict()")
        started = [bool(x) for x in state["momentum_started"]]
        if len(started) != len(self.param_groups):
            raise ValueError(f"SGD.load_state_dict: momentum_started={state['momentum_started']!r}: "
                             f"expected one 0/1 per group ({len(self.param_groups)} groups)")
        indices = [j for j, i in enumerate(self._flat.group_of) if started[i]]
        groups = self._check_state(state, [f"momentum_buffer.{j}" for j in indices])
        if indices and self._buf is None:
            self._buf = self._flat.zeros()
        for group, values in zip(self.param_groups, groups):
            group.update(values)
        self._load_flat(self._buf, state, "momentum_buffer", indices)
        self._started, self.step_count = started, int(state["step"])


class AdamW(_Optimizer):
    """Adam with decoupled weight decay (Loshchilov & Hutter), as torch.optim.AdamW.

    params: Parameters, or torch-style param groups [{"params": [...], "lr": ..., ...}].
    Weight decay (p <- p * (1 - lr * wd)) applies only where p.decay is True; a group's
    weight_decay is its rate. The update is `adamw_update`, or the backend's fused twin.
    Frozen parameters (requires_grad False) are left out and never changed.
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})
        self._m, self._v = self._flat.zeros(), self._flat.zeros()

    def _check_group(self, group: dict, where: str) -> None:
        group["lr"] = _check_number(where, "lr", group["lr"], 0)
        betas = group["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"{where}: betas={betas!r}: expected a pair (beta1, beta2)")
        group["betas"] = tuple(_check_number(where, f"betas[{k}]", b, 0, 1, hi_open=True)
                               for k, b in enumerate(betas))
        group["eps"] = _check_number(where, "eps", group["eps"], 0, lo_open=True)
        group["weight_decay"] = _check_number(where, "weight_decay", group["weight_decay"], 0)

    def step(self) -> None:
        """One AdamW step of every trainable parameter: one update call per group and dtype."""
        self._prepare_step()
        self.step_count += 1
        update = kernels.fused("adamw_update") or adamw_update
        for group, segments in zip(self.param_groups, self._flat.segments):
            beta1, beta2 = group["betas"]
            for key, s, e in segments:
                update(self._flat.data[key][s:e], self._flat.grad[key][s:e], self._m[key][s:e],
                       self._v[key][s:e], self._flat.decay[key][s:e], group["lr"], beta1, beta2,
                       group["eps"], group["weight_decay"], self.step_count)

    def state_dict(self) -> dict:
        """{"step", "group_sizes", "lr", "betas", "eps", "weight_decay" (one entry per group),
        "m.{j}", "v.{j}"}: plain values and numpy copies; j indexes `params`."""
        state = self._hyper_state()
        for prefix, flat in (("m", self._m), ("v", self._v)):
            for j, arr in enumerate(self._flat.split(flat)):
                state[f"{prefix}.{j}"] = arr
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore a state_dict() of an AdamW over the same parameters; checks all, then writes."""
        n = len(self._flat.params)
        groups = self._check_state(state, [f"{x}.{j}" for x in "mv" for j in range(n)])
        for group, values in zip(self.param_groups, groups):
            group.update(values)
        self._load_flat(self._m, state, "m", range(n))
        self._load_flat(self._v, state, "v", range(n))
        self.step_count = int(state["step"])


# -- gradient clipping -------------------------------------------------------------------------

def _sum_squares(a: np.ndarray) -> float:
    """sum(a^2), squared and summed in float64 chunk by chunk (no BLAS: its threads stall when
    called many times on small vectors of a busy machine). A backend may supply a fused twin
    (kernels.fused("sum_squares")): one parallel pass, without the float64 scratch."""
    fused = kernels.fused("sum_squares")
    if fused is not None:
        return fused(a)
    a = a.reshape(-1)
    total, scratch = 0.0, np.empty(min(a.size, BLOCK), dtype=np.float64)
    for s, e in _chunks(a.size):
        t = scratch[:e - s]
        np.multiply(a[s:e], a[s:e], out=t, dtype=np.float64)
        total += float(t.sum())
    return total


def clip_grad_norm(params, max_norm: float) -> float:
    """Scale the gradients so that their global L2 norm is at most max_norm; return the norm
    before clipping, as torch.nn.utils.clip_grad_norm_:

        total = sqrt(sum_p sum_i grad_p[i]^2)      (accumulated in float64)
        coef = max_norm / (total + 1e-6);   if coef < 1: grad_p *= coef for every p

    params: Parameters (frozen ones, requires_grad False, are skipped; shared ones count once),
    or an optimizer, whose flat gradient buffers are then scaled in one pass each.
    A non-finite total (inf, nan) is returned as it is and the gradients are left untouched,
    so that the training loop can stop and say so.
    """
    _check_number("clip_grad_norm", "max_norm", max_norm, 0, lo_open=True)
    if isinstance(params, _Optimizer):
        grads = list(params._flat.grad.values())
    else:
        items = _unique_params("clip_grad_norm", params, allow_empty=True)
        grads = [p.grad for p in items if p.requires_grad]
    total = math.sqrt(sum(_sum_squares(g) for g in grads))
    coef = float(max_norm) / (total + 1e-6)
    if math.isfinite(total) and coef < 1:
        for g in grads:
            g *= coef
    return total


# -- learning-rate schedules: callables of the 1-based step ------------------------------------

def _check_step(name: str, step) -> int:
    try:
        step = operator.index(step)
    except TypeError:
        raise TypeError(f"{name}: step={step!r} is a {type(step).__name__}: expected an int") from None
    if step < 1:
        raise ValueError(f"{name}: step={step}: expected step >= 1 (schedules count steps from 1: "
                         f"call schedule(it + 1) before the step of 0-based iteration it)")
    return step


class Constant:
    """lr(step) = lr for every step >= 1."""

    def __init__(self, lr: float):
        self.lr = _check_number("constant", "lr", lr, 0)

    def __call__(self, step: int) -> float:
        _check_step("constant", step)
        return self.lr

    def __repr__(self) -> str:
        return f"constant(lr={self.lr})"


class WarmupCosine:
    """Linear warmup, then cosine decay (nanoGPT's get_lr), for steps t = 1, 2, ...:

        t <= W:        lr = max_lr * t / W                              (max_lr / W at t = 1)
        W < t < T:     r = (t - W) / (T - W)
                       lr = min_lr + 0.5 * (1 + cos(pi * r)) * (max_lr - min_lr)
        t >= T:        lr = min_lr

    W = warmup_steps (0: no warmup), T = total_steps. max_lr is reached at t = W, the middle
    (max_lr + min_lr) / 2 at t = (W + T) / 2, and min_lr at t = T and after.
    """

    def __init__(self, max_lr: float, warmup_steps: int, total_steps: int, min_lr: float = 0.0):
        self.max_lr = _check_number("warmup_cosine", "max_lr", max_lr, 0)
        self.min_lr = _check_number("warmup_cosine", "min_lr", min_lr, 0, self.max_lr)
        self.warmup_steps = int(_check_number("warmup_cosine", "warmup_steps", warmup_steps, 0))
        self.total_steps = int(_check_number("warmup_cosine", "total_steps", total_steps,
                                             max(self.warmup_steps, 1)))
        if self.warmup_steps != warmup_steps or self.total_steps != total_steps:
            raise TypeError(f"warmup_cosine: warmup_steps={warmup_steps!r}, total_steps={total_steps!r}: "
                            f"expected whole numbers")

    def __call__(self, step: int) -> float:
        t = _check_step("warmup_cosine", step)
        if t <= self.warmup_steps:
            return self.max_lr * t / self.warmup_steps
        if t >= self.total_steps:
            return self.min_lr
        r = (t - self.warmup_steps) / (self.total_steps - self.warmup_steps)
        return self.min_lr + 0.5 * (1.0 + math.cos(math.pi * r)) * (self.max_lr - self.min_lr)

    def __repr__(self) -> str:
        return (f"warmup_cosine(max_lr={self.max_lr}, warmup_steps={self.warmup_steps}, "
                f"total_steps={self.total_steps}, min_lr={self.min_lr})")


class Noam:
    """The Transformer paper's schedule (Vaswani et al., 2017, section 5.3), steps t = 1, 2, ...:

        lr = factor * d_model^-0.5 * min(t^-0.5, t * W^-1.5)

    linear growth for t <= W = warmup_steps, then decay as t^-0.5; the peak, at t = W, is
    factor * (d_model * W)^-0.5.
    """

    def __init__(self, d_model: int, warmup_steps: int, factor: float = 1.0):
        self.d_model = int(_check_number("noam", "d_model", d_model, 1))
        self.warmup_steps = int(_check_number("noam", "warmup_steps", warmup_steps, 1))
        self.factor = _check_number("noam", "factor", factor, 0)

    def __call__(self, step: int) -> float:
        t = _check_step("noam", step)
        return self.factor * self.d_model ** -0.5 * min(t ** -0.5, t * self.warmup_steps ** -1.5)

    def __repr__(self) -> str:
        return f"noam(d_model={self.d_model}, warmup_steps={self.warmup_steps}, factor={self.factor})"


def constant(lr: float) -> Constant:
    """The schedule lr(step) = lr."""
    return Constant(lr)


def warmup_cosine(max_lr: float, warmup_steps: int, total_steps: int, min_lr: float = 0.0) -> WarmupCosine:
    """Linear warmup to max_lr over warmup_steps, cosine decay to min_lr at total_steps."""
    return WarmupCosine(max_lr, warmup_steps, total_steps, min_lr)


def noam(d_model: int, warmup_steps: int, factor: float = 1.0) -> Noam:
    """factor * d_model^-0.5 * min(step^-0.5, step * warmup_steps^-1.5)."""
    return Noam(d_model, warmup_steps, factor)
