"""`npgpt gradcheck --file`: layers npgpt does not contain, right and wrong, and every way a
user's file can be unusable, each with a message that names the function, the line and what
was expected (never a traceback through npgpt)."""

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from npgpt import gradcheck
from npgpt.cli import main

ROOT = Path(__file__).resolve().parents[1]

# Four layers of our own invention: a function of one input, one of two inputs and a number,
# a bilinear form of three inputs, and a Module with a parameter.
GOOD = '''
import numpy as np
from npgpt.nn import Module, Parameter


def swish_forward(x):
    s = 1 / (1 + np.exp(-x))
    return x * s, (x, s)


def swish_backward(dout, cache):
    x, s = cache
    return dout * (s + x * s * (1 - s))


def swish_inputs(rng):
    return [rng.standard_normal((3, 4))]


def scaled_sum_forward(x, y, alpha):
    return alpha * (x + y * y), (y, alpha)


def scaled_sum_backward(dout, cache):
    y, alpha = cache
    return alpha * dout, 2 * alpha * y * dout{Y_GRAD}, None


def scaled_sum_inputs(rng):
    return [rng.standard_normal((2, 3)), rng.standard_normal((2, 3)), 0.7]


def bilinear_forward(a, w, b):
    return np.einsum("ni,ij,nj->n", a, w, b), (a, w, b)


def bilinear_backward(dout, cache):
    a, w, b = cache
    dw = a.T @ (dout[:, None] * b)
    return dout[:, None] * (b @ w.T), dw{W_GRAD}, dout[:, None] * (a @ w)


def bilinear_inputs(rng):
    return [rng.standard_normal((5, 3)), rng.standard_normal((3, 3)), rng.standard_normal((5, 3))]


class Gate(Module):
    """y = gamma * tanh(x), one gain per feature."""

    def __init__(self):
        super().__init__()
        self.gamma = Parameter(np.linspace(0.5, 2.0, 4))

    def example_inputs(self, rng):
        return [rng.standard_normal((3, 4))]

    def forward(self, x):
        self.t = np.tanh(x)
        return self.gamma.data * self.t

    def backward(self, dout):
        self.gamma.grad += (dout * self.t).sum(axis=0){GAMMA_GRAD}
        return dout * self.gamma.data * (1 - self.t ** 2)
'''

RIGHT = GOOD.format(Y_GRAD="", W_GRAD="", GAMMA_GRAD="")
WRONG = GOOD.format(Y_GRAD=" / alpha", W_GRAD=".T", GAMMA_GRAD=" / 3")


