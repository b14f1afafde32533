# %% [markdown]
# # 01 — Backpropagation by hand
#
# A GPT is a few kinds of layer repeated: Linear maps, LayerNorms, a GELU, attention, and a
# softmax cross-entropy at the top. This notebook derives the backward pass of four of them
# (attention has its own notebook, `02_attention.ipynb`) and checks each derivation three ways:
#
# 1. against npgpt's own backward (`npgpt.nn.linear_backward`, ...): nothing is redefined here,
#    so the formula in a markdown cell and the code in the library are held together;
# 2. against the **numerical gradient**, central differences in float64 (`npgpt.gradcheck`);
# 3. against **PyTorch's autograd**, when PyTorch is installed.
#
# The test suite runs this notebook from top to bottom; every `assert` below is a test.

# %%
import matplotlib.pyplot as plt
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


# %%
def torch_vjp(fn, inputs, dout):
    """PyTorch's answer to the same question: out = fn(*inputs) and the gradient of
    sum(out * dout) with respect to every input, all in float64."""
    ts = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in inputs]
    out = fn(*ts)
    out.backward(torch.as_tensor(dout, dtype=torch.float64))
    return out.detach().numpy(), [t.grad.numpy() for t in ts]


# %% [markdown]
# ## 1. The chain rule on a computation graph
#
# A network is a graph of small functions that ends in one number, the loss $L$. For a node
# $y = f(x)$ write $\bar y = \partial L / \partial y$ for the gradient that arrives from above: it
# has the shape of $y$, and the code calls it `dout`. The chain rule gives the gradient of the
# node's input:
#
# $$
# \bar x_i \;=\; \sum_j \frac{\partial L}{\partial y_j}\,\frac{\partial y_j}{\partial x_i}
#         \;=\; \sum_j \bar y_j\, J_{ji}, \qquad\text{that is}\qquad \bar x = J^\top \bar y .
# $$
#
# A backward function never builds the Jacobian $J$ (for a $(B, T, C)$ activation it would have
# $(BTC)^2$ entries); it computes the product $J^\top \bar y$ straight from the structure of $f$.
# Two rules are all that a whole model needs:
#
# * **in series** ($y = f(x)$, then $z = g(y)$): run $g$'s backward, then $f$'s — the forward
#   read from the bottom up;
# * **fan-out** ($x$ is used twice, as in the residual stream $x + f(x)$, or a weight shared by
#   every position): the gradients of the uses **add**.
#
# **How to check a backward.** With upstream gradient $\bar y$, the backward of $f$ returns the
# exact gradient of the scalar $\ell(x) = \sum_j f(x)_j\, \bar y_j$, because
# $\partial \ell / \partial x_i = \sum_j \bar y_j\, \partial f_j / \partial x_i$. A scalar can be
# differentiated numerically, one coordinate at a time:
#
# $$
# \frac{\partial \ell}{\partial x_i} \approx \frac{\ell(x + h e_i) - \ell(x - h e_i)}{2h},
# \qquad \text{error } O(h^2).
# $$
#
# `numerical_gradient(f, x, dout)` computes this (in float64, with $h = 10^{-5}$: truncation
# $\sim h^2 = 10^{-10}$, rounding $\sim 10^{-16}/h = 10^{-11}$), and
# `rel_error(a, b)` $= \max|a - b| \,/\, \max(|a| + |b|)$ compares it with the analytic one.
#
# A small graph to start: $z = x \odot w$, $a = \tanh z$, $y = a + x$ (a residual connection).
# Reading it from the bottom up:
#
# $$
# \bar a = \bar y, \qquad
# \bar z = \bar a \odot (1 - a^2), \qquad
# \bar w = \bar z \odot x, \qquad
# \bar x = \underbrace{\bar z \odot w}_{\text{through } z} + \underbrace{\bar y}_{\text{skip path}} .
# $$

# %%
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

