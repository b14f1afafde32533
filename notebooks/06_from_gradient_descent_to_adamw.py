# %% [markdown]
# # 06 — From gradient descent to AdamW
#
# Every model in npgpt is trained by the same few lines: a backward fills `p.grad`, an optimizer
# moves `p.data`. This notebook builds the optimizer up one idea at a time — plain gradient
# descent, momentum, Adam and its bias correction, decoupled weight decay — on a problem small
# enough to draw: an ill-conditioned quadratic in two dimensions, where each method's path can
# be watched on the contour lines and compared with a closed form. Then the learning-rate
# schedules of GPT training and of the Transformer paper, and gradient clipping. Each step is
# npgpt's own (`npgpt.optim`), and, where PyTorch is installed, checked equal to `torch.optim`.

# %%
import math

import matplotlib.pyplot as plt
import numpy as np

import npgpt
from npgpt.gradcheck import rel_error
from npgpt.nn import Parameter
from npgpt.optim import SGD, AdamW, Noam, WarmupCosine, clip_grad_norm

try:
    import torch
except ImportError:        # PyTorch is optional: the closed forms stand on their own
    torch = None

np.set_printoptions(precision=4, suppress=True, linewidth=110)
print("npgpt kernels:", npgpt.kernels.current_backend(),
      "| PyTorch:", torch.__version__ if torch is not None else "not installed")

# %% [markdown]
# ## 1. The problem: an ill-conditioned valley
#
# $$
# f(x) = \tfrac12\, x^\top A x, \qquad A = \begin{pmatrix} 1 & 0 \\ 0 & 20 \end{pmatrix}, \qquad
# \nabla f(x) = A x ,
# $$
#
# a valley twenty times steeper across ($x_2$) than along ($x_1$): its **condition number**
# $\kappa = \lambda_{\max} / \lambda_{\min} = 20$. The loss surface of a network is not a
# quadratic, but near a minimum it looks like one, with a condition number in the thousands.
# One helper runs any npgpt optimizer on it: the gradient is written into `p.grad`, as a
# backward would, and `step()` is called.

# %%
A = np.diag([1.0, 20.0])
x0 = np.array([-8.0, 2.0])

def f(x):
    return 0.5 * np.einsum("...i,ij,...j->...", x, A, x)

def path(make_optimizer, steps=60, start=x0):
    """The points visited by an npgpt optimizer on f, from `start`: (steps + 1, 2)."""
    p = Parameter(np.array(start, dtype=np.float64), decay=True)
    opt = make_optimizer([p])
    points = [p.data.copy()]
    for _ in range(steps):
        p.grad[...] = A @ p.data                  # the backward of f
        opt.step()
        points.append(p.data.copy())
    return np.array(points)

# %% [markdown]
# ## 2. Gradient descent
#
# $x \leftarrow x - \eta \nabla f(x) = (I - \eta A)\,x$, so after $t$ steps
#
# $$
# x_t = (I - \eta A)^t\, x_0 : \qquad \text{each eigen-direction shrinks by } (1 - \eta \lambda_i) \text{ per step.}
# $$
#
# It converges only if $\lvert 1 - \eta\lambda_i \rvert < 1$ for every $i$, that is
# $\eta < 2 / \lambda_{\max} = 0.1$: the **steep** direction limits the step size, and the
# **flat** one then crawls at $1 - \eta\lambda_{\min} \ge 0.9$ per step. The best constant step,
# $\eta = 2 / (\lambda_{\min} + \lambda_{\max})$, makes both shrink by
# $(\kappa - 1)/(\kappa + 1) = 0.905$ per step. npgpt's `SGD` against the closed form:

# %%
for lr in (0.02, 0.09, 0.105):
    xs = path(lambda ps, lr=lr: SGD(ps, lr=lr), steps=60)
    closed = np.array([np.linalg.matrix_power(np.eye(2) - lr * A, t) @ x0 for t in range(61)])
    print(f"lr = {lr:5.3f}: factors {1 - lr * np.diag(A)};  f after 60 steps {f(xs[-1]):10.3g};  "
          f"vs closed form {rel_error(xs, closed):.1e}")
    assert rel_error(xs, closed) < 1e-12
