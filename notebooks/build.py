"""Write the notebooks of this folder from the cells below: `python notebooks/build.py`.

The notebooks are kept here as Python source so that a change to them is a readable diff, and
they are stored without outputs: tests/test_notebooks.py executes every one of them (and checks
that the stored files are what this script writes), so prose and code cannot drift apart.

Each notebook is a list of cells: md(...) for a markdown cell (LaTeX between $ signs), code(...)
for a code cell. Cell ids are derived from the notebook's name and the cell's position, so that
running this script twice writes the same bytes.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent


def md(text: str):
    return nbformat.v4.new_markdown_cell(textwrap.dedent(text).strip("\n"))


def code(text: str):
    return nbformat.v4.new_code_cell(textwrap.dedent(text).strip("\n"))


# =============================================================================================
# 01 -- backpropagation by hand
# =============================================================================================

BACKPROP = [
    md(r"""
    # 01 — Backpropagation by hand

    A GPT is a few kinds of layer repeated: Linear maps, LayerNorms, a GELU, attention, and a
    softmax cross-entropy at the top. This notebook derives the backward pass of four of them
    (attention has its own notebook, `02_attention.ipynb`) and checks each derivation three ways:

    1. against npgpt's own backward (`npgpt.nn.linear_backward`, ...): nothing is redefined here,
       so the formula in a markdown cell and the code in the library are held together;
    2. against the **numerical gradient**, central differences in float64 (`npgpt.gradcheck`);
    3. against **PyTorch's autograd**, when PyTorch is installed.

    The test suite runs this notebook from top to bottom; every `assert` below is a test.
    """),
    code(r"""
    import numpy as np

    import npgpt
    from npgpt import nn
    from npgpt.gradcheck import check_layer, numerical_gradient, rel_error

    try:
        import torch
        import torch.nn.functional as F
    except ImportError:        # PyTorch is optional: the numerical checks stand on their own
        torch = None

    rng = np.random.default_rng(0)
    np.set_printoptions(precision=4, suppress=True)
    print("npgpt kernels:", npgpt.kernels.current_backend(),
          "| PyTorch:", torch.__version__ if torch is not None else "not installed")
    """),
    code(r'''
    def torch_vjp(fn, inputs, dout):
        """PyTorch's answer to the same question: out = fn(*inputs) and the gradient of
        sum(out * dout) with respect to every input, all in float64."""
        ts = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in inputs]
        out = fn(*ts)
        out.backward(torch.as_tensor(dout, dtype=torch.float64))
        return out.detach().numpy(), [t.grad.numpy() for t in ts]
    '''),

    # -- 1. chain rule -------------------------------------------------------------------------
    md(r"""
    ## 1. The chain rule on a computation graph

    A network is a graph of small functions that ends in one number, the loss $L$. For a node
    $y = f(x)$ write $\bar y = \partial L / \partial y$ for the gradient that arrives from above: it
    has the shape of $y$, and the code calls it `dout`. The chain rule gives the gradient of the
    node's input:

    $$
    \bar x_i \;=\; \sum_j \frac{\partial L}{\partial y_j}\,\frac{\partial y_j}{\partial x_i}
            \;=\; \sum_j \bar y_j\, J_{ji}, \qquad\text{that is}\qquad \bar x = J^\top \bar y .
    $$

    A backward function never builds the Jacobian $J$ (for a $(B, T, C)$ activation it would have
    $(BTC)^2$ entries); it computes the product $J^\top \bar y$ straight from the structure of $f$.
    Two rules are all that a whole model needs:

    * **in series** ($y = f(x)$, then $z = g(y)$): run $g$'s backward, then $f$'s — the forward
      read from the bottom up;
    * **fan-out** ($x$ is used twice, as in the residual stream $x + f(x)$, or a weight shared by
      every position): the gradients of the uses **add**.

    **How to check a backward.** With upstream gradient $\bar y$, the backward of $f$ returns the
    exact gradient of the scalar $\ell(x) = \sum_j f(x)_j\, \bar y_j$, because
    $\partial \ell / \partial x_i = \sum_j \bar y_j\, \partial f_j / \partial x_i$. A scalar can be
    differentiated numerically, one coordinate at a time:

    $$
    \frac{\partial \ell}{\partial x_i} \approx \frac{\ell(x + h e_i) - \ell(x - h e_i)}{2h},
    \qquad \text{error } O(h^2).
    $$

    `numerical_gradient(f, x, dout)` computes this (in float64, with $h = 10^{-5}$: truncation
    $\sim h^2 = 10^{-10}$, rounding $\sim 10^{-16}/h = 10^{-11}$), and
    `rel_error(a, b)` $= \max|a - b| \,/\, \max(|a| + |b|)$ compares it with the analytic one.

    A small graph to start: $z = x \odot w$, $a = \tanh z$, $y = a + x$ (a residual connection).
    Reading it from the bottom up:

    $$
    \bar a = \bar y, \qquad
    \bar z = \bar a \odot (1 - a^2), \qquad
    \bar w = \bar z \odot x, \qquad
    \bar x = \underbrace{\bar z \odot w}_{\text{through } z} + \underbrace{\bar y}_{\text{skip path}} .
    $$
    """),
    code(r"""
    x = rng.standard_normal(5)
    w = rng.standard_normal(5)
    dy = rng.standard_normal(5)          # a random upstream gradient (section 4 shows why random)

    def f():                             # the forward, reading the current x and w
        return np.tanh(x * w) + x

    a = np.tanh(x * w)
    dz = dy * (1 - a**2)                 # forward: a = tanh(z)
    dw = dz * x                          # forward: z = x * w
    dx = dz * w + dy                     # x feeds z and the skip path: the gradients add

    err_x = rel_error(dx, numerical_gradient(f, x, dy))
    err_w = rel_error(dw, numerical_gradient(f, w, dy))
    err_no_skip = rel_error(dz * w, numerical_gradient(f, x, dy))
    print(f"dx: {err_x:.1e}   dw: {err_w:.1e}   dx without the skip path: {err_no_skip:.1e}")
    assert err_x < 1e-8 and err_w < 1e-8
    assert err_no_skip > 1e-2            # forgetting a fan-out is an O(1) error, not a rounding one
    """),

    # -- 2. Linear -----------------------------------------------------------------------------
    md(r"""
    ## 2. Linear: $y = xW + b$

    Shapes: $x: (N, \text{in})$, $W: (\text{in}, \text{out})$, $b: (\text{out})$, so
    $y: (N, \text{out})$ — npgpt stores $W$ as (in, out), as GPT-2 does. In index form

    $$ y_{nj} = \sum_i x_{ni} W_{ij} + b_j . $$

    Differentiate $\ell = \sum_{n,j} \bar y_{nj}\, y_{nj}$ with respect to each variable:

    $$
    \frac{\partial \ell}{\partial x_{ni}} = \sum_j \bar y_{nj} W_{ij}
    \;\Longrightarrow\; \bar x = \bar Y W^\top
    \qquad (N, \text{out})\,(\text{out}, \text{in}) = (N, \text{in})
    $$

    $$
    \frac{\partial \ell}{\partial W_{ij}} = \sum_n x_{ni}\, \bar y_{nj}
    \;\Longrightarrow\; \bar W = X^\top \bar Y
    \qquad (\text{in}, N)\,(N, \text{out}) = (\text{in}, \text{out})
    $$

    $$
    \frac{\partial \ell}{\partial b_j} = \sum_n \bar y_{nj}
    \;\Longrightarrow\; \bar b = \textstyle\sum_n \bar Y_{n,:}
    \qquad (\text{out})
    $$

    The shapes nearly write the formulas: each gradient has the shape of its variable, and there
    is one way to multiply $\bar Y$ by the other factor that gives it. In a Transformer $x$ is
    $(B, T, \text{in})$ and the same $W$ acts at every position: flatten the rows to
    $N = B \cdot T$. $\bar W$ and $\bar b$ are sums over all $B \cdot T$ rows (fan-out of a shared
    weight), while $\bar x$ keeps the shape $(B, T, \text{in})$. This is
    `npgpt.nn.linear_backward`, line for line:
    """),
    code(r"""
    x = rng.standard_normal((2, 3, 4))       # (B, T, in)
    W = rng.standard_normal((4, 5))          # (in, out)
    b = rng.standard_normal(5)               # (out,)

    y, cache = nn.linear_forward(x, W, b)
    dy = rng.standard_normal(y.shape)        # (B, T, out)
    dx, dW, db = nn.linear_backward(dy, cache)
    print("y", y.shape, "  dx", dx.shape, "  dW", dW.shape, "  db", db.shape)

    X, dY = x.reshape(-1, 4), dy.reshape(-1, 5)          # (B*T, in), (B*T, out)
    assert np.allclose(dx, dy @ W.T)
    assert np.allclose(dW, X.T @ dY)
    assert np.allclose(db, dY.sum(axis=0))
    """),
    md(r"""
    `check_layer(forward, backward, inputs)` does the whole check in one call: it draws a random
    upstream gradient, runs the backward, and compares each returned gradient with the numerical
    one. The keys are the inputs' positions: `d0` is $\bar x$, `d1` is $\bar W$, `d2` is $\bar b$.
    """),
    code(r"""
    errors = check_layer(nn.linear_forward, nn.linear_backward, [x, W, b])
    print({k: f"{v:.1e}" for k, v in errors.items()})
    assert max(errors.values()) < 1e-7

    if torch is not None:
        _, (tdx, tdW, tdb) = torch_vjp(lambda x, W, b: x @ W + b, [x, W, b], dy)
        for name, ours, theirs in [("dx", dx, tdx), ("dW", dW, tdW), ("db", db, tdb)]:
            print(f"{name} vs PyTorch: {rel_error(ours, theirs):.1e}")
            assert rel_error(ours, theirs) < 1e-12
    """),

    # -- 3. cross-entropy ----------------------------------------------------------------------
    md(r"""
    ## 3. Softmax and cross-entropy, fused

    For one row of logits $z \in \mathbb{R}^V$ and its target class $y$:

    $$
    p_v = \frac{e^{z_v}}{\sum_k e^{z_k}}, \qquad
    \ell = -\log p_y = -z_y + \log \sum_k e^{z_k} .
    $$

    The derivative of the log-sum-exp is the softmax itself,
    $\partial_{z_v} \log \sum_k e^{z_k} = e^{z_v} / \sum_k e^{z_k} = p_v$, so

    $$
    \frac{\partial \ell}{\partial z_v} = p_v - \mathbb{1}[v = y],
    \qquad \bar z = p - \operatorname{onehot}(y).
    $$

    Each row of $\bar z$ sums to zero and lies in $[-1, 1]$. Going through the log's backward and
    then the softmax's gives the same vector after a cancellation, but on the way it divides by
    $p_y$, which underflows to 0 for a confident wrong prediction. Fusing the two avoids that.

    **The mean over rows.** The loss of a batch is the mean of its $N$ rows,
    $L = \frac{1}{N}\sum_n \ell_n$, so every row's gradient carries a $1/N$:

    $$ \bar Z = \tfrac{1}{N}\,\bigl(P - \operatorname{onehot}(Y)\bigr). $$

    This is where the chain rule starts: `cross_entropy_backward(1.0, cache)` returns
    $\bar Z$ with the $1/N$ in it, and every layer below only passes it on.

    **Stability.** $\log \sum_k e^{z_k} = m + \log \sum_k e^{z_k - m}$ with $m = \max_k z_k$:
    the same number, but no exponential can overflow.
    """),
    code(r"""
    N, V = 6, 5
    z = rng.standard_normal((N, V))
    y = rng.integers(0, V, size=N)

    loss, cache = nn.cross_entropy_forward(z, y)
    dz = nn.cross_entropy_backward(1.0, cache)

    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    onehot = np.eye(V)[y]
    rows = np.arange(N)
    print(f"loss {loss:.6f}, by hand {-np.log(p[rows, y]).mean():.6f}")
    print("row sums of dz:", dz.sum(axis=1))
    assert np.isclose(loss, -np.log(p[rows, y]).mean())
    assert np.allclose(dz, (p - onehot) / N)
    """),
    md(r"""
    The same gradient in two steps, through npgpt's separate softmax: the log's backward is
    $\bar p = -\operatorname{onehot}(y) / p \,/\, N$, then the softmax's backward
    $\bar z = p \odot (\bar p - \langle \bar p, p \rangle)$. Equal on ordinary logits — but scale
    the logits up until some $p_y$ underflows to 0, and the two-step route produces `inf` and
    `nan` while the fused one stays finite.
    """),
    code(r"""
    p_, softmax_cache = nn.softmax_forward(z)
    dz_two_steps = nn.softmax_backward(-onehot / p_ / N, softmax_cache)
    print(f"two steps vs fused: {rel_error(dz_two_steps, dz):.1e}")
    assert rel_error(dz_two_steps, dz) < 1e-12

    z_sharp = 1000 * z                            # a very confident model
    with np.errstate(all="ignore"):              # the two-step route overflows
        p_sharp, softmax_cache = nn.softmax_forward(z_sharp)
        two_steps = nn.softmax_backward(-onehot / p_sharp / N, softmax_cache)
    loss_sharp, cache = nn.cross_entropy_forward(z_sharp, y)
    fused = nn.cross_entropy_backward(1.0, cache)
    print("smallest p[y]:", p_sharp[rows, y].min(), "| loss:", loss_sharp)
    print("two steps all finite:", np.isfinite(two_steps).all(), "| fused all finite:", np.isfinite(fused).all())
    assert not np.isfinite(two_steps).all() and np.isfinite(fused).all() and np.isfinite(loss_sharp)
    """),
    md(r"""
    **Label smoothing** with $\varepsilon$ trains towards the target distribution
    $q = (1 - \varepsilon)\operatorname{onehot}(y) + \varepsilon / V$ instead of the one-hot vector.
    Since $q$ still sums to 1,

    $$
    \ell = -\sum_v q_v \log p_v = -\sum_v q_v z_v + \log\sum_k e^{z_k},
    \qquad \bar z = p - q :
    $$

    the same form, with $q$ for the one-hot. The loss no longer reaches 0 (its minimum is at
    $p = q$, where the gradient vanishes), so the model is discouraged from pushing its logits to
    infinity. **Ignored positions** (padding, `targets == -100`) contribute no loss and no
    gradient, and the mean is over the $N_{\text{valid}}$ rows that remain — as in
    `torch.nn.functional.cross_entropy`.
    """),
    code(r"""
    eps = 0.1
    y_pad = y.copy()
    y_pad[2] = -100                              # row 2 is padding
    valid = y_pad != -100

    loss, cache = nn.cross_entropy_forward(z, y_pad, label_smoothing=eps)
    dz = nn.cross_entropy_backward(1.0, cache)

    q = (1 - eps) * onehot + eps / V
    by_hand = np.where(valid[:, None], p - q, 0.0) / valid.sum()
    numeric = numerical_gradient(
        lambda: np.array(nn.cross_entropy_forward(z, y_pad, label_smoothing=eps)[0]), z, np.array(1.0))
    print(f"vs (p - q) / N_valid: {rel_error(dz, by_hand):.1e}   vs numerical: {rel_error(dz, numeric):.1e}")
    assert rel_error(dz, by_hand) < 1e-12 and rel_error(dz, numeric) < 1e-7

    if torch is not None:
        target = torch.as_tensor(y_pad)
        t_loss, (t_dz,) = torch_vjp(lambda z: F.cross_entropy(z, target, label_smoothing=eps), [z], 1.0)
        print(f"loss vs PyTorch: {abs(loss - t_loss):.1e}   dz vs PyTorch: {rel_error(dz, t_dz):.1e}")
        assert abs(loss - t_loss) < 1e-12 and rel_error(dz, t_dz) < 1e-12
    """),

    # -- 4. LayerNorm --------------------------------------------------------------------------
    md(r"""
    ## 4. LayerNorm

    Each row $x \in \mathbb{R}^C$ is normalised, then scaled and shifted (biased variance, $\epsilon$
    inside the square root, as `torch.nn.LayerNorm`):

    $$
    \mu = \tfrac1C \textstyle\sum_i x_i, \qquad
    \sigma^2 = \tfrac1C \textstyle\sum_i (x_i - \mu)^2, \qquad
    r = (\sigma^2 + \epsilon)^{-1/2}, \qquad
    \hat x_i = (x_i - \mu)\, r, \qquad
    y_i = w_i \hat x_i + b_i .
    $$

    The parameters are easy: $\bar w = \sum_{\text{rows}} \bar y \odot \hat x$ and
    $\bar b = \sum_{\text{rows}} \bar y$. For $x$, first go through the scale:
    $g = \partial \ell / \partial \hat x = \bar y \odot w$. The hard part is that $\mu$ and $r$
    depend on **every** element of the row, so $\hat x_j$ depends on every $x_i$:

    $$
    \frac{\partial \mu}{\partial x_i} = \frac1C, \qquad
    \frac{\partial \sigma^2}{\partial x_i} = \frac{2 (x_i - \mu)}{C}
    \;\;\bigl(\text{the term through } \mu \text{ is } -\tfrac{2}{C^2}\textstyle\sum_j (x_j - \mu) = 0\bigr), \qquad
    \frac{\partial r}{\partial x_i} = -\tfrac12 (\sigma^2 + \epsilon)^{-3/2}\,\frac{2 (x_i - \mu)}{C} = -\frac{r^3 (x_i - \mu)}{C},
    $$

    $$
    \frac{\partial \hat x_j}{\partial x_i}
    = r\Bigl(\delta_{ij} - \frac1C\Bigr) + (x_j - \mu)\,\frac{\partial r}{\partial x_i}
    = r\Bigl(\delta_{ij} - \frac1C - \frac{\hat x_j \hat x_i}{C}\Bigr).
    $$

    Contract with $g$, $\bar x_i = \sum_j g_j\, \partial \hat x_j / \partial x_i$:

    $$
    \boxed{\;\bar x = r \,\bigl(g - \operatorname{mean}(g) - \hat x \odot \operatorname{mean}(g \odot \hat x)\bigr)\;}
    $$

    (means over the $C$ entries of each row). Three terms: the direct path, the path through
    $\mu$, and the path through $r$. `layernorm_backward` keeps $\mu$ and $r$ from the forward and
    recomputes the cheap $\hat x$.
    """),
    code(r"""
    x = rng.standard_normal((2, 3, 6))
    w = rng.standard_normal(6)
    b = rng.standard_normal(6)

    out, cache = nn.layernorm_forward(x, w, b)
    dy = rng.standard_normal(out.shape)
    dx, dw, db = nn.layernorm_backward(dy, cache)

    mu = x.mean(axis=-1, keepdims=True)
    r = 1 / np.sqrt(x.var(axis=-1, keepdims=True) + 1e-5)
    xhat = (x - mu) * r
    g = dy * w
    by_hand = r * (g - g.mean(-1, keepdims=True) - xhat * (g * xhat).mean(-1, keepdims=True))
    assert np.allclose(dx, by_hand)
    assert np.allclose(dw, (dy * xhat).sum(axis=(0, 1))) and np.allclose(db, dy.sum(axis=(0, 1)))

    errors = check_layer(nn.layernorm_forward, nn.layernorm_backward, [x, w, b])
    print("numerical:", {k: f"{v:.1e}" for k, v in errors.items()})
    assert max(errors.values()) < 1e-7

    if torch is not None:
        _, (tdx, tdw, tdb) = torch_vjp(lambda x, w, b: F.layer_norm(x, (6,), w, b, eps=1e-5), [x, w, b], dy)
        print(f"PyTorch: dx {rel_error(dx, tdx):.1e}  dw {rel_error(dw, tdw):.1e}  db {rel_error(db, tdb):.1e}")
        assert max(rel_error(dx, tdx), rel_error(dw, tdw), rel_error(db, tdb)) < 1e-12
    """),
    md(r"""
    ### Why the upstream gradient must be random

    It is tempting to check a layer with $\bar y = \mathbf 1$ (that is, $\ell = \sum y$). For a
    LayerNorm at its initial parameters $w = \mathbf 1$, $b = \mathbf 0$ — the state of every fresh
    model — this checks nothing: $\sum_i \hat x_i = 0$ for every row, so
    $\ell = \sum_i (\hat x_i + b_i)$ does not depend on $x$ at all, the true $\bar x$ is exactly 0,
    and $g = \mathbf 1$ is constant along the row, so $g - \operatorname{mean}(g) = 0$ as well.
    **Any** backward whose terms cancel for a constant $g$ returns zeros and agrees with the
    numerical gradient — such as this one, which forgets that $r$ depends on $x$ (the third term):
    """),
    code(r'''
    def layernorm_backward_wrong(dout, cache):
        """A plausible bug: treats rstd as a constant, so the third term is missing."""
        x, w, mu, rstd, has_bias = cache
        g = dout * w
        dx = rstd * (g - g.mean(axis=-1, keepdims=True))
        _, dw, db = nn.layernorm_backward(dout, cache)        # the parameters' part is fine
        return dx, dw, db

    x = rng.standard_normal((4, 6))
    w_init, b_init = np.ones(6), np.zeros(6)                  # LayerNorm's initial parameters
    ones = np.ones((4, 6))

    _, cache = nn.layernorm_forward(x, w_init, b_init)
    numeric = numerical_gradient(lambda: nn.layernorm_forward(x, w_init, b_init)[0], x, ones)
    right = nn.layernorm_backward(ones, cache)[0]
    wrong = layernorm_backward_wrong(ones, cache)[0]
    print(f"largest |dx|: numerical {np.abs(numeric).max():.1e}, right {np.abs(right).max():.1e}, "
          f"wrong {np.abs(wrong).max():.1e}")
    print(f"max |wrong - numerical| = {np.abs(wrong - numeric).max():.1e}: the wrong backward passes")
    assert np.abs(wrong - numeric).max() < 1e-8
    '''),
    md(r"""
    (Relative errors are no help here: both sides are rounding noise around 0, and the ratio of two
    noises is $O(1)$ for the right backward too.) A random $\bar y$, and random $w$, make $g$ vary
    along each row, and all three terms matter. `check_layer` draws such a $\bar y$ itself, and
    `npgpt.gradcheck` gives LayerNorms random parameters for the same reason (with $w = \mathbf 1$ a
    backward that forgets the factor $w$ would pass, too):
    """),
    code(r"""
    w, b = rng.standard_normal(6), rng.standard_normal(6)
    right_errors = check_layer(nn.layernorm_forward, nn.layernorm_backward, [x, w, b])
    wrong_errors = check_layer(nn.layernorm_forward, layernorm_backward_wrong, [x, w, b])
    print("right:", {k: f"{v:.1e}" for k, v in right_errors.items()})
    print("wrong:", {k: f"{v:.1e}" for k, v in wrong_errors.items()})
    assert max(right_errors.values()) < 1e-7
    assert wrong_errors["d0"] > 1e-2                       # caught: dx is wrong at O(1)
    """),

    # -- 5. GELU -------------------------------------------------------------------------------
    md(r"""
    ## 5. GELU, the tanh approximation

    GELU weighs its input by the probability that a standard normal variable is below it,
    $\operatorname{GELU}(x) = x\,\Phi(x)$. GPT-2 uses the tanh approximation of $\Phi$:

    $$
    y = \tfrac12\, x\,\bigl(1 + \tanh u\bigr), \qquad u = \sqrt{2/\pi}\,\bigl(x + 0.044715\, x^3\bigr).
    $$

    It acts element by element, so its Jacobian is diagonal and $\bar x = \bar y \odot dy/dx$. The
    product rule, then the chain rule through $\tanh$ (with $\tanh'(u) = 1 - \tanh^2 u$), give,
    with $t = \tanh u$:

    $$
    \frac{dy}{dx} = \tfrac12 (1 + t) \;+\; \tfrac12\, x\, (1 - t^2)\, \sqrt{2/\pi}\,\bigl(1 + 3 \cdot 0.044715\, x^2\bigr).
    $$

    The forward keeps $t$ in its cache, so the backward needs no second $\tanh$.
    """),
    code(r"""
    x = rng.standard_normal((3, 7)) * 2
    y, cache = nn.gelu_tanh_forward(x)
    dy = rng.standard_normal(x.shape)
    dx = nn.gelu_tanh_backward(dy, cache)

    t = np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3))
    slope = 0.5 * (1 + t) + 0.5 * x * (1 - t**2) * np.sqrt(2 / np.pi) * (1 + 3 * 0.044715 * x**2)
    assert np.allclose(dx, dy * slope)

    errors = check_layer(nn.gelu_tanh_forward, nn.gelu_tanh_backward, [x])
    print(f"numerical: {errors['d0']:.1e}")
    assert errors["d0"] < 1e-7

    grid = np.linspace(-6, 6, 1201)
    gap = np.abs(nn.gelu_tanh_forward(grid)[0] - nn.gelu_forward(grid)[0]).max()
    print(f"largest gap between the tanh form and the exact x*Phi(x) on [-6, 6]: {gap:.1e}")

    if torch is not None:
        _, (tdx,) = torch_vjp(lambda x: F.gelu(x, approximate="tanh"), [x], dy)
        print(f"PyTorch: {rel_error(dx, tdx):.1e}")
        assert rel_error(dx, tdx) < 1e-12
    """),

    # -- 6. check_all --------------------------------------------------------------------------
    md(r"""
    ## 6. Every layer of npgpt, checked

    `npgpt.gradcheck.check_all()` runs the same check on every Module of `npgpt.nn` — the four
    layers above, and embeddings, softmax, dropout (with its mask held fixed), attention in its
    causal, padded, dropout and cross forms, the MLP, the GPT block, and the Transformer's encoder
    and decoder layers — on tiny float64 inputs, for the input gradient and every parameter's.
    The command `npgpt gradcheck` prints the same table.
    """),
    code(r"""
    from IPython.display import Markdown, display

    from npgpt.gradcheck import check_all

    rows = check_all(seed=0)
    table = ["| layer | tensor | shape | relative error | |", "|---|---|---|---:|---|"]
    for r in rows:
        shape = " × ".join(map(str, r["shape"])) or "scalar"
        verdict = "pass" if r["passed"] else "**FAIL**"
        table.append(f"| {r['layer']} | `{r['tensor']}` | {shape} | {r['error']:.1e} | {verdict} |")
    display(Markdown("\n".join(table)))
    print(f"{sum(r['passed'] for r in rows)}/{len(rows)} tensors within tolerance; "
          f"worst {max(r['error'] for r in rows):.1e}")
    assert all(r["passed"] for r in rows), [r for r in rows if not r["passed"]]
    """),
]

# =============================================================================================
# 02 -- attention
# =============================================================================================

ATTENTION = [
    md(r"""
    # 02 — Attention, forward and backward

    Scaled dot-product attention is the one layer of a Transformer that mixes positions:

    $$
    \operatorname{Attention}(Q, K, V) = \operatorname{softmax}\!\Bigl(\frac{Q K^\top}{\sqrt D} + M\Bigr)\, V,
    \qquad Q: (T_q, D),\;\; K, V: (T_k, D),\;\; M \in \{0, -\infty\}^{T_q \times T_k}.
    $$

    This notebook takes it apart: why the $1/\sqrt D$, what the mask $M$ does (causal, with a KV
    cache, with padding), how the gradient flows back through the softmax, how $H$ heads are cut
    out of one width $C$, and the online softmax that lets a fused kernel compute all of it
    without ever holding the $T_q \times T_k$ matrix. The code is npgpt's: the readable kernel
    `npgpt.kernels.reference` and the layer `npgpt.nn.MultiHeadAttention`.
    """),
    code(r"""
    import numpy as np

    import npgpt
    from npgpt import nn
    from npgpt.gradcheck import check_layer, check_module, rel_error
    from npgpt.kernels import reference

    try:
        import torch
        import torch.nn.functional as F
    except ImportError:        # PyTorch is optional: the numerical checks stand on their own
        torch = None

    rng = np.random.default_rng(0)
    np.set_printoptions(precision=3, suppress=True, linewidth=110)
    print("npgpt kernels:", npgpt.kernels.current_backend())
    """),

    # -- 1. scaling ----------------------------------------------------------------------------
    md(r"""
    ## 1. Why divide by $\sqrt{D}$

    Take a query $q$ and a key $k$ whose entries are independent, with mean 0 and variance 1. Their
    dot product is a sum of $D$ independent terms $q_d k_d$, each of mean 0 and variance
    $\mathbb{E}[q_d^2]\,\mathbb{E}[k_d^2] = 1$, so

    $$
    \mathbb{E}[q \cdot k] = 0, \qquad \operatorname{Var}[q \cdot k] = D, \qquad
    \operatorname{Var}\Bigl[\frac{q \cdot k}{\sqrt D}\Bigr] = 1 .
    $$

    Without the scale the scores grow like $\sqrt D$: with $D = 64$ they spread over about
    $\pm 16$, and a softmax of such numbers is nearly one-hot.
    """),
    code(r"""
    print("   D   Var[q.k]   Var[q.k / sqrt(D)]")
    for D in (4, 16, 64, 256):
        q = rng.standard_normal((20_000, D))
        k = rng.standard_normal((20_000, D))
        s = (q * k).sum(axis=1)
        print(f"{D:4d}   {s.var():8.1f}   {(s / np.sqrt(D)).var():8.3f}")
        assert 0.9 < s.var() / D < 1.1 and 0.9 < (s / np.sqrt(D)).var() < 1.1
    """),
    md(r"""
    A nearly one-hot softmax is bad for learning, not only for mixing: the softmax's Jacobian is
    $\partial a_j / \partial s_i = a_j(\delta_{ij} - a_i)$, and when one $a_j$ is close to 1 every
    entry of it is close to 0 — the gradient that reaches the scores (and so $W_q$, $W_k$) vanishes.
    Below, 16 keys of width $D = 256$, scored with and without the scale:
    """),
    code(r"""
    D, Tk = 256, 16
    q = rng.standard_normal((500, 1, D))
    k = rng.standard_normal((500, Tk, D))
    raw = (q * k).sum(axis=-1)                                   # (500, Tk): 500 rows of scores
    norms = {}
    for name, s in [("q.k", raw), ("q.k / sqrt(D)", raw / np.sqrt(D))]:
        a, _ = nn.softmax_forward(s)
        jac = a[:, :, None] * np.eye(Tk) - a[:, :, None] * a[:, None, :]   # (500, Tk, Tk)
        norms[name] = np.linalg.norm(jac, axis=(1, 2)).mean()
        print(f"{name:14s} mean largest probability {a.max(axis=1).mean():.3f}   "
              f"mean |Jacobian| {norms[name]:.3f}")
    assert norms["q.k / sqrt(D)"] > 3 * norms["q.k"]
    """),
    md(r"""
    npgpt's reference kernel is these three lines, with a mask (next section) and a guard for rows
    that see no key at all:
    """),
    code(r"""
    B, H, T, D = 2, 3, 6, 8
    q, k, v = (rng.standard_normal((B, H, T, D)) for _ in range(3))

    out, cache = reference.attention_forward(q, k, v, causal=False)

    s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(D)             # (B, H, T, T)
    att, _ = nn.softmax_forward(s)                           # over the keys, the last axis
    print("out", out.shape, " att", att.shape)
    assert rel_error(out, att @ v) < 1e-14 and rel_error(cache.att, att) < 1e-14
    """),

    # -- 2. causal mask ------------------------------------------------------------------------
    md(r"""
    ## 2. The causal mask

    A language model predicts token $t+1$ from tokens $0..t$, and it is trained on all positions
    of a sequence at once; position $t$ must not see positions after $t$. Set those scores to
    $-\infty$ before the softmax:

    $$
    M_{ij} = \begin{cases} 0 & j \le i \\ -\infty & j > i \end{cases}
    \qquad\Longrightarrow\qquad a_{ij} = \frac{e^{s_{ij}} \cdot [j \le i]}{\sum_{j' \le i} e^{s_{ij'}}} .
    $$

    $e^{-\infty} = 0$ exactly, so a hidden key gets weight exactly 0 whatever the scores are, and
    the softmax renormalises over the keys that remain. (A large finite stand-in such as $-10^9$
    works only while the scores stay far above it, and a row whose keys are all hidden then
    silently attends to keys it must not see; section 5 shows what npgpt does with such a row.)
    `reference.attention_mask` gives the boolean mask, True where a query may **not** look:
    """),
    code(r"""
    mask = reference.attention_mask(5, 5, causal=True, key_pad=None)
    print(mask.astype(int))

    out, cache = reference.attention_forward(q, k, v, causal=True)
    print("attention of head (0, 0):")
    print(cache.att[0, 0])
    hidden = np.broadcast_to(reference.attention_mask(T, T, True, None), cache.att.shape)
    assert (cache.att[hidden] == 0).all()                    # exactly 0, not merely small
    assert np.allclose(cache.att.sum(axis=-1), 1)
    """),
    md(r"""
    **A live check.** Run npgpt's `MultiHeadAttention` on a sequence, then change every input
    after position $t$: the outputs at positions $0..t$ do not move by a single bit. The gradient
    says the same from the other side: an upstream gradient at position $t$ alone sends nothing
    to the inputs after $t$.
    """),
    code(r"""
    C, n_head, T, t = 16, 4, 8, 4
    mha = nn.MultiHeadAttention(C, n_head, causal=True, dtype="float64", rng=np.random.default_rng(1), std=0.3)
    x = rng.standard_normal((1, T, C))
    y = mha.forward(x)

    x_changed = x.copy()
    x_changed[:, t + 1:] = rng.standard_normal((1, T - t - 1, C))      # a different future
    y_changed = mha.forward(x_changed)
    change = np.abs(y_changed - y).max(axis=-1)[0]
    print("largest change of the output, position by position:", change)
    assert (change[:t + 1] == 0).all() and (change[t + 1:] > 0).all()

    mha.forward(x)
    dout = np.zeros_like(y)
    dout[:, t] = rng.standard_normal(C)                      # a loss that reads position t only
    mha.zero_grad()
    dx = mha.backward(dout)
    print("|dx| position by position:", np.abs(dx).max(axis=-1)[0])
    assert (dx[:, t + 1:] == 0).all() and (np.abs(dx[:, :t + 1]).max(axis=-1) > 0).all()
    """),
    md(r"""
    **Fewer queries than keys: decoding with a KV cache.** When generating, the model has already
    computed the keys and values of the $T_k - T_q$ earlier positions; only the $T_q$ new
    positions (often one) need queries. Query $i$ is then absolute position $i + (T_k - T_q)$, and
    it may see the keys up to there:

    $$ M_{ij} = -\infty \iff j > i + (T_k - T_q) ,$$

    the last query lined up with the last key (the mask's diagonal shifts right). With it, the new
    rows of attention equal the last rows of attending over the whole sequence, which is what makes
    the cache exact. (PyTorch's `scaled_dot_product_attention(is_causal=True)` aligns a non-square
    mask the other way, top-left; a cache needs the bottom-right alignment used here.)
    """),
    code(r"""
    print(reference.attention_mask(2, 5, causal=True, key_pad=None).astype(int))

    full, _ = reference.attention_forward(q, k, v, causal=True)              # all T queries
    last2, _ = reference.attention_forward(q[:, :, -2:], k, v, causal=True)  # Tq = 2, Tk = T
    print(f"last two rows, cached vs full: {rel_error(last2, full[:, :, -2:]):.1e}")
    assert rel_error(last2, full[:, :, -2:]) < 1e-14
    """),

    # -- 3. backward ---------------------------------------------------------------------------
    md(r"""
    ## 3. The backward, through the softmax

    Read the forward from the bottom up (one head; $\bar o$ is the upstream gradient):

    $$
    o = a\,V \;\Longrightarrow\; \bar V = a^\top \bar o, \quad \bar a = \bar o\, V^\top
    \qquad\text{(section 2 of notebook 01: a product of matrices)}
    $$

    The softmax of a row, $a_j = e^{s_j} / \sum_k e^{s_k}$, has the Jacobian
    $\partial a_j / \partial s_i = a_j (\delta_{ij} - a_i)$. Contracting it with $\bar a$:

    $$
    \bar s_i = \sum_j \bar a_j\, a_j (\delta_{ij} - a_i) = a_i \Bigl(\bar a_i - \sum_j \bar a_j a_j\Bigr),
    \qquad
    \boxed{\;\bar s = a \odot \bigl(\bar a - \operatorname{rowsum}(\bar a \odot a)\bigr)\;}
    $$

    Finally the scores $s = Q K^\top / \sqrt D$ are one more product:

    $$
    \bar Q = \bar s\, K / \sqrt D, \qquad \bar K = \bar s^\top Q / \sqrt D .
    $$

    The mask needs no backward of its own: a hidden score has $a_{ij} = 0$, so its $\bar s_{ij} = 0$,
    and no gradient flows to a key that a query could not see.
    """),
    code(r"""
    B, H, T, D = q.shape                                        # the q, k, v of section 1
    out, cache = reference.attention_forward(q, k, v, causal=True)
    dout = rng.standard_normal(out.shape)
    dq, dk, dv = reference.attention_backward(dout, cache)

    a = cache.att
    dv_hand = a.transpose(0, 1, 3, 2) @ dout                    # forward: out = a @ v
    da = dout @ v.transpose(0, 1, 3, 2)
    ds = a * (da - (da * a).sum(axis=-1, keepdims=True))       # forward: a = softmax(s)
    dq_hand = ds @ k / np.sqrt(D)                               # forward: s = q @ k^T / sqrt(D)
    dk_hand = ds.transpose(0, 1, 3, 2) @ q / np.sqrt(D)
    for name, ours, hand in [("dq", dq, dq_hand), ("dk", dk, dk_hand), ("dv", dv, dv_hand)]:
        assert rel_error(ours, hand) < 1e-13, name
    assert (ds[np.broadcast_to(reference.attention_mask(T, T, True, None), ds.shape)] == 0).all()

    errors = check_layer(lambda q, k, v: reference.attention_forward(q, k, v, causal=True),
                         reference.attention_backward, [q, k, v])
    print("numerical:", {name: f"{e:.1e}" for name, e in zip(("dq", "dk", "dv"), errors.values())})
    assert max(errors.values()) < 1e-7
    """),
    code(r"""
    if torch is not None:                # PyTorch's fused attention, given npgpt's mask (True = may look)
        visible = torch.as_tensor(~reference.attention_mask(T, T, True, None))
        tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
        t_out = F.scaled_dot_product_attention(tq, tk, tv, attn_mask=visible)
        t_out.backward(torch.as_tensor(dout))
        for name, ours, theirs in [("out", out, t_out.detach()), ("dq", dq, tq.grad),
                                   ("dk", dk, tk.grad), ("dv", dv, tv.grad)]:
            print(f"{name} vs PyTorch: {rel_error(ours, theirs.numpy()):.1e}")
            assert rel_error(ours, theirs.numpy()) < 1e-12
    """),

    # -- 4. heads ------------------------------------------------------------------------------
    md(r"""
    ## 4. Many heads: split and merge

    Multi-head attention runs $H$ attentions side by side, each on its own slice of
    $D = C / H$ channels, with its own softmax — so one head can attend to the previous token
    while another attends to the start of the sentence — for the cost of one attention of width
    $C$. In npgpt (GPT-2's layout) one Linear $W_{\text{attn}}: (C, 3C)$ makes $q, k, v$, and the
    heads are a reshape and a transpose:

    $$
    (B, T, C) \xrightarrow{\text{reshape}} (B, T, H, D) \xrightarrow{\text{transpose}} (B, H, T, D),
    \qquad \text{head } h = \text{channels } hD \ldots (h+1)D - 1 .
    $$

    After attention, `merge_heads` undoes it, and the output projection $W_o: (C, C)$ mixes the
    heads: $y = [\,o_1 \,\cdots\, o_H\,]\, W_o = \sum_h o_h\, W_o[hD:(h+1)D, :]$. Both reshapes only
    move entries, so each one's backward is the other: the gradient is moved back to where its
    entry came from.
    """),
    code(r"""
    B, T, C, n_head = 2, 5, 12, 3
    D = C // n_head
    x = rng.standard_normal((B, T, C))
    heads = nn.split_heads(x, n_head)
    print("split:", x.shape, "->", heads.shape, "  merge:", heads.shape, "->", nn.merge_heads(heads).shape)
    for h in range(n_head):
        assert np.array_equal(heads[:, h], x[:, :, h * D:(h + 1) * D])
    assert np.array_equal(nn.merge_heads(heads), x)
    """),

    # -- 5. padding ----------------------------------------------------------------------------
    md(r"""
    ## 5. Padding masks

    Sequences of different lengths are batched by padding them to one length. The padded keys
    must receive no attention: `key_pad` is a boolean $(B, T_k)$ array, True at a padded position
    (PyTorch's key-padding-mask convention), and it hides that key from **every** query of its
    sequence — it adds $-\infty$ to a whole column of the scores, where the causal mask adds a
    triangle. The padded *queries* still produce an output, which the loss ignores
    (`ignore_index`, notebook 01).

    Below, the second sequence has 3 real tokens of 5: its attention has zero columns 3 and 4, and
    whatever sits in its padded keys and values cannot change any output.
    """),
    code(r"""
    B, H, T, D = 2, 2, 5, 4
    q, k, v = (rng.standard_normal((B, H, T, D)) for _ in range(3))
    key_pad = np.zeros((B, T), dtype=bool)
    key_pad[1, 3:] = True

    out, cache = reference.attention_forward(q, k, v, causal=False, key_pad=key_pad)
    print("attention of sequence 1, head 0:")
    print(cache.att[1, 0])

    k2, v2 = k.copy(), v.copy()
    k2[1, :, 3:] = 100.0                                     # garbage in the padding
    v2[1, :, 3:] = -1e6
    out2, _ = reference.attention_forward(q, k2, v2, causal=False, key_pad=key_pad)
    assert np.array_equal(out, out2)
    """),
    md(r"""
    Combine the two masks with left padding (how prompts of different lengths are batched for
    generation) and a query can be left with **no** visible key: position 0 of a sequence whose
    first two tokens are padding sees only key 0, which is padding. Its softmax is $0/0$: a plain
    softmax gives `nan` (so do `torch.softmax` and `torch.nn.MultiheadAttention`), and one such row
    would poison the whole batch through the next matrix product. npgpt's kernels give the row zero
    weights and a zero output (as `torch.nn.functional.scaled_dot_product_attention` now does).
    """),
    code(r"""
    key_pad = np.zeros((B, T), dtype=bool)
    key_pad[1, :2] = True                                     # sequence 1 is left-padded by 2
    out, cache = reference.attention_forward(q, k, v, causal=True, key_pad=key_pad)
    print("attention of sequence 1, head 0 (causal + left padding):")
    print(cache.att[1, 0])
    with np.errstate(invalid="ignore"):
        plain, _ = nn.softmax_forward(np.full(5, -np.inf))
    print("a plain softmax of a row with no visible key:", plain)
    assert np.isfinite(out).all()
    assert (out[1, :, :2] == 0).all() and (cache.att[1, :, :2] == 0).all()
    """),

    # -- 6. gradient check ---------------------------------------------------------------------
    md(r"""
    ## 6. The gradient check of `MultiHeadAttention`

    The whole layer — $c_{\text{attn}}$, split, the attention kernel, merge, $c_{\text{proj}}$ —
    checked against the numerical gradient for its input and all four parameters, causal and with
    a padding mask. One detail matters: at GPT-2's initialisation (std 0.02) the scores are nearly
    0 and the softmax nearly uniform, where $\bar s = a \odot (\bar a - \ldots)$ is tiny and a
    mistake in it would hide under the tolerance. The check uses larger weights (std 0.5), so the
    attention is far from uniform:
    """),
    code(r"""
    C, n_head, T = 8, 2, 5
    x = rng.standard_normal((2, T, C))

    def spread(std):                  # how far the layer's attention is from uniform, 1/T
        m = nn.MultiHeadAttention(C, n_head, causal=False, dtype="float64", rng=np.random.default_rng(2), std=std)
        q, k, _ = np.split(x @ m.c_attn.weight.data + m.c_attn.bias.data, 3, axis=-1)
        q, k = nn.split_heads(q, n_head), nn.split_heads(k, n_head)          # (B, H, T, D)
        att, _ = nn.softmax_forward(q @ k.transpose(0, 1, 3, 2) / np.sqrt(C // n_head))
        return np.abs(att - 1 / T).max()
    print(f"largest |att - 1/T|: std 0.02 -> {spread(0.02):.1e},  std 0.5 -> {spread(0.5):.2f}")

    pad = np.zeros((2, T), dtype=bool)
    pad[1, 3:] = True
    for name, causal, key_pad in [("causal", True, None), ("padded", False, pad)]:
        mha = nn.MultiHeadAttention(C, n_head, causal=causal, dtype="float64",
                                    rng=np.random.default_rng(3), std=0.5)
        errors = check_module(mha, [x, None, key_pad], input_names=["x", "memory", "key_pad"])
        print(f"{name:7s}", {n: f"{e:.1e}" for n, e in errors.items()})
        assert set(errors) == {"x", "c_attn.weight", "c_attn.bias", "c_proj.weight", "c_proj.bias"}
        assert max(errors.values()) < 1e-7
    """),

    # -- 7. online softmax ---------------------------------------------------------------------
    md(r"""
    ## 7. The online softmax: attention without the $T \times T$ matrix

    The reference kernel materialises the scores, $(B, H, T_q, T_k)$ numbers — memory quadratic in
    the sequence length, read and written several times. A fused kernel (FlashAttention; npgpt's
    is `attention_forward` of the "numba" backend in `npgpt/kernels/cpu.py`) walks the keys in
    blocks and keeps, per query row, only three running quantities: the largest score so far $m$,
    the sum $\ell = \sum_j e^{s_j - m}$, and the unnormalised output $o = \sum_j e^{s_j - m} v_j$.
    When a new block with scores $s^{(b)}$ and values $V^{(b)}$ arrives:

    $$
    m' = \max\bigl(m, \max_j s^{(b)}_j\bigr), \qquad
    c = e^{\,m - m'}, \qquad
    \ell' = c\,\ell + \sum_j e^{s^{(b)}_j - m'}, \qquad
    o' = c\, o + \sum_j e^{s^{(b)}_j - m'}\, v^{(b)}_j .
    $$

    The factor $c \le 1$ rescales what was summed under the old maximum to the new one, so every
    exponent stays $\le 0$ (no overflow). After the last block, $\operatorname{out} = o / \ell$ —
    exactly the softmax-weighted sum, since the common factor $e^{-m}$ cancels — and
    $\operatorname{lse} = m + \log \ell$ is the row's log-sum-exp, all that the backward needs to
    recompute $a = e^{s - \operatorname{lse}}$ block by block. A sketch in NumPy, for the causal
    case (every row sees key 0 in the first block, so $m$ is finite from then on; the real kernel
    also handles rows with no visible key):
    """),
    code(r'''
    def attention_online(q, k, v, block):
        """Causal attention over key blocks with a running max, sum and output (an illustration)."""
        B, H, Tq, D = q.shape
        Tk = k.shape[2]
        m = np.full((B, H, Tq, 1), -np.inf)                   # largest score seen, per query row
        l = np.zeros((B, H, Tq, 1))                           # sum of exp(score - m)
        o = np.zeros((B, H, Tq, D))                           # sum of exp(score - m) * value
        position = np.arange(Tq)[:, None] + (Tk - Tq)         # each query's absolute position
        for j0 in range(0, Tk, block):
            kb, vb = k[:, :, j0:j0 + block], v[:, :, j0:j0 + block]
            s = q @ kb.transpose(0, 1, 3, 2) / np.sqrt(D)      # (B, H, Tq, block): one block of scores
            keys = np.arange(j0, j0 + kb.shape[2])[None, :]
            s = np.where(keys > position, -np.inf, s)          # the causal mask, block by block
            m_new = np.maximum(m, s.max(axis=-1, keepdims=True))
            c = np.exp(m - m_new)                              # rescale the old sums to the new max
            p = np.exp(s - m_new)
            l = c * l + p.sum(axis=-1, keepdims=True)
            o = c * o + p @ vb
            m = m_new
        return o / l, (m + np.log(l))[..., 0]                  # out, and the row log-sum-exp

    B, H, Tk, D = 2, 2, 10, 4
    q, k, v = (rng.standard_normal((B, H, Tk, D)) for _ in range(3))
    for Tq, block in [(10, 4), (10, 3), (3, 4), (1, 4)]:      # blocks that do not divide Tk; Tq < Tk
        out_ref, cache = reference.attention_forward(q[:, :, -Tq:], k, v, causal=True)
        out_online, lse = attention_online(q[:, :, -Tq:], k, v, block)
        s = q[:, :, -Tq:] @ k.transpose(0, 1, 3, 2) / np.sqrt(D)
        s = np.where(reference.attention_mask(Tq, Tk, True, None), -np.inf, s)
        att_from_lse = np.exp(s - lse[..., None])             # what the fused backward recomputes
        print(f"Tq={Tq:2d} block={block}: out {rel_error(out_online, out_ref):.1e}   "
              f"att from lse {rel_error(att_from_lse, cache.att):.1e}")
        assert rel_error(out_online, out_ref) < 1e-13 and rel_error(att_from_lse, cache.att) < 1e-13
    '''),
    md(r"""
    One more identity makes the fused backward cheap. The softmax backward needs
    $\operatorname{rowsum}(\bar a \odot a)$, which seems to need the whole row of $a$; but with
    $\bar a = \bar o\, V^\top$ and $o = a V$,

    $$
    \sum_j \bar a_{ij}\, a_{ij} = \sum_j \sum_d \bar o_{id}\, V_{jd}\, a_{ij}
    = \sum_d \bar o_{id}\, o_{id} ,
    $$

    a dot product of two $D$-vectors per row, computed once before the key blocks are walked.
    """),
    code(r"""
    out, cache = reference.attention_forward(q, k, v, causal=True)
    dout = rng.standard_normal(out.shape)
    da = dout @ v.transpose(0, 1, 3, 2)
    lhs = (da * cache.att).sum(axis=-1)
    rhs = (dout * out).sum(axis=-1)
    print(f"rowsum(da * att) vs rowsum(dout * out): {rel_error(lhs, rhs):.1e}")
    assert rel_error(lhs, rhs) < 1e-13
    """),
]

# =============================================================================================
# 03 -- training a GPT
# =============================================================================================

TRAINING = [
    md(r"""
    # 03 — Training a small GPT

    Notebooks 01 and 02 derived the backward of every layer. Here they are put together: npgpt's
    `GPT` (GPT-2's architecture), checked as a whole against the numerical gradient, then trained
    for a few hundred steps with AdamW on a slice of npgpt's built-in corpus — the text of
    Python's own documentation, which ships with every Python — at the level of single
    characters, and finally sampled from. All of it runs in seconds on a laptop CPU.
    """),
    code(r"""
    import math
    import time

    import numpy as np

    import npgpt
    from npgpt import GPT, GPTConfig
    from npgpt.data import default_corpus, get_batch, split
    from npgpt.gradcheck import numerical_gradient, rel_error
    from npgpt.optim import AdamW, clip_grad_norm
    from npgpt.tokenizers import CharTokenizer

    print("npgpt kernels:", npgpt.kernels.current_backend())
    """),

    # -- 1. the model as one function ----------------------------------------------------------
    md(r"""
    ## 1. The model, and its backward as one chain rule

    For token ids $\text{idx}: (B, T)$, with $W_{te}: (V, C)$ the token table and $W_{pe}$ the
    position table:

    $$
    x_0 = W_{te}[\text{idx}] + W_{pe}[0..T-1], \qquad
    x_{l} = \operatorname{block}_l(x_{l-1}), \qquad
    \text{logits} = \operatorname{LN}_f(x_L)\, W_{te}^\top ,
    $$

    each block being pre-LN: $x \mathrel{+}= \operatorname{attn}(\operatorname{LN}_1(x))$, then
    $x \mathrel{+}= \operatorname{MLP}(\operatorname{LN}_2(x))$. `GPT.backward()` is this read from
    the bottom up, one line per layer (see `npgpt/models/gpt.py`). Two fan-outs meet in it: the
    residual stream (each block's input gradient is the sum of the skip path and the branch), and
    $W_{te}$, used by the embedding at the bottom and by the output head at the top: its gradient
    is the sum of both.

    Before training anything, check the whole chain at once. The preset `"gradcheck"` is a GPT
    small enough (two layers of width 8, in float64) for the numerical gradient of **every**
    parameter, with a random upstream gradient on the logits:
    """),
    code(r"""
    cfg = GPTConfig.preset("gradcheck")
    model = GPT(cfg, seed=0)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, cfg.vocab_size, size=(2, cfg.block_size))

    logits, _ = model.forward(idx)
    dlogits = rng.standard_normal(logits.shape)
    model.zero_grad()
    model.backward(dlogits)

    errors = {}
    for name, p in model.named_parameters():
        numeric = numerical_gradient(lambda: model.forward(idx)[0], p.data, dlogits)
        errors[name] = rel_error(p.grad, numeric)
    worst = max(errors, key=errors.get)
    print(f"{model.num_parameters()} parameters in {len(errors)} tensors; "
          f"worst relative error {errors[worst]:.1e} ({worst})")
    for name in ("wte.weight", "h.0.attn.c_attn.weight", "h.1.ln_2.weight", "ln_f.bias"):
        print(f"  {name:24s} {errors[name]:.1e}")
    assert max(errors.values()) < 1e-7
    """),

    # -- 2. data -------------------------------------------------------------------------------
    md(r"""
    ## 2. The data

    One token per character (`CharTokenizer`: the sorted set of characters of the text), the first
    90% for training and the rest for validation. A batch is $B$ random windows of $T + 1$
    consecutive tokens: the input is the first $T$, the target the last $T$ — so every position
    of every window is a next-token prediction, and the causal mask of notebook 02 keeps each
    position from seeing its own answer.
    """),
    code(r"""
    text = default_corpus()[:200_000]
    tokenizer = CharTokenizer.from_text(text)
    ids = np.array(tokenizer.encode(text))
    train_ids, val_ids = split(ids, val_fraction=0.1)
    print(f"{len(text):,} characters, {tokenizer.vocab_size} distinct; "
          f"{len(train_ids):,} training and {len(val_ids):,} validation tokens")

    x, y = get_batch(train_ids, batch_size=2, block_size=24, rng=np.random.default_rng(0))
    print("input :", repr(tokenizer.decode(x[0])))
    print("target:", repr(tokenizer.decode(y[0])))
    assert (x[0, 1:] == y[0, :-1]).all()
    """),

    # -- 3. loss at initialisation -------------------------------------------------------------
    md(r"""
    ## 3. The loss before training

    GPT-2's initialisation draws every weight from $\mathcal N(0, 0.02^2)$, so the logits start
    close to 0 and the predicted distribution close to uniform over the $V$ characters. The
    cross-entropy of a uniform guess is

    $$ -\log \tfrac{1}{V} = \log V , $$

    a number to know before the first step: an initial loss far above it means the model starts
    out confidently wrong, and the first steps are spent undoing that instead of learning.

    With GPT-2's tied head, the model below starts a little *under* $\log V$. The logit of
    character $v$ at a position is $\operatorname{LN}_f(x)\cdot W_{te}[v]$, and $x$ still holds the
    input character's own embedding, so the input character gets the logit
    $\approx \lVert W_{te}[v] \rVert^2 / \sigma > 0$ while the others get $\approx 0$: before any
    training the model guesses "the same character again". In this text, with its indented code,
    that is right for almost a third of the positions (runs of spaces). With an untied head the
    start is $\log V$.
    """),
    code(r"""
    cfg = GPTConfig(vocab_size=tokenizer.vocab_size, block_size=32, n_layer=2, n_head=4, n_embd=64)
    model = GPT(cfg, seed=0)
    print(model)

    def estimate_loss(model, data, batches=8, batch_size=32):
        rng = np.random.default_rng(123)               # the same windows at every call
        losses = [model.forward(*get_batch(data, batch_size, cfg.block_size, rng))[1]
                  for _ in range(batches)]
        return float(np.mean(losses))

    log_V = math.log(cfg.vocab_size)
    val_before = estimate_loss(model, val_ids)
    val_untied = estimate_loss(GPT(cfg.replace(tie_weights=False), seed=0), val_ids)
    print(f"validation loss at initialisation: {val_before:.3f} (tied head), "
          f"{val_untied:.3f} (untied);  log V = {log_V:.3f}")

    x, y = get_batch(val_ids, 64, cfg.block_size, np.random.default_rng(1))
    logits, _ = model.forward(x)
    own = np.take_along_axis(logits, x[..., None], axis=-1)
    print(f"mean logit of the input character {own.mean():+.2f}, of all characters {logits.mean():+.2f}; "
          f"positions whose next character repeats the current one: {(x == y).mean():.0%}")
    assert abs(val_untied - log_V) < 0.1 and log_V - 0.5 < val_before < log_V
    """),

    # -- 4. training ---------------------------------------------------------------------------
    md(r"""
    ## 4. Training with AdamW

    One step: clear the gradients, forward with targets (the mean cross-entropy), backward from it,
    clip the global gradient norm to 1 (a guard against a rare huge step), and an AdamW update.
    AdamW keeps running means of the gradient and of its square, corrected for their start at 0,
    and decays the weights separately from the gradient (only the matrices; not the biases,
    LayerNorm gains or embedding tables):

    $$
    m \leftarrow \beta_1 m + (1 - \beta_1)\, g, \qquad
    v \leftarrow \beta_2 v + (1 - \beta_2)\, g^2, \qquad
    p \leftarrow p\,(1 - \eta\lambda) - \eta\, \frac{m / (1 - \beta_1^t)}{\sqrt{v / (1 - \beta_2^t)} + \epsilon} .
    $$

    Each parameter moves by roughly $\eta$ per step whatever the scale of its gradient, which is
    why one learning rate suits embeddings, LayerNorm gains and matrices alike.
    """),
    code(r"""
    opt = AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1)
    rng = np.random.default_rng(0)
    losses = []
    start = time.perf_counter()
    for step in range(1, 301):
        x, y = get_batch(train_ids, batch_size=16, block_size=cfg.block_size, rng=rng)
        model.zero_grad()
        _, loss = model.forward(x, y)
        model.backward()                               # from the mean cross-entropy
        norm = clip_grad_norm(model.parameters(), 1.0)
        opt.step()
        losses.append(loss)
        if step == 1 or step % 50 == 0:
            print(f"step {step:3d}   loss {loss:.3f}   |grad| {norm:.2f}")
    print(f"{time.perf_counter() - start:.1f} s")

    val_after = estimate_loss(model, val_ids)
    print(f"validation loss: {val_before:.3f} before, {val_after:.3f} after")
    assert np.mean(losses[-20:]) < losses[0] - 1.0
    assert val_after < val_before - 1.0
    """),

    # -- 5. sampling ---------------------------------------------------------------------------
    md(r"""
    ## 5. Sampling

    To generate, feed a prompt, take the logits of the last position, divide them by a
    temperature $\tau$ (below 1 sharpens the distribution, above 1 flattens it), keep the $k$ most
    likely characters, sample one, append it, repeat. With `use_cache=True` each step computes one
    new position and attends to the keys and values kept from the earlier ones — the $T_q < T_k$
    case of notebook 02 — and must give exactly the tokens that recomputing the whole window does.
    A few hundred steps on 180,000 characters teach the model the look of the text — short common
    words such as "the", spaces, quotes and line breaks — not yet its spelling, let alone its sense:
    """),
    code(r"""
    prompt = np.array(tokenizer.encode("The "))
    cached = model.generate(prompt, max_new_tokens=120, temperature=0.8, top_k=10, seed=0, use_cache=True)
    recomputed = model.generate(prompt, max_new_tokens=120, temperature=0.8, top_k=10, seed=0, use_cache=False)
    print(tokenizer.decode(cached))
    assert np.array_equal(cached, recomputed)
    """),
]

# =============================================================================================
# writing
# =============================================================================================

NOTEBOOKS = {
    "01_backprop_by_hand.ipynb": BACKPROP,
    "02_attention.ipynb": ATTENTION,
    "03_training_a_gpt.ipynb": TRAINING,
}


def notebook(name: str, cells) -> nbformat.NotebookNode:
    """The notebook `name` of `cells`, without outputs, with ids stable across runs."""
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    prefix = name.split("_", 1)[0]
    nb.cells = []
    for i, cell in enumerate(cells):
        cell = nbformat.from_dict(dict(cell))
        cell.id = f"nb{prefix}-{i:02d}"
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def render(name: str) -> str:
    """The exact text of notebooks/<name> as this script writes it."""
    return nbformat.writes(notebook(name, NOTEBOOKS[name])) + "\n"


def main(argv=None) -> int:
    """Write every notebook; with --check, only report the ones whose file differs."""
    argv = sys.argv[1:] if argv is None else argv
    check = "--check" in argv
    stale = []
    for name in NOTEBOOKS:
        path = HERE / name
        text = render(name)
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(name)
        if not check:
            path.write_text(text, encoding="utf-8")
    verb = "out of date" if check else "written"
    print(f"{len(stale)} notebook(s) {verb}" + (": " + ", ".join(stale) if stale else ""))
    return 1 if check and stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