# %% [markdown]
# ## 2. Linear: $y = xW + b$
#
# Shapes: $x: (N, \text{in})$, $W: (\text{in}, \text{out})$, $b: (\text{out})$, so
# $y: (N, \text{out})$ — npgpt stores $W$ as (in, out), as GPT-2 does. In index form
#
# $$ y_{nj} = \sum_i x_{ni} W_{ij} + b_j . $$
#
# Differentiate $\ell = \sum_{n,j} \bar y_{nj}\, y_{nj}$ with respect to each variable:
#
# $$
# \frac{\partial \ell}{\partial x_{ni}} = \sum_j \bar y_{nj} W_{ij}
# \;\Longrightarrow\; \bar x = \bar Y W^\top
# \qquad (N, \text{out})\,(\text{out}, \text{in}) = (N, \text{in})
# $$
#
# $$
# \frac{\partial \ell}{\partial W_{ij}} = \sum_n x_{ni}\, \bar y_{nj}
# \;\Longrightarrow\; \bar W = X^\top \bar Y
# \qquad (\text{in}, N)\,(N, \text{out}) = (\text{in}, \text{out})
# $$
#
# $$
# \frac{\partial \ell}{\partial b_j} = \sum_n \bar y_{nj}
# \;\Longrightarrow\; \bar b = \textstyle\sum_n \bar Y_{n,:}
# \qquad (\text{out})
# $$
#
# The shapes nearly write the formulas: each gradient has the shape of its variable, and there
# is one way to multiply $\bar Y$ by the other factor that gives it. In a Transformer $x$ is
# $(B, T, \text{in})$ and the same $W$ acts at every position: flatten the rows to
# $N = B \cdot T$. $\bar W$ and $\bar b$ are sums over all $B \cdot T$ rows (fan-out of a shared
# weight), while $\bar x$ keeps the shape $(B, T, \text{in})$. This is
# `npgpt.nn.linear_backward`, line for line:

# %%
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

# %% [markdown]
# `check_layer(forward, backward, inputs)` does the whole check in one call: it draws a random
# upstream gradient, runs the backward, and compares each returned gradient with the numerical
# one. The keys are the inputs' positions: `d0` is $\bar x$, `d1` is $\bar W$, `d2` is $\bar b$.

# %%
errors = check_layer(nn.linear_forward, nn.linear_backward, [x, W, b])
print({k: f"{v:.1e}" for k, v in errors.items()})
assert max(errors.values()) < 1e-7

if torch is not None:
    _, (tdx, tdW, tdb) = torch_vjp(lambda x, W, b: x @ W + b, [x, W, b], dy)
    for name, ours, theirs in [("dx", dx, tdx), ("dW", dW, tdW), ("db", db, tdb)]:
        print(f"{name} vs PyTorch: {rel_error(ours, theirs):.1e}")
        assert rel_error(ours, theirs) < 1e-12

# %% [markdown]
# ## 3. Softmax and cross-entropy, fused
#
# For one row of logits $z \in \mathbb{R}^V$ and its target class $y$:
#
# $$
# p_v = \frac{e^{z_v}}{\sum_k e^{z_k}}, \qquad
# \ell = -\log p_y = -z_y + \log \sum_k e^{z_k} .
# $$
#
# The derivative of the log-sum-exp is the softmax itself,
# $\partial_{z_v} \log \sum_k e^{z_k} = e^{z_v} / \sum_k e^{z_k} = p_v$, so
#
# $$
# \frac{\partial \ell}{\partial z_v} = p_v - \mathbb{1}[v = y],
# \qquad \bar z = p - \operatorname{onehot}(y).
# $$
#
# Each row of $\bar z$ sums to zero and lies in $[-1, 1]$. Going through the log's backward and
# then the softmax's gives the same vector after a cancellation, but on the way it divides by
# $p_y$, which underflows to 0 for a confident wrong prediction. Fusing the two avoids that.
#
# **The mean over rows.** The loss of a batch is the mean of its $N$ rows,
# $L = \frac{1}{N}\sum_n \ell_n$, so every row's gradient carries a $1/N$:
#
# $$ \bar Z = \tfrac{1}{N}\,\bigl(P - \operatorname{onehot}(Y)\bigr). $$
#
# This is where the chain rule starts: `cross_entropy_backward(1.0, cache)` returns
# $\bar Z$ with the $1/N$ in it, and every layer below only passes it on.
#
# **Stability.** $\log \sum_k e^{z_k} = m + \log \sum_k e^{z_k - m}$ with $m = \max_k z_k$:
# the same number, but no exponential can overflow.