assert f(path(lambda ps: SGD(ps, lr=0.105))[-1]) > f(x0)    # past 2 / lambda_max: divergence

# %% [markdown]
# ## 3. Momentum
#
# The heavy ball (Polyak), in the form `torch.optim.SGD` and npgpt use:
#
# $$
# b_{t} = \mu\, b_{t-1} + \nabla f(x_{t-1}), \qquad x_{t} = x_{t-1} - \eta\, b_{t}, \qquad b_0 = 0 .
# $$
#
# The velocity $b$ sums past gradients with weights $\mu^k$: along the flat direction, where the
# gradients agree step after step, it grows to $1/(1-\mu)$ times the gradient; across the
# valley, where they alternate in sign, they cancel. On a quadratic the pair $(x, b)$ evolves
# linearly — per eigen-direction, with $g = \lambda x$,
#
# $$
# \begin{pmatrix} x_t \\ b_t \end{pmatrix}
# = \begin{pmatrix} 1 - \eta\lambda & -\eta\mu \\ \lambda & \mu \end{pmatrix}
#   \begin{pmatrix} x_{t-1} \\ b_{t-1} \end{pmatrix},
# $$
#
# and with $\mu = \bigl(\frac{\sqrt\kappa - 1}{\sqrt\kappa + 1}\bigr)^2$,
# $\eta = \frac{4}{(\sqrt{\lambda_{\max}} + \sqrt{\lambda_{\min}})^2}$ the error shrinks like
# $\frac{\sqrt\kappa - 1}{\sqrt\kappa + 1} = 0.635$ per step instead of $0.905$: the square root
# of the condition number instead of the condition number.

# %%
kappa = 20.0
mu = ((math.sqrt(kappa) - 1) / (math.sqrt(kappa) + 1)) ** 2
lr_mom = 4 / (math.sqrt(20.0) + 1) ** 2
xs = path(lambda ps: SGD(ps, lr=lr_mom, momentum=mu), steps=60)

state = np.zeros((2, 2))                                    # rows: (x, b) for each eigen-direction
state[:, 0] = x0
closed = [x0]
for _ in range(60):
    for i, lam in enumerate(np.diag(A)):
        M = np.array([[1 - lr_mom * lam, -lr_mom * mu], [lam, mu]])
        state[i] = M @ state[i]
    closed.append(state[:, 0].copy())
print(f"momentum mu = {mu:.3f}, lr = {lr_mom:.3f}: vs the linear recurrence {rel_error(xs, np.array(closed)):.1e}")
assert rel_error(xs, np.array(closed)) < 1e-12

gd = path(lambda ps: SGD(ps, lr=2 / 21), steps=60)
print(f"f after 60 steps: best gradient descent {f(gd[-1]):.1e}, momentum {f(xs[-1]):.1e}")
assert f(xs[-1]) < 1e-6 * f(gd[-1])

# %% [markdown]
# ## 4. Adam, and why it corrects its bias
#
# Adam keeps two running means per coordinate, of the gradient and of its square, and steps by
# their ratio:
#
# $$
# m_t = \beta_1 m_{t-1} + (1 - \beta_1) g_t, \qquad
# v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2, \qquad
# x_t = x_{t-1} - \eta\, \frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon},
# \qquad \hat m_t = \frac{m_t}{1 - \beta_1^t}, \quad \hat v_t = \frac{v_t}{1 - \beta_2^t} .
# $$
#
# **The bias correction.** With $m_0 = 0$, $m_t = (1 - \beta_1) \sum_{s \le t} \beta_1^{t-s} g_s$;
# for gradients of a constant mean $\mathbb E[g]$ this has mean
# $(1 - \beta_1^t)\,\mathbb E[g]$ — too small by the factor $1 - \beta_1^t$ early on, which
# $\hat m_t$ divides out (the same for $v$). At $t = 1$: $\hat m_1 = g_1$, $\hat v_1 = g_1^2$,
# and the first step is
#
# $$
# x_1 - x_0 = -\eta\, \frac{g_1}{\lvert g_1 \rvert + \epsilon} \approx -\eta \operatorname{sign}(g_1) :
# $$
#
# **exactly $\eta$ per coordinate, whatever the gradient's scale.** Without the correction it
# would be $\eta (1 - \beta_1)/\sqrt{1 - \beta_2} \approx 3.2\,\eta$ for the default betas.
# npgpt's `AdamW`, first step, for gradients from $10^{-4}$ to $10^4$:

