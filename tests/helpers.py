"""Shared test helpers: comparisons whose failure messages show numbers."""

from __future__ import annotations

import os
import signal

import numpy as np

from npgpt.gradcheck import rel_error


def assert_close(name: str, actual, expected, tol: float) -> None:
    """Assert rel_error(actual, expected) <= tol; on failure show the worst element and a few pairs."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != expected {expected.shape}"
    err = rel_error(actual, expected)
    if not err <= tol:
        diff = np.abs(actual - expected)
        worst = np.unravel_index(np.argmax(diff), diff.shape) if diff.size else ()
        pairs = list(zip(actual.ravel()[:4].tolist(), expected.ravel()[:4].tolist()))
        raise AssertionError(f"{name}: relative error {err:.3e} > {tol:.0e}; worst at {worst}: "
                             f"{actual[worst]!r} vs {expected[worst]!r}; first pairs {pairs}")


def assert_errors_below(errors: dict[str, float], tol: float) -> None:
    """Every entry of a gradcheck result {name: rel_error} is at most tol (and there is one)."""
    assert errors, "no gradient was checked"
    bad = {k: v for k, v in errors.items() if not v <= tol}
    assert not bad, f"gradient check failed (tol {tol:.0e}): " + ", ".join(f"{k}: {v:.3e}" for k, v in bad.items())


def matmul_operands(rng: np.random.Generator, M: int, K: int, N: int, dtype, layout: str):
    """Random a (M, K) and b (K, N) of dtype; layout "nn", "tn", "nt" or "tt": a "t" operand is
    the transposed view of a C-contiguous array (the backward's a.T @ b and a @ b.T)."""
    def normal(shape):
        return rng.standard_normal(shape).astype(dtype)
    a = normal((K, M)).T if layout[0] == "t" else normal((M, K))
    b = normal((N, K)).T if layout[1] == "t" else normal((K, N))
    return a, b


def quiet(*args, **kwargs):
    """A print_fn that prints nothing."""


def interrupt_at(step):
    """An on_step callback that presses Ctrl-C (sends SIGINT to this process) after `step`."""
    def on_step(trainer, rec):
        if rec["step"] == step:
            os.kill(os.getpid(), signal.SIGINT)
    return on_step