# %%
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

# %% [markdown]
# The same gradient in two steps, through npgpt's separate softmax: the log's backward is
# $\bar p = -\operatorname{onehot}(y) / p \,/\, N$, then the softmax's backward
# $\bar z = p \odot (\bar p - \langle \bar p, p \rangle)$. Equal on ordinary logits — but scale
# the logits up until some $p_y$ underflows to 0, and the two-step route produces `inf` and
# `nan` while the fused one stays finite.

# %%
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

# %% [markdown]
# **Label smoothing** with $\varepsilon$ trains towards the target distribution
# $q = (1 - \varepsilon)\operatorname{onehot}(y) + \varepsilon / V$ instead of the one-hot vector.
# Since $q$ still sums to 1,
#
# $$
# \ell = -\sum_v q_v \log p_v = -\sum_v q_v z_v + \log\sum_k e^{z_k},
# \qquad \bar z = p - q :
# $$
#
# the same form, with $q$ for the one-hot. The loss no longer reaches 0 (its minimum is at
# $p = q$, where the gradient vanishes), so the model is discouraged from pushing its logits to
# infinity. **Ignored positions** (padding, `targets == -100`) contribute no loss and no
# gradient, and the mean is over the $N_{\text{valid}}$ rows that remain — as in
# `torch.nn.functional.cross_entropy`.

# %%
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

# %% [markdown]
# ## 4. LayerNorm
#
# Each row $x \in \mathbb{R}^C$ is normalised, then scaled and shifted (biased variance, $\epsilon$
# inside the square root, as `torch.nn.LayerNorm`):
#
# $$
# \mu = \tfrac1C \textstyle\sum_i x_i, \qquad
# \sigma^2 = \tfrac1C \textstyle\sum_i (x_i - \mu)^2, \qquad
# r = (\sigma^2 + \epsilon)^{-1/2}, \qquad
# \hat x_i = (x_i - \mu)\, r, \qquad
# y_i = w_i \hat x_i + b_i .
# $$
#
# The parameters are easy: $\bar w = \sum_{\text{rows}} \bar y \odot \hat x$ and
# $\bar b = \sum_{\text{rows}} \bar y$. For $x$, first go through the scale:
# $g = \partial \ell / \partial \hat x = \bar y \odot w$. The hard part is that $\mu$ and $r$
# depend on **every** element of the row, so $\hat x_j$ depends on every $x_i$:
#
# $$
# \frac{\partial \mu}{\partial x_i} = \frac1C, \qquad
# \frac{\partial \sigma^2}{\partial x_i} = \frac{2 (x_i - \mu)}{C}
# \;\;\bigl(\text{the term through } \mu \text{ is } -\tfrac{2}{C^2}\textstyle\sum_j (x_j - \mu) = 0\bigr), \qquad
# \frac{\partial r}{\partial x_i} = -\tfrac12 (\sigma^2 + \epsilon)^{-3/2}\,\frac{2 (x_i - \mu)}{C} = -\frac{r^3 (x_i - \mu)}{C},
# $$
#
# $$
# \frac{\partial \hat x_j}{\partial x_i}
# = r\Bigl(\delta_{ij} - \frac1C\Bigr) + (x_j - \mu)\,\frac{\partial r}{\partial x_i}
# = r\Bigl(\delta_{ij} - \frac1C - \frac{\hat x_j \hat x_i}{C}\Bigr).
# $$
#
# Contract with $g$, $\bar x_i = \sum_j g_j\, \partial \hat x_j / \partial x_i$:
#
# $$
# \boxed{\;\bar x = r \,\bigl(g - \operatorname{mean}(g) - \hat x \odot \operatorname{mean}(g \odot \hat x)\bigr)\;}
# $$
#
# (means over the $C$ entries of each row). Three terms: the direct path, the path through
# $\mu$, and the path through $r$. `layernorm_backward` keeps $\mu$ and $r$ from the forward and
# recomputes the cheap $\hat x$.

