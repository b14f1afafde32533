"""The backend registry: switching, restoring, falling back, and clear errors."""

import os
import subprocess
import sys

import pytest

from npgpt import kernels
from npgpt.kernels import reference


def test_numpy_backend_is_always_there():
    assert "numpy" in kernels.available_backends()
    with kernels.backend("numpy"):
        assert kernels.current_backend() == "numpy"
        assert kernels.get("attention_forward") is reference.attention_forward


def test_backend_context_restores_the_previous_one():
    before = kernels.current_backend()
    with pytest.raises(RuntimeError):
        with kernels.backend("numpy"):
            raise RuntimeError("inside")
    assert kernels.current_backend() == before


def test_unknown_backend_is_an_error():
    with pytest.raises(ValueError, match=r"backend='tpu' is unknown: expected one of"):
        kernels.use_backend("tpu")


def test_unknown_kernel_is_an_error():
    with pytest.raises(AttributeError, match=r"kernel 'conv2d' does not exist"):
        kernels.get("conv2d")


def test_environment_variable_selects_the_backend_and_rejects_unknown_names():
    code = "import npgpt; print(npgpt.kernels.current_backend())"
    env = {**os.environ, "NPGPT_BACKEND": "numpy"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "numpy"
    env["NPGPT_BACKEND"] = "tpu"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode != 0 and "backend='tpu' is unknown" in out.stderr