def write(tmp_path, text, name="layers.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def run(capsys, path, *flags):
    status = main(["gradcheck", "--file", path, *flags])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return status, out, err


def test_right_layers_pass(tmp_path, capsys):
    status, out, err = run(capsys, write(tmp_path, RIGHT))
    assert status == 0, out + err
    assert "FAIL" not in out and err == ""
    for layer, tensor in [("swish", "x"), ("scaled_sum", "x"), ("scaled_sum", "y"), ("bilinear", "a"),
                          ("bilinear", "w"), ("bilinear", "b"), ("Gate", "x"), ("Gate", "gamma")]:
        assert any(line.split()[:2] == [layer, tensor] and line.rstrip().endswith("pass")
                   for line in out.splitlines()), (layer, tensor, out)
    assert "8/8 tensors of 4 layers within tolerance" in out


def test_wrong_layers_fail_and_say_where(tmp_path, capsys):
    status, out, err = run(capsys, write(tmp_path, WRONG))
    assert status == 1, out + err
    rows = {tuple(line.split()[:2]): line.split()[-1] for line in out.splitlines() if line.count("  ") > 2}
    assert rows[("scaled_sum", "y")] == "FAIL" and rows[("scaled_sum", "x")] == "pass"
    assert rows[("bilinear", "w")] == "FAIL" and rows[("bilinear", "a")] == "pass"
    assert rows[("Gate", "gamma")] == "FAIL" and rows[("Gate", "x")] == "pass"
    assert rows[("swish", "x")] == "pass"
    assert "dy is wrong" in out and "dgamma is wrong" in out and "the worst elements" in out
    assert "yours is 0.333333 times the numerical one, everywhere" in out       # gamma / 3


def test_layer_flag_selects_layers_of_the_file(tmp_path, capsys):
    status, out, _ = run(capsys, write(tmp_path, WRONG), "--layer", "swish")
    assert status == 0 and "bilinear" not in out


def test_a_generator_input_is_reset_before_every_call(tmp_path, capsys):
    path = write(tmp_path, '''
        import numpy as np

        def noisy_forward(x, rng):
            mask = rng.random(x.shape) > 0.5
            return x * mask, mask

        def noisy_backward(dout, mask):
            return dout * mask, None

        def noisy_inputs(rng):
            return [rng.standard_normal((4, 4)), np.random.default_rng(3)]
    ''')
    status, out, _ = run(capsys, path)
    assert status == 0, out


FUNC = '''
import numpy as np


def twice_forward(x, w):
    return x @ w * 2, (x, w)


def twice_backward(dout, cache):
    x, w = cache
    {BODY}


def twice_inputs(rng):
    return {INPUTS}
'''

INPUTS = "[rng.standard_normal((2, 3)), rng.standard_normal((3, 4))]"

BAD = {
    # name: (file text, exit status, what the message must say)
    "syntax error": ("def f(:\n    pass\n", 2, ["bad.py, line 1: syntax error", "def f(:"]),
    "raises on import": ("import numpy as np\nraise RuntimeError('no data here')\n", 2,
                         ["running the file raised RuntimeError: no data here", "at line 2 of bad.py"]),
    "no layer": ("import numpy as np\nx = 1\n", 2, ["no layer to check: expected functions <name>_forward"]),
    "missing inputs": ("def f_forward(x):\n    return x, x\n\ndef f_backward(d, c):\n    return d\n", 2,
                       ["f_forward (line 1) has no f_inputs: expected a function f_inputs(rng)"]),
    "missing backward": ("def f_forward(x):\n    return x, x\n\ndef f_inputs(rng):\n    return [1.0]\n", 2,
                         ["f_forward (line 1) has no f_backward"]),
    "backward raises": (FUNC.format(BODY="dx = dout @ w\n    return dx, None", INPUTS=INPUTS), 2,
                        ["twice_backward (line 9) raised ValueError", "at line 11 of bad.py: dx = dout @ w"]),
    "not written": (FUNC.format(BODY="raise NotImplementedError", INPUTS=INPUTS), 2,
                    ["twice_backward (line 9) is not written yet"]),
    "too few gradients": (FUNC.format(BODY="return 2 * dout @ w.T", INPUTS=INPUTS), 2,
                          ["twice_backward (line 9) returned a single ndarray: expected 2, one per "
                           "input of twice_forward(x, w)"]),
    "too many gradients": (FUNC.format(BODY="return dout, dout, dout", INPUTS=INPUTS), 2,
                           ["returned 3 gradients: expected 2"]),
    "wrong shape": (FUNC.format(BODY="return 2 * dout @ w.T, 2 * dout.T @ x", INPUTS=INPUTS), 1,
                    ["dw has shape (4, 3): expected (3, 4), the shape of w"]),
    "NaN": (FUNC.format(BODY="return 2 * dout @ w.T, np.full(w.shape, np.nan)", INPUTS=INPUTS), 1,
            ["dw holds 12 NaN or inf"]),
    "inputs not a list": (FUNC.format(BODY="return None, None", INPUTS="{'x': 1}"), 2,
                          ["twice_inputs returned dict: expected a list of the forward's inputs"]),
    "one gradient of two": (FUNC.format(BODY="return (2 * dout @ w.T,)", INPUTS=INPUTS), 2,
                            ["twice_backward (line 9) returned 1 gradient: expected 2, one per input"]),
    # exit() would end npgpt with the file's status and no word: exit(0) reads as a pass
    "exits on import": ("import sys\nsys.exit(0)\n", 2,
                        ["bad.py: running the file called exit(0): expected it to define its layers",
                         "at line 2 of bad.py: sys.exit(0)"]),
    "backward exits": (FUNC.format(BODY="exit(3)", INPUTS=INPUTS), 2,
                       ["twice_backward (line 9) called exit(3): expected it to return",
                        "at line 11 of bad.py: exit(3)"]),
    "float32 inputs": (FUNC.format(BODY="return 2 * dout @ w.T, 2 * x.T @ dout",
                                   INPUTS=INPUTS.replace("))", ")).astype(np.float32)")), 2,
                       ["twice_inputs returned no float64 array: only float64 inputs are checked "
                        "(x is float32, w is float32)"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_an_unusable_or_wrong_file_gets_a_clear_message(tmp_path, capsys, case):
    text, want_status, messages = BAD[case]
    status, out, err = run(capsys, write(tmp_path, text, "bad.py"))
    assert status == want_status, out + err
    for message in messages:
        assert message in out + err, (message, out + err)
    assert "npgpt/" not in err


@pytest.mark.filterwarnings("ignore::RuntimeWarning")      # the log of a negative number, on purpose
@pytest.mark.parametrize("forward,message", [
    ("return x @ w", "twice_forward (line 5) returned ndarray: expected a pair (out, cache)"),
    ("x *= 2\n    return x @ w, (x, w)", "twice_forward (line 5) changed its input x in place"),
    ("return np.log(x - 10) @ w, (x, w)", "returned NaN or inf in out"),
])
def test_a_forward_that_breaks_the_protocol(tmp_path, capsys, forward, message):
    text = FUNC.format(BODY="return dout, dout", INPUTS=INPUTS).replace("return x @ w * 2, (x, w)", forward)
    status, out, err = run(capsys, write(tmp_path, text, "bad.py"))
    assert status == 2 and message in err, err


def test_a_module_that_cannot_be_built_or_is_float32(tmp_path, capsys):
    path = write(tmp_path, '''
        import numpy as np
        from npgpt.nn import Module, Parameter

        class NeedsArgs(Module):
            def __init__(self, n):
                super().__init__()

            def example_inputs(self, rng):
                return [rng.standard_normal(3)]

        class Single(Module):
            def __init__(self):
                super().__init__()
                self.w = Parameter(np.ones(3, dtype=np.float32))

            def example_inputs(self, rng):
                return [rng.standard_normal(3)]

        class Unchecked(Module):
            pass
    ''', "bad.py")
    status, out, err = run(capsys, path)
    assert status == 2
    assert "NeedsArgs() (building it with no arguments) raised TypeError" in err
    assert "Single: parameter w has dtype float32: expected float64" in err
    assert "class Unchecked has no example_inputs(rng): not checked" in err


def test_a_missing_file(tmp_path, capsys):
    status, _, err = run(capsys, str(tmp_path / "nope.py"))
    assert status == 2 and "nope.py: no such file" in err


def test_layer_that_matches_nothing_lists_the_names(capsys):
    assert main(["gradcheck", "--layer", "no-such-layer"]) == 2
    err = capsys.readouterr().err
    assert "matches no layer" in err and "Linear (no bias)" in err and "Sinusoidal positions" in err


def test_the_sinusoidal_row_checks_the_gradient_through_x_plus_pe():
    module, inputs = gradcheck.layer_cases("float64")["Sinusoidal positions"]
    pairs = gradcheck.module_gradients(module, inputs)
    assert set(pairs) == {"tok.weight", "ln.weight", "ln.bias"}
    assert all(gradcheck.compare(a, b)["passed"] for a, b in pairs.values())
    # the positions shape the gradient: without PE (or at another offset) it differs
    tok = pairs["tok.weight"][0]
    module.offset = 0
    assert not np.allclose(gradcheck.module_gradients(module, inputs)["tok.weight"][0], tok)


def test_the_elementwise_error_catches_a_small_wrong_element():
    a = np.array([10.0, 1.0, 1e-6])
    b = np.array([10.0, 1.0, 2e-6])                 # the small element is wrong by half
    assert gradcheck.rel_error(a, b) < gradcheck.TOLERANCES["smooth"]        # the norm hides it
    verdict = gradcheck.compare(a, b)
    assert verdict["element_error"] > gradcheck.ELEMENT_TOLERANCE and not verdict["passed"]
    noise = b + 1e-12                                # numerical noise near zero is not a failure
    assert gradcheck.compare(b, noise)["passed"]


def test_layer_flag_that_matches_nothing_in_the_file(tmp_path, capsys):
    status, _, err = run(capsys, write(tmp_path, RIGHT), "--layer", "conv")
    assert status == 2 and "--layer 'conv' matches no layer" in err and "swish, scaled_sum" in err


def test_a_layer_with_nothing_to_check(tmp_path, capsys):
    path = write(tmp_path, '''
        import numpy as np

        def count_forward(ids):
            return np.bincount(ids).astype(float), None

        def count_backward(dout, cache):
            return None

        def count_inputs(rng):
            return [np.array([1, 2, 2])]
    ''')
    status, _, err = run(capsys, path)
    assert status == 2 and "count: nothing to check: expected a float64 input or parameter" in err


def test_a_backward_may_change_dout_in_place(tmp_path, capsys):
    """The checker gives the backward a copy of dout: `dout *= ...; return dout` is a correct
    gradient (the numerical one still uses the dout as drawn), with a note on the habit."""
    path = write(tmp_path, '''
        import numpy as np
        from npgpt.nn import Module, Parameter

        def sq_forward(x):
            return x * x, x

        def sq_backward(dout, x):
            dout *= 2 * x
            return dout

        def sq_inputs(rng):
            return [rng.standard_normal((3,))]

        class Scale(Module):
            def __init__(self):
                super().__init__()
                self.s = Parameter(np.array([0.3, -1.2, 2.0]))

            def example_inputs(self, rng):
                return [rng.standard_normal((5, 3))]

            def forward(self, x):
                self.x = x
                return x * self.s.data

            def backward(self, dout):
                self.s.grad += (dout * self.x).sum(0)
                dout *= self.s.data
                return dout
    ''')
    status, out, err = run(capsys, path)
    assert status == 0 and "FAIL" not in out, out + err
    assert "note: sq: sq_backward (line 8) changed dout in place: harmless here" in out, out
    assert "note: Scale: Scale.backward (line 27) changed dout in place" in out


def test_summary_counts_one_tensor_of_one_layer(tmp_path, capsys):
    status, out, _ = run(capsys, write(tmp_path, RIGHT), "--layer", "swish")
    assert status == 0 and "1/1 tensor of 1 layer within tolerance" in out


MODULE = '''
import numpy as np
from npgpt.nn import Module, Parameter


class Scale(Module):
    def __init__(self):
        super().__init__()
        self.s = Parameter(np.array([0.3, -1.2, 2.0]))

    def example_inputs(self, rng):
        return [rng.standard_normal((5, 3))]

    def forward(self, x):
        self.x = x
        return np.sin(x) * self.s.data

    def backward(self, dout):
        {GRAD}
        return dout * self.s.data * np.cos(self.x)
'''


@pytest.mark.parametrize("grad,status,message", [
    ("self.s.grad += (dout * np.sin(self.x)).sum(0)", 0, None),
    ("self.s.grad = (dout * np.sin(self.x)).sum(0)", 1,
     "ds: replaced, not accumulated (use +=): after Scale.backward (line 18), s.grad is the gradient alone"),
    ("self.s.grad[...] = (dout * np.sin(self.x)).sum(0)", 1, "ds: replaced, not accumulated (use +=)"),
    ("self.s.grad = self.s.grad + (dout * np.sin(self.x)).sum(0)", 0,
     "note: Scale: Scale.backward (line 18) rebound s.grad to a new array"),
])
def test_a_module_must_accumulate_into_grad(tmp_path, capsys, grad, status, message):
    """.grad is prefilled with random values before the backward, as another use of the
    parameter would leave it: assigning the gradient (=) instead of adding it (+=) fails."""
    got, out, err = run(capsys, write(tmp_path, MODULE.format(GRAD=grad)))
    assert got == status, out + err
    if message:
        assert message in out, out
    rows = {tuple(line.split()[:2]): line.split()[-1] for line in out.splitlines() if line.count("  ") > 2}
    assert rows[("Scale", "x")] == "pass"


def test_npgpts_own_modules_pass_as_user_modules(tmp_path, capsys):
    """npgpt's layers accumulate into .grad, so subclassed in a user's file they pass the
    prefilled check (and a tied use, two backwards into one .grad, adds up)."""
    path = write(tmp_path, '''
        import numpy as np
        from npgpt import nn

        class MyLinear(nn.Linear):
            def __init__(self):
                super().__init__(4, 3, dtype="float64", rng=np.random.default_rng(1), std=0.5)

            def example_inputs(self, rng):
                return [rng.standard_normal((2, 5, 4))]

        class MyNorm(nn.LayerNorm):
            def __init__(self):
                super().__init__(6, dtype="float64")
                self.weight.data[...] = np.linspace(0.5, 1.5, 6)

            def example_inputs(self, rng):
                return [rng.standard_normal((2, 3, 6))]

        class MyAttention(nn.MultiHeadAttention):
            def __init__(self):
                super().__init__(8, 2, causal=True, dtype="float64", rng=np.random.default_rng(2), std=0.5)

            def example_inputs(self, rng):
                return [rng.standard_normal((2, 4, 8))]

        class MyEmbedding(nn.Embedding):
            def __init__(self):
                super().__init__(7, 5, dtype="float64", rng=np.random.default_rng(3), std=1.0)

            def example_inputs(self, rng):
                return [np.array([[1, 3, 3, 0], [6, 1, 1, 1]])]
    ''')
    status, out, err = run(capsys, path)
    assert status == 0 and err == "" and "FAIL" not in out, out + err
    for layer, tensor in [("MyLinear", "weight"), ("MyLinear", "bias"), ("MyNorm", "weight"),
                          ("MyAttention", "x"), ("MyEmbedding", "weight")]:
        assert any(line.split()[:2] == [layer, tensor] for line in out.splitlines()), (layer, tensor, out)


def test_an_error_in_a_modules_backward_names_the_users_line(tmp_path, capsys):
    """Module wraps forward and backward (nn/module.py): the line is the user's def, not the wrapper's."""
    path = write(tmp_path, '''
        import numpy as np
        from npgpt.nn import Module, Parameter

        class M(Module):
            def __init__(self):
                super().__init__()
                self.w = Parameter(np.ones(3))

            def example_inputs(self, rng):
                return [rng.standard_normal((2, 3))]

            def forward(self, x):
                return x * self.w.data

            def backward(self, dout):
                raise KeyError("oops")
    ''', "bad.py")
    status, out, err = run(capsys, path)
    assert status == 2, out + err
    assert "M.backward (line 16) raised KeyError: 'oops'" in err and "at line 17 of bad.py" in err


def test_a_reader_that_closes_the_pipe_gets_no_traceback(tmp_path):
    """`npgpt gradcheck | head -1`, the reader gone before npgpt writes: a quiet exit 141."""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "NPGPT_BACKEND": "numpy"}
    for argv in (["gradcheck"], ["gradcheck", "--file", write(tmp_path, RIGHT)]):
        child = subprocess.Popen([sys.executable, "-m", "npgpt", *argv], cwd=ROOT, env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        child.stdout.close()
        err = child.stderr.read().decode()
        assert child.wait(timeout=120) == 141 and "Traceback" not in err and err == "", (argv, err)
