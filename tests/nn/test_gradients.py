"""Every layer's backward against the numerical gradient (float64) and PyTorch autograd
(float64 and float32), input gradients and every parameter gradient, by name."""

import numpy as np
import pytest
import torch

from npgpt.gradcheck import TOLERANCES, check_module, layer_cases
from tests.helpers import assert_close, assert_errors_below
from tests.torch_twins import NO_TWIN, TWINS

CASES = list(layer_cases())

# float64 against torch: the same formulas in a different order agree to ~1e-13; float32
# agrees to a few ulps of the largest element, ~1e-6 relative.
TORCH_TOL = {"float64": 1e-10, "float32": 1e-5}


def test_every_case_has_a_torch_twin_or_a_reason():
    assert set(CASES) == set(TWINS) | NO_TWIN


@pytest.mark.parametrize("case", CASES)
def test_backward_equals_numerical_gradient(case):
    module, inputs = layer_cases("float64", seed=1)[case]
    tol = TOLERANCES["kinked" if "ReLU" in case else "smooth"]
    assert_errors_below(check_module(module, inputs, seed=1), tol)


def _to_torch(a):
    if isinstance(a, np.ndarray) and a.dtype.kind == "f":
        return torch.tensor(a, requires_grad=True)
    if isinstance(a, np.ndarray):
        return torch.from_numpy(a)
    return a


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", sorted(TWINS))
def test_forward_and_backward_equal_pytorch(case, dtype):
    module, inputs = layer_cases(dtype, seed=2)[case]
    tol = TORCH_TOL[dtype]
    out = module.forward(*inputs)
    dout = np.random.default_rng(3).standard_normal(np.shape(out)).astype(dtype)
    module.zero_grad()
    grads = module.backward(dout)
    grads = grads if isinstance(grads, tuple) else (grads,)

    t_inputs = [_to_torch(a) for a in inputs]
    t_out, t_grads = TWINS[case](module, *t_inputs)
    t_out.backward(torch.from_numpy(np.asarray(dout)))

    assert_close(f"{case} output", out, t_out.detach().numpy(), tol)
    float_inputs = [t for t in t_inputs if isinstance(t, torch.Tensor) and t.requires_grad]
    for i, (g, t) in enumerate(zip(grads, float_inputs)):
        if g is not None:
            assert_close(f"{case} d(input{i})", g, t.grad.numpy(), tol)
    checked = 0
    for name, p in module.named_parameters():
        assert_close(f"{case} d({name})", p.grad, t_grads[name.replace("inner.", "")](), tol)
        checked += 1
    assert checked == len(module.parameters())