# %%
lr = 0.01
for scale in (1e-4, 1.0, 1e4):
    p = Parameter(np.zeros(3), decay=True)
    opt = AdamW([p], lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    g = scale * np.array([3.0, -0.5, 1.0])
    p.grad[...] = g
    opt.step()
    print(f"gradient scale {scale:6.0e}: first step {p.data}  (-lr * sign(g) = {-lr * np.sign(g)})")
    assert np.allclose(p.data, -lr * g / (np.abs(g) + 1e-8), rtol=1e-12, atol=0)
print(f"without bias correction the first step would be {(1 - 0.9) / math.sqrt(1 - 0.999):.2f} x lr")

# %% [markdown]
# On the valley, Adam's per-coordinate normalisation makes its first steps diagonal — the same
# size along and across — and, with a constant $\eta$, it keeps circling the minimum at a
# distance of about $\eta$ rather than converging (one reason to decay the learning rate,
# section 7).

# %% [markdown]
# ## 5. The paths, drawn

# %%
runs = {
    "gradient descent, lr 0.02": path(lambda ps: SGD(ps, lr=0.02)),
    "gradient descent, lr 0.095": path(lambda ps: SGD(ps, lr=0.095)),
    f"momentum {mu:.2f}, lr {lr_mom:.3f}": path(lambda ps: SGD(ps, lr=lr_mom, momentum=mu)),
    "Adam(W), lr 0.5, no decay": path(lambda ps: AdamW(ps, lr=0.5, betas=(0.9, 0.999), weight_decay=0.0)),
}
g1, g2 = np.meshgrid(np.linspace(-9, 2, 200), np.linspace(-3, 3, 120))
levels = f(np.array([[-8.0 * 0.8 ** k, 0.0] for k in range(14)]))[::-1]

fig, axes = plt.subplots(2, 2, figsize=(11, 6.5), sharex=True, sharey=True)
for ax, (name, xs) in zip(axes.flat, runs.items()):
    ax.contour(g1, g2, f(np.stack([g1, g2], axis=-1)), levels=levels, colors="0.75", linewidths=0.8)
    ax.plot(xs[:, 0], xs[:, 1], "o-", ms=2.5, lw=1)
    ax.plot(0, 0, "k*", ms=10)
    ax.set_title(f"{name}: f = {f(xs[-1]):.1e} after {len(xs) - 1} steps", fontsize=10)
for ax in axes[1]:
    ax.set_xlabel("x1 (flat: lambda = 1)")
for ax in axes[:, 0]:
    ax.set_ylabel("x2 (steep: lambda = 20)")
plt.tight_layout()
plt.show()

fig, ax = plt.subplots(figsize=(7, 3.4))
for name, xs in runs.items():
    ax.semilogy(f(xs), label=name)
ax.set_xlabel("step")
ax.set_ylabel("f(x)")
ax.legend(fontsize=8)
ax.grid(alpha=0.3)
plt.show()

# %% [markdown]
# ## 6. Weight decay: AdamW is not Adam with L2
#
# An L2 penalty $\frac\lambda2 \lVert x \rVert^2$ adds $\lambda x$ to the gradient. With plain
# gradient descent that is the same as shrinking the weights by $(1 - \eta\lambda)$ each step.
# With Adam it is not: the added $\lambda x$ goes through the division by $\sqrt{\hat v}$, so a
# weight whose gradients are large (large $\hat v$) is hardly decayed at all. Loshchilov & Hutter
# **decouple** the decay from the gradient (AdamW):
#
# $$
# x \leftarrow x\,(1 - \eta\lambda) - \eta\, \frac{\hat m}{\sqrt{\hat v} + \epsilon} ,
# $$
#
# every weight shrinks by the same factor, whatever its gradients. npgpt's `AdamW` does this
# (only for parameters with `p.decay`: matrices, not biases, LayerNorm gains or embedding
# tables). With a zero gradient the Adam part vanishes ($\hat m = 0$) and one step is exactly
# the factor:

# %%
p = Parameter(np.array([2.0, -3.0]), decay=True)
opt = AdamW([p], lr=0.1, weight_decay=0.5)
opt.step()                                                  # p.grad is 0
print(p.data, "=", np.array([2.0, -3.0]) * (1 - 0.1 * 0.5))
assert np.array_equal(p.data, np.array([2.0, -3.0]) * (1 - 0.1 * 0.5))

# %% [markdown]
# Now two groups of 1,000 weights, all starting at 1, fed pure noise gradients (mean 0) of
# standard deviation 1 and 100: only the decay pulls them towards 0 on average. AdamW shrinks
# both groups alike, by $(1 - \eta\lambda)^t$; Adam with the L2 term in the gradient (npgpt's
# update with `weight_decay=0` and $\lambda x$ added to `p.grad` by hand, which is what
# `torch.optim.Adam(weight_decay=...)` computes) decays the noisy group hardly at all:

# %%
lr, wd, steps = 0.01, 0.5, 300
noise = np.concatenate([np.ones(1000), 100 * np.ones(1000)])      # the gradient scale of each weight

def decay_run(decoupled, seed=0):
    rng = np.random.default_rng(seed)
    p = Parameter(np.ones(2000), decay=True)
    opt = AdamW([p], lr=lr, weight_decay=wd if decoupled else 0.0)
    means = [(1.0, 1.0)]
    for _ in range(steps):
        g = noise * rng.standard_normal(2000)
        p.grad[...] = g if decoupled else g + wd * p.data     # Adam + L2: the penalty's gradient
        opt.step()
        means.append((p.data[:1000].mean(), p.data[1000:].mean()))
    return np.array(means)

adamw, adam_l2 = decay_run(True), decay_run(False)
expected = (1 - lr * wd) ** steps
print(f"after {steps} steps, mean weight (gradient noise 1 | 100):  AdamW {adamw[-1]},  "
      f"Adam + L2 {adam_l2[-1]};  (1 - lr wd)^t = {expected:.3f}")
assert np.allclose(adamw[-1], expected, atol=0.03)
assert adam_l2[-1, 1] > 0.9 and adam_l2[-1, 0] < 0.5

fig, ax = plt.subplots(figsize=(7, 3.4))
for run, style, name in [(adamw, "-", "AdamW"), (adam_l2, "--", "Adam + L2")]:
    ax.plot(run[:, 0], "C0" + style, label=f"{name}, gradient noise 1")
    ax.plot(run[:, 1], "C3" + style, label=f"{name}, gradient noise 100")
ax.plot((1 - lr * wd) ** np.arange(steps + 1), "k:", label="(1 - lr wd)^t")
ax.set_xlabel("step")
ax.set_ylabel("mean weight")
ax.legend(fontsize=8)
ax.grid(alpha=0.3)
plt.show()

# %% [markdown]
# **npgpt's steps are torch.optim's.** The same parameters, the same sequence of random
# gradients, ten steps, in float64: `SGD` with momentum, Nesterov and weight decay, `AdamW`, and
# Adam + L2 against `torch.optim.Adam(weight_decay=...)`.

# %%
if torch is not None:
    rng = np.random.default_rng(0)
    shapes = [(4, 3), (3,), (2, 5)]
    start = [rng.standard_normal(s) for s in shapes]
    grads = [[rng.standard_normal(s) for s in shapes] for _ in range(10)]

    def ours(make, l2=0.0):
        ps = [Parameter(a.copy(), decay=True) for a in start]
        opt = make(ps)
        for gs in grads:
            for p, g in zip(ps, gs):
                p.grad[...] = g + l2 * p.data
            opt.step()
        return [p.data for p in ps]

    def theirs(make):
        ts = [torch.tensor(a, requires_grad=True) for a in start]
        opt = make(ts)
        for gs in grads:
            for t, g in zip(ts, gs):
                t.grad = torch.tensor(g)
            opt.step()
        return [t.detach().numpy() for t in ts]

    sgd = dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)
    pairs = {
        "SGD momentum, nesterov, wd": (ours(lambda ps: SGD(ps, **sgd)), theirs(lambda ts: torch.optim.SGD(ts, **sgd))),
        "AdamW": (ours(lambda ps: AdamW(ps, lr=0.01, betas=(0.9, 0.95), weight_decay=0.1)),
                  theirs(lambda ts: torch.optim.AdamW(ts, lr=0.01, betas=(0.9, 0.95), weight_decay=0.1))),
        "Adam + L2": (ours(lambda ps: AdamW(ps, lr=0.01, weight_decay=0.0), l2=0.1),
                      theirs(lambda ts: torch.optim.Adam(ts, lr=0.01, weight_decay=0.1))),
    }
    for name, (a, b) in pairs.items():
        err = max(rel_error(x, y) for x, y in zip(a, b))
        print(f"{name:28s} vs torch.optim: {err:.1e}")
        assert err < 1e-12
