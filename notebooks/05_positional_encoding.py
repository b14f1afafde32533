# %% [markdown]
# # 05 — Positional encoding
#
# Attention compares every position with every other by the content of their vectors alone;
# nothing in $\operatorname{softmax}(QK^\top/\sqrt D)\,V$ says which token came first. This
# notebook shows that exactly (self-attention without positions is permutation-equivariant),
# then derives the two ways npgpt puts order back in: the fixed sinusoidal encoding of Vaswani
# et al. — its heat map, why $PE(p+k)$ is a rotation of $PE(p)$, why a dot product of two
# encodings depends only on their offset — and GPT-2's learned position table. It ends with a
# garbled version of the sinusoidal formula that circulates in a popular write-up, and why it
# cannot work.

# %%
import matplotlib.pyplot as plt
import numpy as np

import npgpt
from npgpt import GPT, GPTConfig, nn
from npgpt.gradcheck import numerical_gradient, rel_error

rng = np.random.default_rng(0)
np.set_printoptions(precision=3, suppress=True, linewidth=110)
print("npgpt kernels:", npgpt.kernels.current_backend())

# %% [markdown]
# ## 1. Without positions, attention cannot see order
#
# Let $\Pi$ be a permutation matrix, reordering the $T$ rows of $X$. Self-attention without a
# mask computes $Q = XW_q$, $K = XW_k$, $V = XW_v$, each row from its own row of $X$, so
# reordering $X$ reorders $Q, K, V$ the same way. The scores become
# $\Pi Q (\Pi K)^\top = \Pi\, Q K^\top \Pi^\top$: the same matrix with rows and columns reordered
# alike. The softmax acts on each row and does not care about the order of the entries in it,
# so the weights become $\Pi A \Pi^\top$, and the output
#
# $$
# \Pi A \Pi^\top\, \Pi V = \Pi\, (A V), \qquad\text{since } \Pi^\top \Pi = I .
# $$
#
# **Permutation-equivariant**: shuffle the input tokens and the outputs are shuffled the same
# way, each one unchanged. Without positions "dog bites man" and "man bites dog" give every word
# the same vector. Checked on npgpt's `MultiHeadAttention` and a whole encoder layer:

# %%
B, T, C = 2, 7, 16
x = rng.standard_normal((B, T, C))
perm = rng.permutation(T)

mha = nn.MultiHeadAttention(C, n_head=4, causal=False, dtype="float64", rng=np.random.default_rng(1), std=0.3)
layer = nn.EncoderLayer(C, 4, 32, dtype="float64", rng=np.random.default_rng(2), std=0.3)
for name, f in [("MultiHeadAttention", mha.forward), ("EncoderLayer", layer.forward)]:
    err = rel_error(f(x[:, perm]), f(x)[:, perm])
    print(f"{name:18s} f(x permuted) vs f(x) permuted: {err:.1e}")
    assert err < 1e-13

# %% [markdown]
# Add a different vector to each position and the symmetry is gone: the same token at two
# positions now enters attention as two different vectors. (A causal mask also breaks the
# symmetry — position $t$ sees $t + 1$ tokens — and a decoder-only model can in fact infer
# positions from it; the encoder's bidirectional attention cannot.)

# %%
pe = nn.sinusoidal_encoding(T, C, dtype="float64")            # (T, C)
err = rel_error(mha.forward(x[:, perm] + pe), mha.forward(x + pe)[:, perm])
print(f"with positions added: {err:.2f}")
assert err > 0.01

# %% [markdown]
# ## 2. The sinusoidal encoding
#
# Vaswani et al. add to the token embedding at position $p$ the vector
#
# $$
# PE(p, 2i) = \sin(p\,\omega_i), \qquad PE(p, 2i + 1) = \cos(p\,\omega_i), \qquad
# \omega_i = 10000^{-2i/d}, \quad i = 0, \ldots, \tfrac d2 - 1 :
# $$
#
# $d/2$ sine–cosine pairs whose frequencies fall geometrically from $\omega_0 = 1$ (a period of
# $2\pi \approx 6.3$ positions) to $\omega_{d/2-1} = 10000^{-(d-2)/d}$, just above $10^{-4}$ (a
# period approaching $2\pi \cdot 10^4 \approx 63{,}000$ positions as $d$ grows; 47,000 for
# $d = 64$). Like the digits of a number written in a base, the fast pairs tell neighbours
# apart and the slow ones tell far-apart regions apart. npgpt's `sinusoidal_encoding`:

# %%
print(nn.sinusoidal_encoding.__doc__)
T, d = 128, 64
PE = nn.sinusoidal_encoding(T, d, dtype="float64")          # (T, d)