# %%
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


# %% [markdown]
# **What LayerNorm does to one coordinate.** Fix the other $C - 1$ entries of a row and move
# $x_0$: the normalised $\hat x_0$ is a bounded, sigmoid-like function of it. Its bound follows
# from $\sum_i \hat x_i = 0$ and $\sum_i \hat x_i^2 = C$ (up to $\epsilon$): the largest one
# entry can be is $\sqrt{C - 1}$, reached when all the others are equal. Its slope
# $\partial \hat x_0 / \partial x_0 = r\,(1 - \tfrac1C - \tfrac{\hat x_0^2}{C})$ — the
# diagonal of the Jacobian above — is what `layernorm_backward` returns for an upstream gradient
# $\bar y = e_0$ (with $w = 1$, $b = 0$); it vanishes where $\hat x_0$ saturates.

# %%
C = 8
others = rng.standard_normal(C - 1)
grid = np.linspace(-12, 12, 241)
rows = np.column_stack([grid, np.tile(others, (len(grid), 1))])       # (241, C): x_0 varies
y, cache = nn.layernorm_forward(rows, np.ones(C), np.zeros(C))
e0 = np.zeros_like(rows)
e0[:, 0] = 1.0
slope = nn.layernorm_backward(e0, cache)[0][:, 0]                      # d y_0 / d x_0, row by row
assert np.abs(y).max() <= np.sqrt(C - 1)
assert np.allclose(slope[1:-1], (y[2:, 0] - y[:-2, 0]) / (grid[2:] - grid[:-2]), atol=2e-3)

fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
axes[0].plot(grid, y[:, 0], label="y_0 = LN(x)_0")
for sign in (1, -1):
    axes[0].axhline(sign * np.sqrt(C - 1), color="gray", ls=":", label="±sqrt(C - 1)" if sign > 0 else None)
axes[0].set_xlabel("x_0 (the other 7 entries fixed)")
axes[0].legend(fontsize=8)
axes[1].plot(grid, slope, color="C1")
axes[1].set_xlabel("x_0")
axes[1].set_title("d y_0 / d x_0 from layernorm_backward", fontsize=10)
for ax in axes:
    ax.grid(alpha=0.3)
plt.tight_layout()
plt.show()


# %% [markdown]
# ### Why the upstream gradient must be random
#
# It is tempting to check a layer with $\bar y = \mathbf 1$ (that is, $\ell = \sum y$). For a
# LayerNorm at its initial parameters $w = \mathbf 1$, $b = \mathbf 0$ — the state of every fresh
# model — this checks nothing: $\sum_i \hat x_i = 0$ for every row, so
# $\ell = \sum_i (\hat x_i + b_i)$ does not depend on $x$ at all, the true $\bar x$ is exactly 0,
# and $g = \mathbf 1$ is constant along the row, so $g - \operatorname{mean}(g) = 0$ as well.
# **Any** backward whose terms cancel for a constant $g$ returns zeros and agrees with the
# numerical gradient — such as this one, which forgets that $r$ depends on $x$ (the third term):

# %%
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

# %% [markdown]
# (Relative errors are no help here: both sides are rounding noise around 0, and the ratio of two
# noises is $O(1)$ for the right backward too.) A random $\bar y$, and random $w$, make $g$ vary
# along each row, and all three terms matter. `check_layer` draws such a $\bar y$ itself, and
# `npgpt.gradcheck` gives LayerNorms random parameters for the same reason (with $w = \mathbf 1$ a
# backward that forgets the factor $w$ would pass, too):

# %%
w, b = rng.standard_normal(6), rng.standard_normal(6)
right_errors = check_layer(nn.layernorm_forward, nn.layernorm_backward, [x, w, b])
wrong_errors = check_layer(nn.layernorm_forward, layernorm_backward_wrong, [x, w, b])
print("right:", {k: f"{v:.1e}" for k, v in right_errors.items()})
print("wrong:", {k: f"{v:.1e}" for k, v in wrong_errors.items()})
assert max(right_errors.values()) < 1e-7
assert wrong_errors["d0"] > 1e-2                       # caught: dx is wrong at O(1)