else:
    print("PyTorch is not installed: the comparison with torch.optim is skipped")

# %% [markdown]
# ## 7. Learning-rate schedules
#
# A constant learning rate is rarely best: large steps early make progress, small steps late
# settle into the minimum (Adam circling it in section 5). And the very first steps are
# dangerous: Adam's $\hat v$ is estimated from a handful of gradients, so a **warmup** grows
# $\eta$ linearly from near 0. Two schedules, both callables of the step $t = 1, 2, \ldots$:
#
# * `WarmupCosine` (GPT-2/3, nanoGPT): linear warmup to $\eta_{\max}$ over $W$ steps, then a
#   half cosine down to $\eta_{\min}$ at step $T$:
#   $\eta_t = \eta_{\min} + \tfrac12 \bigl(1 + \cos \pi \tfrac{t - W}{T - W}\bigr)(\eta_{\max} - \eta_{\min})$.
# * `Noam` (the Transformer paper, section 5.3):
#   $\eta_t = c\, d_{\text{model}}^{-1/2} \min\bigl(t^{-1/2},\; t\,W^{-3/2}\bigr)$: linear up to
#   $t = W$, where the two branches meet, then decaying as $1/\sqrt t$.

# %%
sched_cosine = WarmupCosine(max_lr=6e-4, warmup_steps=200, total_steps=2000, min_lr=6e-5)
sched_noam = Noam(d_model=512, warmup_steps=4000, factor=1.0)
t = np.arange(1, 2001)