p = np.arange(T)[:, None]
omega = 10000.0 ** (-np.arange(0, d, 2) / d)               # (d/2,)
assert np.allclose(PE[:, 0::2], np.sin(p * omega)) and np.allclose(PE[:, 1::2], np.cos(p * omega))
assert np.array_equal(nn.sinusoidal_encoding(10, d, offset=50, dtype="float64"), PE[50:60])
print("periods, in positions:", np.round(2 * np.pi / omega[[0, 1, 2, 8, 16, 31]], 1))

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [1.3, 1]})
im = axes[0].imshow(PE.T, aspect="auto", cmap="RdBu", vmin=-1, vmax=1, origin="lower", interpolation="nearest")
axes[0].set_xlabel("position p")
axes[0].set_ylabel("dimension")
axes[0].set_title("PE(p, dimension), d = 64")
fig.colorbar(im, ax=axes[0])
for j in (0, 10, 20, 30):
    axes[1].plot(PE[:, j], label=f"dim {j}: period {2 * np.pi / omega[j // 2]:.0f}")
axes[1].set_xlabel("position p")
axes[1].set_title("a few sine columns")
axes[1].legend(fontsize=8, loc="lower left")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 3. $PE(p + k)$ is a rotation of $PE(p)$
#
# Take one pair of columns, $(\sin p\omega, \cos p\omega)$. The angle-addition formulas give
#
# $$
# \begin{pmatrix} \sin (p + k)\omega \\ \cos (p + k)\omega \end{pmatrix}
# = \begin{pmatrix} \cos k\omega & \sin k\omega \\ -\sin k\omega & \cos k\omega \end{pmatrix}
#   \begin{pmatrix} \sin p\omega \\ \cos p\omega \end{pmatrix} ,
# $$
#
# a rotation by the angle $k\omega$ that depends on the offset $k$ and **not** on $p$. Stack the
# $d/2$ pairs: $PE(p + k) = R(k)\, PE(p)$ with $R(k)$ block-diagonal, orthogonal, the same for
# every $p$. So "$k$ positions later" is one fixed linear map, which a layer's weights can
# represent — the paper's argument for this choice. A rotation keeps lengths: every encoding
# has the same norm, $\lVert PE(p) \rVert^2 = \sum_i (\sin^2 + \cos^2) = d/2$.

# %%
def rotation(k, omega):
    """R(k): block-diagonal, one 2 x 2 rotation by k * omega_i per pair (sin, cos)."""
    R = np.zeros((2 * len(omega), 2 * len(omega)))
    for i, w in enumerate(omega):
        c, s = np.cos(k * w), np.sin(k * w)
        R[2 * i:2 * i + 2, 2 * i:2 * i + 2] = [[c, s], [-s, c]]
    return R

for k in (1, 5, 40):
    R = rotation(k, omega)
    err = np.abs(PE[k:] - PE[:-k] @ R.T).max()               # every p at once: PE[p + k] = R PE[p]
    print(f"k = {k:2d}: max |PE(p + k) - R(k) PE(p)| = {err:.1e}   R orthogonal: {np.allclose(R @ R.T, np.eye(d))}")
    assert err < 1e-10 and np.allclose(R @ R.T, np.eye(d))
assert np.allclose((PE ** 2).sum(axis=1), d / 2)

# %% [markdown]
# ## 4. The dot product depends only on the offset
#
# With $\sin a \sin b + \cos a \cos b = \cos(a - b)$, pair by pair,
#
# $$
# PE(p) \cdot PE(q) = \sum_{i} \cos\bigl((p - q)\,\omega_i\bigr) ,
# $$
#
# a function of $p - q$ alone: the matrix of all dot products is constant along its diagonals
# (Toeplitz). It is largest at offset 0 ($= d/2$) and falls off, though not monotonically, with
# distance, so nearby positions look alike — and it is even in $p - q$: dot products alone
# cannot tell "3 before" from "3 after" (the rotation of section 3 can).

# %%
G = PE @ PE.T                                              # (T, T): PE(p) . PE(q)
offset = np.arange(T)[:, None] - np.arange(T)[None, :]
closed_form = np.cos(offset[..., None] * omega).sum(axis=-1)
print(f"max |G - sum_i cos((p - q) w_i)| = {np.abs(G - closed_form).max():.1e}")
assert np.allclose(G, closed_form)

fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
im = axes[0].imshow(G, cmap="viridis", interpolation="nearest")
axes[0].set_title("PE(p) . PE(q): constant along diagonals")
axes[0].set_xlabel("q")
axes[0].set_ylabel("p")
fig.colorbar(im, ax=axes[0])
axes[1].plot(np.arange(-T + 1, T), [np.cos(k * omega).sum() for k in range(-T + 1, T)])
axes[1].set_xlabel("offset p - q")
axes[1].set_title("the same, as a function of the offset")
axes[1].grid(alpha=0.3)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 5. Learned positions
#
# GPT-2 learns its positions instead: a table $W_{pe}$ of `block_size` rows, one trainable
# vector per position, added to the token embeddings. `LearnedPositionalEmbedding.forward(T)`
# returns the first $T$ rows, which the model adds to every sequence of the batch: the row of
# position $t$ is used $B$ times (a fan-out), so its gradient is the sum over the batch,
#
# $$
# x_{b,t} = W_{te}[\text{idx}_{b,t}] + W_{pe}[t] \quad\Longrightarrow\quad
# \bar W_{pe}[t] = \sum_b \bar x_{b,t} .
# $$

# %%
B, T, C = 3, 5, 4
wpe = nn.LearnedPositionalEmbedding(8, C, dtype="float64", rng=np.random.default_rng(3))
tok = rng.standard_normal((B, T, C))
dx = rng.standard_normal((B, T, C))

wpe.forward(T)                                             # (T, C), added to every sequence
wpe.zero_grad()
wpe.backward(dx)
numeric = numerical_gradient(lambda: tok + wpe.forward(T), wpe.weight.data, dx)
print(f"dW_pe vs sum over the batch: {rel_error(wpe.weight.grad[:T], dx.sum(axis=0)):.1e};  "
      f"vs numerical: {rel_error(wpe.weight.grad, numeric):.1e}")
assert rel_error(wpe.weight.grad, numeric) < 1e-9
assert (wpe.weight.grad[T:] == 0).all()                     # rows of unused positions: no gradient

# %% [markdown]
# The two kinds, side by side in a GPT (`GPTConfig.pos_encoding`): the learned table costs
# `block_size` × `n_embd` parameters and knows nothing of a position it has no row for; the
# sinusoidal one costs nothing and is defined for every position (it extends past the longest
# training sequence, though a model trained on short ones need not use it well there).

# %%
cfg = GPTConfig(vocab_size=50, block_size=64, n_layer=2, n_head=4, n_embd=32)
learned = GPT(cfg, seed=0)
fixed = GPT(cfg.replace(pos_encoding="sinusoidal"), seed=0)
extra = learned.num_parameters() - fixed.num_parameters()
print(f"learned: {learned.num_parameters():,} parameters, sinusoidal: {fixed.num_parameters():,}; "
      f"difference {extra:,} = {cfg.block_size} x {cfg.n_embd}")
assert extra == cfg.block_size * cfg.n_embd
try:
    learned.wpe.forward(cfg.block_size + 1)
except ValueError as e:
    print("ValueError:", e)
print("sinusoidal, positions 1000..1002, first 4 dims:\n", nn.sinusoidal_encoding(3, 32, offset=1000)[:, :4])

# %% [markdown]
# ## 6. A garbled formula, and why it cannot work
#
# A popular write-up of the Transformer gives the positional encoding as
#
# $$
# P(\text{pos}) = \sin\!\Bigl(\frac{\text{pos}}{10000^{\,2 - \lfloor \text{pos} / 10000 \rfloor}}\Bigr) ,
# $$
#
# which looks like a garbled copy of the formula of section 2 (where the dimension index
# $2i/d$ stood, there is now $2 - \lfloor \text{pos}/10000 \rfloor$), and has been widely
# repeated. Read it literally:
#
# * it has no dimension index, so it is **one number per position**, the same in every
#   dimension of the vector it is added to;
# * for every $\text{pos} < 10{,}000$ — every position any model here will see — the floor is 0
#   and the exponent is 2, so $P(\text{pos}) = \sin(\text{pos} / 10^8) \approx \text{pos} / 10^8$:
#   at most $10^{-4}$, and neighbouring positions differ by $10^{-8}$.
#
# Added to embeddings of size about 1 in float32, whose spacing near 1 is
# $2^{-23} \approx 1.2 \times 10^{-7}$, a difference of $10^{-8}$ is below the resolution of the
# number it is added to: neighbouring positions mostly round to the *same* float32 vector.

# %%
def garbled(pos):
    """The circulating formula, read literally: one number per position."""
    pos = np.asarray(pos, dtype=np.float64)
    return np.sin(pos / 10000.0 ** (2 - np.floor(pos / 10000)))

pos = np.arange(10_000)
g = garbled(pos)
print(f"largest value for pos < 10,000: {g.max():.2e};  largest |P(pos) - pos/1e8|: "
      f"{np.abs(g - pos / 1e8).max():.1e}")
assert g.max() < 1e-4 and np.abs(g[1:] / (pos[1:] / 1e8) - 1).max() < 1e-8   # sin x = x (1 - x^2/6 ...)

