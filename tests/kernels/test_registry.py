"""The backend registry: switching, restoring, falling back, resolving lazily, and clear errors."""

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


def _run(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True,
                          text=True)


def test_environment_variable_selects_the_backend():
    out = _run("import npgpt; print(npgpt.kernels.current_backend())", NPGPT_BACKEND="numpy")
    assert out.stdout.strip() == "numpy"


@pytest.mark.parametrize("value, error, message", [
    ("tpu", "ValueError", "NPGPT_BACKEND='tpu' is unknown: expected one of ['cuda', 'numba', 'numpy']"),
    ("Numba", "ValueError", "NPGPT_BACKEND='Numba' is unknown (names are lower case: 'numba')"),
])
def test_a_bad_environment_variable_is_one_clear_error_on_first_use_not_at_import(value, error, message):
    code = ("import npgpt\nprint('imported', flush=True)\n"
            "try:\n    npgpt.kernels.get('matmul')\n"
            "except Exception as e:\n    print(type(e).__name__, e)")
    out = _run(code, NPGPT_BACKEND=value)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("imported") and f"{error}: " not in out.stderr
    assert f"{error} {message}" in out.stdout


def test_an_unavailable_backend_in_the_environment_says_why():
    code = ("import npgpt\ntry:\n    npgpt.kernels.current_backend()\n"
            "except RuntimeError as e:\n    print(e)")
    out = _run(code, NPGPT_BACKEND="cuda", NUMBA_ENABLE_CUDASIM="0", NUMBA_CUDA_DRIVER="/nonexistent/libcuda.so")
    assert "NPGPT_BACKEND='cuda' is not available on this machine: " in out.stdout, out.stderr
    assert "NUMBA_CUDA_DRIVER" in out.stdout and "Expected one of ['numpy'" in out.stdout   # why, and the choices


def test_use_backend_before_first_use_wins_over_a_bad_environment_variable():
    out = _run("import npgpt\nnpgpt.kernels.use_backend('numpy')\nprint(npgpt.kernels.current_backend())",
               NPGPT_BACKEND="tpu")
    assert out.stdout.strip() == "numpy", out.stderr