assert math.isclose(sched_cosine(200), 6e-4) and math.isclose(sched_cosine(2000), 6e-5)
assert math.isclose(sched_cosine(1100), (6e-4 + 6e-5) / 2)             # halfway down the cosine
assert math.isclose(sched_cosine(1), 6e-4 / 200)
noam_t = np.array([sched_noam(int(s)) for s in range(1, 20001)])
assert int(np.argmax(noam_t)) + 1 == 4000 and math.isclose(noam_t.max(), (512 * 4000) ** -0.5)
assert math.isclose(sched_noam(16000) / sched_noam(4000), 0.5)          # 1/sqrt(t): 4x the steps, half the rate

fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
axes[0].plot(t, [sched_cosine(int(s)) for s in t])
axes[0].axvline(200, color="gray", ls=":")
axes[0].set_title("WarmupCosine(6e-4, warmup 200, total 2000, min 6e-5)", fontsize=10)
axes[1].plot(np.arange(1, 20001), noam_t)
axes[1].axvline(4000, color="gray", ls=":")
axes[1].set_title("Noam(d_model 512, warmup 4000)", fontsize=10)
for ax in axes:
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    ax.grid(alpha=0.3)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 8. Gradient clipping
#
# A rare batch can produce a gradient many times larger than usual, and one step along it can
# undo much of the training. Clipping by the **global** norm rescales all gradients together:
#
# $$
# \lVert g \rVert = \sqrt{\textstyle\sum_p \sum_i g_{p,i}^2}, \qquad
# g \leftarrow g \cdot \min\Bigl(1, \frac{c}{\lVert g \rVert}\Bigr) :
# $$
#
# the direction is kept, only the length is capped at $c$ — unlike clipping each coordinate,
# which would turn the step. `clip_grad_norm` returns the norm *before* clipping (worth
# logging: a training whose gradient norm climbs is about to diverge).