embedding = np.float32(1.3)                                # a typical entry of a token's vector
seen = np.float32(embedding + g[:1024].astype(np.float32))
same = np.mean(seen[1:] == seen[:-1])
print(f"positions 0..1023: {len(np.unique(seen))} distinct float32 values of 1.3 + P(pos); "
      f"{same:.0%} of neighbours identical")
assert same > 0.85

# %% [markdown]
# And since the number is the same in every dimension, even in float64 the vectors of two
# positions differ only along the direction $(1, 1, \ldots, 1)$, by
# $\lvert p - q \rvert \cdot 10^{-8} \sqrt d$ — against distances of order $\sqrt{d}$ between
# the real encodings. Side by side, on one colour scale:

# %%
T, d = 128, 64
real = nn.sinusoidal_encoding(T, d, dtype="float64")
fake = np.repeat(garbled(np.arange(T))[:, None], d, axis=1)      # (T, d): the same in every dim

def distances(E):
    return np.linalg.norm(E[:, None] - E[None, :], axis=-1)      # (T, T)

off_diagonal = ~np.eye(T, dtype=bool)
print(f"smallest distance between two positions: real {distances(real)[off_diagonal].min():.2f}, "
      f"garbled {distances(fake)[off_diagonal].min():.1e}; largest: real {distances(real).max():.2f}, "
      f"garbled {distances(fake).max():.1e}")
assert distances(real)[off_diagonal].min() > 0.5
assert np.isclose(distances(fake).max(), (T - 1) * 1e-8 * np.sqrt(d), rtol=1e-6)

fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), layout="constrained")
for ax, E, title in [(axes[0], real, "Vaswani et al.: sin/cos(p * w_i)"),
                     (axes[1], fake, "garbled: sin(p / 10000^(2 - floor(p/10000)))")]:
    im = ax.imshow(E.T, aspect="auto", cmap="RdBu", vmin=-1, vmax=1, origin="lower", interpolation="nearest")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("position p")
axes[0].set_ylabel("dimension")
fig.colorbar(im, ax=axes[:2], shrink=0.9)
axes[2].plot(np.arange(T), 1e6 * fake[:, 0], lw=3, alpha=0.5, label="garbled P(p)")
axes[2].plot(np.arange(T), 1e6 * np.arange(T) / 1e8, "k:", label="p / 10^8")
axes[2].set_xlabel("position p")
axes[2].set_ylabel("value x 10^6")
axes[2].set_title("the garbled value, zoomed in a million times", fontsize=10)
axes[2].legend(fontsize=8)
plt.show()

# %% [markdown]
# (Past 10,000 the exponent drops to 1, then 0, then below: at $\text{pos} = 20{,}000$ the
# formula becomes $\sin(\text{pos})$, and past 30,000 $\sin(\text{pos} \cdot 10^4)$ — still one
# number per position.)
#
# ## Checks run above
#
# * npgpt's `MultiHeadAttention` and `EncoderLayer` are permutation-equivariant without
#   positions (to $10^{-13}$), and stop being so with them.
# * `sinusoidal_encoding` matches the closed form, column by column, and its `offset` slices the
#   same table.
# * $PE(p + k) = R(k)\,PE(p)$ for every $p$, with $R(k)$ orthogonal; $\lVert PE(p)\rVert^2 = d/2$.
# * $PE(p) \cdot PE(q) = \sum_i \cos((p - q)\,\omega_i)$ for every pair.
# * The learned table's gradient is the sum over the batch (and matches the numerical one); it
#   costs `block_size` × `n_embd` parameters.
# * The garbled formula is $\approx \text{pos}/10^8$ below 10,000, most neighbouring positions
#   are the same float32 number, and the first 128 positions are at most
#   $127 \cdot 10^{-8} \sqrt{d} \approx 10^{-5}$ apart.
#
# ## Exercises
#
# 1. `npgpt exercise start embedding`: write the lookup and its scatter-add backward, the
#    token-table twin of section 5.
# 2. `npgpt exercise start multihead_attention`, then check your layer with section 1's test.
#    Which single change to the layer would make it *not* permutation-equivariant?
# 3. Rotary embeddings (RoPE, Su et al.) apply $R(p)$ of section 3 to the queries and keys
#    instead of adding anything to $x$. Show that $(R(p) q) \cdot (R(p') k)$ depends on $p$ and
#    $p'$ only through $p - p'$, and check it numerically with `rotation` above.
# 4. Train the GPT of notebook 03 with `pos_encoding="sinusoidal"` and with `"learned"`, and
#    compare the losses. Then evaluate both on windows longer than `block_size` (the learned one
#    cannot even run: why?).
# 5. Plot $PE(p) \cdot PE(p + k)$ against $k$ for $d = 16, 64, 256$. How does the width of the
#    central peak change with $d$, and why?
