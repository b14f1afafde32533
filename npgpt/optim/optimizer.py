"""What SGD and AdamW share: param groups, runs, the learning rate, zero_grad, state checks.

An optimizer never moves a parameter: it finds the runs of its trainable parameters (see
flat.py) and keeps its own state (AdamW's m and v, SGD's momentum) as one array per run, laid out
like the run. Its state_dict lists that state per parameter ("m.0", "m.1", ... in the order of
`params`), so a checkpoint does not depend on how the parameters lie in memory.
"""

from __future__ import annotations

import numpy as np

from .flat import Run, find_runs
from .groups import check_number, parse_groups


class Optimizer:
    """The base of SGD and AdamW.

    param_groups: [{"params": [...], hyper-parameter: value, ...}], as torch's; a training loop
    may change a group's values between steps (they are checked again at each step).
    params: the trainable parameters, group after group (frozen ones are left out).
    runs: the Runs those parameters form; a step makes one update call per run.
    step_count: the number of steps taken.
    """

    def __init__(self, params, defaults: dict):
        name = type(self).__name__
        self.defaults = dict(defaults)
        self.param_groups = parse_groups(name, params, defaults)
        several = len(self.param_groups) > 1
        for i, group in enumerate(self.param_groups):
            self._check_group(group, f"{name}: param_groups[{i}]" if several else name)
        trainable = [[p for p in g["params"] if p.requires_grad] for g in self.param_groups]
        self._params = [p for group in trainable for p in group]
        if not self._params:
            raise ValueError(f"{name}: every parameter in params is frozen (requires_grad False): "
                             f"expected at least one trainable Parameter")
        self._frozen = [p for g in self.param_groups for p in g["params"] if not p.requires_grad]
        self.group_sizes = [len(group) for group in trainable]
        self.runs: list[Run] = find_runs(trainable, name)
        self._arrays = [(p.data, p.grad) for p in self._params]    # to tell a later rebinding
        self._slots = _slots(self.runs)            # params[j] is runs[r].data[s:e]
        self.step_count = 0

    @property
    def lr(self) -> float:
        """The learning rate of the first group; setting it sets every group's."""
        return self.param_groups[0]["lr"]

    @lr.setter
    def lr(self, value) -> None:
        value = check_number(type(self).__name__, "lr", value, 0.0)
        for group in self.param_groups:
            group["lr"] = value

    @property
    def params(self) -> list:
        """The trainable parameters this optimizer updates, in state_dict order."""
        return list(self._params)

    def zero_grad(self) -> None:
        """Set the gradients of this optimizer's parameters to 0 (one fill per run)."""
        for run in self.runs:
            run.grad.fill(0)

    def _zeros(self) -> list[np.ndarray]:
        """A zero array per run, shaped like it (for m, v, momentum)."""
        return [np.zeros_like(run.data) for run in self.runs]

    def _split(self, state: list[np.ndarray]) -> list[np.ndarray]:
        """Per-parameter copies of a per-run state, shaped like the parameters."""
        return [state[r][s:e].reshape(p.shape).copy() for p, (r, s, e) in zip(self._params, self._slots)]

    def _prepare_step(self) -> None:
        """Fail loudly if the layout no longer holds, and check every group's values again."""
        name = type(self).__name__
        for j, (p, (data, grad)) in enumerate(zip(self._params, self._arrays)):
            if not p.requires_grad:
                raise RuntimeError(f"{name}: parameter {j} {p!r} was frozen after the optimizer was "
                                   f"built: expected it trainable; build a new optimizer after freezing")
            if p.data is not data or p.grad is not grad:
                raise RuntimeError(f"{name}: parameter {j} {p!r} is no longer the array it was when "
                                   f"the optimizer was built (p.data or p.grad was rebound, e.g. by "
                                   f"flatten_parameters): build the optimizer again")
        for p in self._frozen:
            if p.requires_grad:
                raise RuntimeError(f"{name}: {p!r} was frozen when the optimizer was built and is "
                                   f"trainable now: build a new optimizer after unfreezing")
        for i, group in enumerate(self.param_groups):
            self._check_group(group, f"{name}: param_groups[{i}]")

    def _check_group(self, group: dict, where: str) -> None:
        """Check a group's hyper-parameters; normalise them in place (floats, a betas tuple)."""
        raise NotImplementedError

    # -- state -------------------------------------------------------------------------------

    def _hyper_state(self) -> dict:
        """Per-group hyper-parameters as {key: [value per group]} plus the layout and the step."""
        state = {"step": int(self.step_count), "group_sizes": list(self.group_sizes)}
        for key in self.defaults:
            state[key] = [_plain(g[key]) for g in self.param_groups]
        return state

    def _arrays_state(self, **per_run: list[np.ndarray]) -> dict:
        """_hyper_state() plus each named per-run state as per-parameter copies: m=... gives
        "m.0", "m.1", ... (j indexes `params`)."""
        state = self._hyper_state()
        for prefix, runs in per_run.items():
            for j, arr in enumerate(self._split(runs)):
                state[f"{prefix}.{j}"] = arr
        return state

    def _load_groups(self, state: dict, prefixes: str) -> None:
        """Check a state dict holding one array per parameter for each prefix (see
        _check_state: nothing is written if anything is wrong), then take its groups'
        hyper-parameters."""
        keys = [f"{x}.{j}" for x in prefixes for j in range(len(self._params))]
        for group, values in zip(self.param_groups, self._check_state(state, keys)):
            group.update(values)

    def _check_state(self, state: dict, array_keys: list[str]) -> list[dict]:
        """Validate a state dict against this optimizer (keys, layout, step, arrays, values);
        return the param groups' new hyper-parameters. Writes nothing."""
        name = f"{type(self).__name__}.load_state_dict"
        missing = [k for k in ("step", "group_sizes", *self.defaults, *array_keys) if k not in state]
        if missing:
            raise KeyError(f"{name}: state is missing keys {missing}: expected the keys of "
                           f"{type(self).__name__}.state_dict()")
        if [int(n) for n in state["group_sizes"]] != self.group_sizes:
            raise ValueError(f"{name}: group_sizes={list(state['group_sizes'])}: expected "
                             f"{self.group_sizes} (trainable parameters per group of this optimizer)")
        step = np.asarray(state["step"])
        if step.shape != () or step.dtype.kind not in "iu" or step < 0:
            raise ValueError(f"{name}: step={state['step']!r}: expected an int >= 0")
        for key in array_keys:
            arr, shape = np.asarray(state[key]), self._params[int(key.rsplit(".", 1)[1])].shape
            if arr.shape != shape or arr.dtype.kind != "f":
                raise ValueError(f"{name}: {key!r} is a {arr.dtype} array of shape {arr.shape}: "
                                 f"expected a float array of shape {shape}")
        return [self._state_group(name, state, i) for i in range(len(self.param_groups))]

    def _state_group(self, name: str, state: dict, i: int) -> dict:
        """Group i's hyper-parameters from a state dict, checked."""
        for key in self.defaults:
            if len(state[key]) != len(self.param_groups):
                raise ValueError(f"{name}: {key}={state[key]!r}: expected one value per group "
                                 f"({len(self.param_groups)} groups)")
        group = {k: _from_plain(k, state[k][i]) for k in self.defaults}
        self._check_group(group, f"{name}: group {i}")
        return group

    def _load_state(self, target: list[np.ndarray], state: dict, prefix: str, indices) -> None:
        """Copy the arrays state[f"{prefix}.{j}"] into their slots of a per-run state."""
        for j in indices:
            r, s, e = self._slots[j]
            target[r][s:e] = np.asarray(state[f"{prefix}.{j}"]).ravel()


def _slots(runs: list[Run]) -> list[tuple[int, int, int]]:
    """(run index, start, stop) of each parameter, in the order of the runs' parameters (which
    is the order of `params`: a run is a stretch of one group's list)."""
    slots = []
    for r, run in enumerate(runs):
        start = 0
        for p in run.params:
            slots.append((r, start, start + p.size))
            start += p.size
    return slots


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