# %%
rng = np.random.default_rng(1)
ps = [Parameter(rng.standard_normal(s)) for s in [(3, 4), (4,), (5,)]]
for p in ps:
    p.grad[...] = 10 * rng.standard_normal(p.shape)
before = np.concatenate([p.grad.ravel() for p in ps])

norm = clip_grad_norm(ps, max_norm=1.0)
after = np.concatenate([p.grad.ravel() for p in ps])
cosine_sim = before @ after / (np.linalg.norm(before) * np.linalg.norm(after))
print(f"norm returned {norm:.4f} (by hand {np.linalg.norm(before):.4f});  norm after {np.linalg.norm(after):.6f};  "
      f"cosine(before, after) = {cosine_sim:.12f}")
assert math.isclose(norm, np.linalg.norm(before), rel_tol=1e-12)
assert math.isclose(np.linalg.norm(after), 1.0, rel_tol=1e-5) and math.isclose(cosine_sim, 1.0, rel_tol=1e-12)

small = after.copy()
assert clip_grad_norm(ps, max_norm=2.0) < 2.0
assert np.array_equal(np.concatenate([p.grad.ravel() for p in ps]), small)    # under the cap: untouched

# %% [markdown]
# ## Checks run above
#
# * `SGD` follows $x_t = (I - \eta A)^t x_0$ exactly, and diverges past $\eta = 2/\lambda_{\max}$;
#   with momentum it follows the $2 \times 2$ linear recurrence, and beats the best plain step.
# * `AdamW`'s first step is $\eta$ per coordinate for gradients from $10^{-4}$ to $10^{4}$; with a
#   zero gradient one step multiplies by $1 - \eta\lambda$; decoupled decay shrinks weights
#   alike whatever their gradient noise, where Adam + L2 does not.
# * SGD (momentum, Nesterov, weight decay), AdamW, and Adam + L2 equal `torch.optim`'s to
#   $10^{-12}$ (when PyTorch is installed).
# * `WarmupCosine` and `Noam` hit their closed-form values (peak, midpoint, floor, $1/\sqrt t$).
# * `clip_grad_norm` returns the global norm, keeps the direction, caps the length, and leaves
#   small gradients untouched.
#
# ## Exercises
#
# 1. `npgpt exercise start adamw`: write the AdamW update over flat arrays, bias corrections
#    and decoupled decay included; the checker compares it with `torch.optim.AdamW`.
# 2. Rotate the valley by 45° ($A \to R A R^\top$) and run section 5 again. Which optimizer
#    suffers, and why? (Hint: Adam normalises *coordinates*.)
# 3. Nesterov momentum: derive its $2 \times 2$ recurrence on the quadratic and check
#    `SGD(..., nesterov=True)` against it, as section 3 does for the heavy ball.
# 4. Remove the bias correction from a copy of the AdamW update and train the GPT of
#    notebook 03 with it, with and without warmup. What do the first 20 losses look like?
# 5. Train the GPT of notebook 03 with `clip_grad_norm` at 0.1, 1 and 100, logging the norm it
#    returns. How often does each clip? Does the loss curve change?