# %% [markdown]
# ## 5. GELU, the tanh approximation
#
# GELU weighs its input by the probability that a standard normal variable is below it,
# $\operatorname{GELU}(x) = x\,\Phi(x)$. GPT-2 uses the tanh approximation of $\Phi$:
#
# $$
# y = \tfrac12\, x\,\bigl(1 + \tanh u\bigr), \qquad u = \sqrt{2/\pi}\,\bigl(x + 0.044715\, x^3\bigr).
# $$
#
# It acts element by element, so its Jacobian is diagonal and $\bar x = \bar y \odot dy/dx$. The
# product rule, then the chain rule through $\tanh$ (with $\tanh'(u) = 1 - \tanh^2 u$), give,
# with $t = \tanh u$:
#
# $$
# \frac{dy}{dx} = \tfrac12 (1 + t) \;+\; \tfrac12\, x\, (1 - t^2)\, \sqrt{2/\pi}\,\bigl(1 + 3 \cdot 0.044715\, x^2\bigr).
# $$
#
# The forward keeps $t$ in its cache, so the backward needs no second $\tanh$.

# %%
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

# %% [markdown]
# The three activations npgpt offers, and their slopes as the backward functions return them
# (with an upstream gradient of ones: the Jacobian is diagonal, so that is the slope itself).
# GELU is a smooth ReLU that lets a little negative signal through: it has its minimum at
# $x \approx -0.75$ (its slope crosses 0 there and is negative to the left), and its slope
# overshoots 1 around $x \approx 1.4$. The tanh form is indistinguishable at this scale.

# %%
grid = np.linspace(-4, 4, 801)
ones = np.ones_like(grid)
curves = {}
for name, (forward, backward) in {"ReLU": (nn.relu_forward, nn.relu_backward),
                                  "GELU (exact)": (nn.gelu_forward, nn.gelu_backward),
                                  "GELU (tanh)": (nn.gelu_tanh_forward, nn.gelu_tanh_backward)}.items():
    y, cache = forward(grid)
    curves[name] = (y, backward(ones, cache))
    smooth = np.abs(grid[1:-1]) > 0.01                               # away from ReLU's kink
    finite = (y[2:] - y[:-2]) / (grid[2:] - grid[:-2])
    assert np.allclose(curves[name][1][1:-1][smooth], finite[smooth], atol=1e-4), name

fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
for (name, (y, dy)), style in zip(curves.items(), ["-", "-", "--"]):
    axes[0].plot(grid, y, style, label=name)
    axes[1].plot(grid, dy, style, label=name)
axes[0].set_title("activation", fontsize=10)
axes[1].set_title("slope, from the backward", fontsize=10)
for ax in axes:
    ax.set_xlabel("x")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
plt.tight_layout()
plt.show()


# %% [markdown]
# ## 6. Every layer of npgpt, checked
#
# `npgpt.gradcheck.check_all()` runs the same check on every Module of `npgpt.nn` — the four
# layers above, and embeddings, softmax, dropout (with its mask held fixed), attention in its
# causal, padded, dropout and cross forms, the MLP, the GPT block, and the Transformer's encoder
# and decoder layers — on tiny float64 inputs, for the input gradient and every parameter's.
# The command `npgpt gradcheck` prints the same table.

# %%
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

# %% [markdown]
# ## Exercises
#
# 1. `npgpt exercise start linear`, then `relu`, `gelu_tanh`, `softmax`, `cross_entropy`,
#    `layernorm`, `dropout`: write each layer's forward and backward yourself; the checker runs
#    them against the numerical gradient, as this notebook does.
# 2. Derive the backward of RMSNorm, $y = w \odot x / \sqrt{\operatorname{mean}(x^2) + \epsilon}$
#    (LayerNorm without the mean), and check it with `check_layer`.
# 3. In section 4's wrong backward, which upstream gradients besides $\bar y = \mathbf 1$ would
#    let it pass? (Hint: what must $g = \bar y \odot w$ be orthogonal to?)
# 4. Check the two-step softmax + log route of section 3 in float32: at what logit scale does it
#    first produce an `inf`?
