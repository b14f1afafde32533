# %% [markdown]
# # 02 — Attention, forward and backward
#
# Scaled dot-product attention is the one layer of a Transformer that mixes positions:
#
# $$
# \operatorname{Attention}(Q, K, V) = \operatorname{softmax}\!\Bigl(\frac{Q K^\top}{\sqrt D} + M\Bigr)\, V,
# \qquad Q: (T_q, D),\;\; K, V: (T_k, D),\;\; M \in \{0, -\infty\}^{T_q \times T_k}.
# $$
#
# This notebook takes it apart: why the $1/\sqrt D$, what the mask $M$ does (causal, with a KV
# cache, with padding), how the gradient flows back through the softmax, how $H$ heads are cut
# out of one width $C$, and the online softmax that lets a fused kernel compute all of it
# without ever holding the $T_q \times T_k$ matrix. The code is npgpt's: the readable kernel
# `npgpt.kernels.reference` and the layer `npgpt.nn.MultiHeadAttention`.

# %%
import matplotlib.pyplot as plt
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

# %% [markdown]
# ## 1. Why divide by $\sqrt{D}$
#
# Take a query $q$ and a key $k$ whose entries are independent, with mean 0 and variance 1. Their
# dot product is a sum of $D$ independent terms $q_d k_d$, each of mean 0 and variance
# $\mathbb{E}[q_d^2]\,\mathbb{E}[k_d^2] = 1$, so
#
# $$
# \mathbb{E}[q \cdot k] = 0, \qquad \operatorname{Var}[q \cdot k] = D, \qquad
# \operatorname{Var}\Bigl[\frac{q \cdot k}{\sqrt D}\Bigr] = 1 .
# $$
#
# Without the scale the scores grow like $\sqrt D$: with $D = 64$ they spread over about
# $\pm 16$, and a softmax of such numbers is nearly one-hot.

# %%
print("   D   Var[q.k]   Var[q.k / sqrt(D)]")
for D in (4, 16, 64, 256):
    q = rng.standard_normal((20_000, D))
    k = rng.standard_normal((20_000, D))
    s = (q * k).sum(axis=1)
    print(f"{D:4d}   {s.var():8.1f}   {(s / np.sqrt(D)).var():8.3f}")
    assert 0.9 < s.var() / D < 1.1 and 0.9 < (s / np.sqrt(D)).var() < 1.1

# %% [markdown]
# A nearly one-hot softmax is bad for learning, not only for mixing: the softmax's Jacobian is
# $\partial a_j / \partial s_i = a_j(\delta_{ij} - a_i)$, and when one $a_j$ is close to 1 every
# entry of it is close to 0 — the gradient that reaches the scores (and so $W_q$, $W_k$) vanishes.
# Below, 16 keys of width $D = 256$, scored with and without the scale:

# %%
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

# %% [markdown]
# One of those rows, drawn: the same 16 scores through the softmax, unscaled and scaled.

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 2.8), sharey=True)
for ax, (name, s) in zip(axes, [("softmax(q.k): nearly one-hot", raw[0]),
                                ("softmax(q.k / sqrt(D))", raw[0] / np.sqrt(D))]):
    ax.bar(range(Tk), nn.softmax_forward(s)[0])
    ax.set_title(name, fontsize=10)
    ax.set_xlabel("key")
axes[0].set_ylabel("attention weight")
plt.tight_layout()
plt.show()

# %% [markdown]
# npgpt's reference kernel is these three lines, with a mask (next section) and a guard for rows
# that see no key at all:

# %%
B, H, T, D = 2, 3, 6, 8
q, k, v = (rng.standard_normal((B, H, T, D)) for _ in range(3))

out, cache = reference.attention_forward(q, k, v, causal=False)

s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(D)             # (B, H, T, T)
att, _ = nn.softmax_forward(s)                           # over the keys, the last axis
print("out", out.shape, " att", att.shape)
assert rel_error(out, att @ v) < 1e-14 and rel_error(cache.att, att) < 1e-14

# %% [markdown]
# ## 2. The causal mask
#
# A language model predicts token $t+1$ from tokens $0..t$, and it is trained on all positions
# of a sequence at once; position $t$ must not see positions after $t$. Set those scores to
# $-\infty$ before the softmax:
#
# $$
# M_{ij} = \begin{cases} 0 & j \le i \\ -\infty & j > i \end{cases}
# \qquad\Longrightarrow\qquad a_{ij} = \frac{e^{s_{ij}} \cdot [j \le i]}{\sum_{j' \le i} e^{s_{ij'}}} .
# $$
#
# $e^{-\infty} = 0$ exactly, so a hidden key gets weight exactly 0 whatever the scores are, and
# the softmax renormalises over the keys that remain. (A large finite stand-in such as $-10^9$
# works only while the scores stay far above it, and a row whose keys are all hidden then
# silently attends to keys it must not see; section 5 shows what npgpt does with such a row.)
# `reference.attention_mask` gives the boolean mask, True where a query may **not** look:

# %%
mask = reference.attention_mask(5, 5, causal=True, key_pad=None)
print(mask.astype(int))

out, cache = reference.attention_forward(q, k, v, causal=True)
print("attention of head (0, 0):")
print(cache.att[0, 0])
hidden = np.broadcast_to(reference.attention_mask(T, T, True, None), cache.att.shape)
assert (cache.att[hidden] == 0).all()                    # exactly 0, not merely small
assert np.allclose(cache.att.sum(axis=-1), 1)

# %% [markdown]
# **A live check.** Run npgpt's `MultiHeadAttention` on a sequence, then change every input
# after position $t$: the outputs at positions $0..t$ do not move by a single bit. The gradient
# says the same from the other side: an upstream gradient at position $t$ alone sends nothing
# to the inputs after $t$.

# %%
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

# %% [markdown]
# **Fewer queries than keys: decoding with a KV cache.** When generating, the model has already
# computed the keys and values of the $T_k - T_q$ earlier positions; only the $T_q$ new
# positions (often one) need queries. Query $i$ is then absolute position $i + (T_k - T_q)$, and
# it may see the keys up to there:
#
# $$ M_{ij} = -\infty \iff j > i + (T_k - T_q) ,$$
#
# the last query lined up with the last key (the mask's diagonal shifts right). With it, the new
# rows of attention equal the last rows of attending over the whole sequence, which is what makes
# the cache exact. (PyTorch's `scaled_dot_product_attention(is_causal=True)` aligns a non-square
# mask the other way, top-left; a cache needs the bottom-right alignment used here.)

# %%
print(reference.attention_mask(2, 5, causal=True, key_pad=None).astype(int))

full, _ = reference.attention_forward(q, k, v, causal=True)              # all T queries
last2, _ = reference.attention_forward(q[:, :, -2:], k, v, causal=True)  # Tq = 2, Tk = T
print(f"last two rows, cached vs full: {rel_error(last2, full[:, :, -2:]):.1e}")
assert rel_error(last2, full[:, :, -2:]) < 1e-14

# %% [markdown]
# ## 3. The backward, through the softmax
#
# Read the forward from the bottom up (one head; $\bar o$ is the upstream gradient):
#
# $$
# o = a\,V \;\Longrightarrow\; \bar V = a^\top \bar o, \quad \bar a = \bar o\, V^\top
# \qquad\text{(section 2 of notebook 01: a product of matrices)}
# $$
#
# The softmax of a row, $a_j = e^{s_j} / \sum_k e^{s_k}$, has the Jacobian
# $\partial a_j / \partial s_i = a_j (\delta_{ij} - a_i)$. Contracting it with $\bar a$:
#
# $$
# \bar s_i = \sum_j \bar a_j\, a_j (\delta_{ij} - a_i) = a_i \Bigl(\bar a_i - \sum_j \bar a_j a_j\Bigr),
# \qquad
# \boxed{\;\bar s = a \odot \bigl(\bar a - \operatorname{rowsum}(\bar a \odot a)\bigr)\;}
# $$
#
# Finally the scores $s = Q K^\top / \sqrt D$ are one more product:
#
# $$
# \bar Q = \bar s\, K / \sqrt D, \qquad \bar K = \bar s^\top Q / \sqrt D .
# $$
#
# The mask needs no backward of its own: a hidden score has $a_{ij} = 0$, so its $\bar s_{ij} = 0$,
# and no gradient flows to a key that a query could not see.

# %%
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

# %%
if torch is not None:                # PyTorch's fused attention, given npgpt's mask (True = may look)
    visible = torch.as_tensor(~reference.attention_mask(T, T, True, None))
    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    t_out = F.scaled_dot_product_attention(tq, tk, tv, attn_mask=visible)
    t_out.backward(torch.as_tensor(dout))
    for name, ours, theirs in [("out", out, t_out.detach()), ("dq", dq, tq.grad),
                               ("dk", dk, tk.grad), ("dv", dv, tv.grad)]:
        print(f"{name} vs PyTorch: {rel_error(ours, theirs.numpy()):.1e}")
        assert rel_error(ours, theirs.numpy()) < 1e-12

# %% [markdown]
# ## 4. Many heads: split and merge
#
# Multi-head attention runs $H$ attentions side by side, each on its own slice of
# $D = C / H$ channels, with its own softmax — so one head can attend to the previous token
# while another attends to the start of the sentence — for the cost of one attention of width
# $C$. In npgpt (GPT-2's layout) one Linear $W_{\text{attn}}: (C, 3C)$ makes $q, k, v$, and the
# heads are a reshape and a transpose:
#
# $$
# (B, T, C) \xrightarrow{\text{reshape}} (B, T, H, D) \xrightarrow{\text{transpose}} (B, H, T, D),
# \qquad \text{head } h = \text{channels } hD \ldots (h+1)D - 1 .
# $$
#
# After attention, `merge_heads` undoes it, and the output projection $W_o: (C, C)$ mixes the
# heads: $y = [\,o_1 \,\cdots\, o_H\,]\, W_o = \sum_h o_h\, W_o[hD:(h+1)D, :]$. Both reshapes only
# move entries, so each one's backward is the other: the gradient is moved back to where its
# entry came from.

# %%
B, T, C, n_head = 2, 5, 12, 3
D = C // n_head
x = rng.standard_normal((B, T, C))
heads = nn.split_heads(x, n_head)
print("split:", x.shape, "->", heads.shape, "  merge:", heads.shape, "->", nn.merge_heads(heads).shape)
for h in range(n_head):
    assert np.array_equal(heads[:, h], x[:, :, h * D:(h + 1) * D])
assert np.array_equal(nn.merge_heads(heads), x)

# %% [markdown]
# ## 5. Padding masks
#
# Sequences of different lengths are batched by padding them to one length. The padded keys
# must receive no attention: `key_pad` is a boolean $(B, T_k)$ array, True at a padded position
# (PyTorch's key-padding-mask convention), and it hides that key from **every** query of its
# sequence — it adds $-\infty$ to a whole column of the scores, where the causal mask adds a
# triangle. The padded *queries* still produce an output, which the loss ignores
# (`ignore_index`, notebook 01).
#
# Below, the second sequence has 3 real tokens of 5: its attention has zero columns 3 and 4, and
# whatever sits in its padded keys and values cannot change any output.

# %%
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

# %% [markdown]
# Combine the two masks with left padding (how prompts of different lengths are batched for
# generation) and a query can be left with **no** visible key: position 0 of a sequence whose
# first two tokens are padding sees only key 0, which is padding. Its softmax is $0/0$: a plain
# softmax gives `nan` (so do `torch.softmax` and `torch.nn.MultiheadAttention`), and one such row
# would poison the whole batch through the next matrix product. npgpt's kernels give the row zero
# weights and a zero output (as `torch.nn.functional.scaled_dot_product_attention` now does).

# %%
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

# %% [markdown]
# The weights of sequence 1, head 0, under the three masks of this notebook (rows: queries,
# columns: keys; the numbers are the weights, blank where a key is hidden — in the third,
# queries 0 and 1 see no key at all, the empty rows above):

# %%
pad_right = np.zeros((B, T), dtype=bool)
pad_right[1, 3:] = True
cases = {"causal": dict(causal=True, key_pad=None),
         "padding (3 real tokens)": dict(causal=False, key_pad=pad_right),
         "causal + left padding": dict(causal=True, key_pad=key_pad)}
fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
for ax, (name, kw) in zip(axes, cases.items()):
    _, c = reference.attention_forward(q, k, v, **kw)
    hidden = np.broadcast_to(reference.attention_mask(T, T, kw["causal"], kw["key_pad"]), c.att.shape)[1, 0]
    ax.imshow(np.where(hidden, np.nan, c.att[1, 0]), cmap="viridis", vmin=0, vmax=1)
    for (i, j), w in np.ndenumerate(c.att[1, 0]):
        if not hidden[i, j]:
            ax.text(j, i, f"{w:.2f}", ha="center", va="center", fontsize=8, color="w" if w < 0.6 else "k")
    ax.set_title(name, fontsize=10)
    ax.set_xlabel("key")
    ax.set_ylabel("query")
plt.tight_layout()
plt.show()


# %% [markdown]
# ## 6. The gradient check of `MultiHeadAttention`
#
# The whole layer — $c_{\text{attn}}$, split, the attention kernel, merge, $c_{\text{proj}}$ —
# checked against the numerical gradient for its input and all four parameters, causal and with
# a padding mask. One detail matters: at GPT-2's initialisation (std 0.02) the scores are nearly
# 0 and the softmax nearly uniform, where $\bar s = a \odot (\bar a - \ldots)$ is tiny and a
# mistake in it would hide under the tolerance. The check uses larger weights (std 0.5), so the
# attention is far from uniform:

# %%
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


# %% [markdown]
# ## 7. The online softmax: attention without the $T \times T$ matrix
#
# The reference kernel materialises the scores, $(B, H, T_q, T_k)$ numbers — memory quadratic in
# the sequence length, read and written several times. A fused kernel (FlashAttention; npgpt's
# is `attention_forward` of the "numba" backend in `npgpt/kernels/cpu.py`) walks the keys in
# blocks and keeps, per query row, only three running quantities: the largest score so far $m$,
# the sum $\ell = \sum_j e^{s_j - m}$, and the unnormalised output $o = \sum_j e^{s_j - m} v_j$.
# When a new block with scores $s^{(b)}$ and values $V^{(b)}$ arrives:
#
# $$
# m' = \max\bigl(m, \max_j s^{(b)}_j\bigr), \qquad
# c = e^{\,m - m'}, \qquad
# \ell' = c\,\ell + \sum_j e^{s^{(b)}_j - m'}, \qquad
# o' = c\, o + \sum_j e^{s^{(b)}_j - m'}\, v^{(b)}_j .
# $$
#
# The factor $c \le 1$ rescales what was summed under the old maximum to the new one, so every
# exponent stays $\le 0$ (no overflow). After the last block, $\operatorname{out} = o / \ell$ —
# exactly the softmax-weighted sum, since the common factor $e^{-m}$ cancels — and
# $\operatorname{lse} = m + \log \ell$ is the row's log-sum-exp, all that the backward needs to
# recompute $a = e^{s - \operatorname{lse}}$ block by block. A sketch in NumPy, for the causal
# case (every row sees key 0 in the first block, so $m$ is finite from then on; the real kernel
# also handles rows with no visible key):

# %%
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

# %% [markdown]
# One more identity makes the fused backward cheap. The softmax backward needs
# $\operatorname{rowsum}(\bar a \odot a)$, which seems to need the whole row of $a$; but with
# $\bar a = \bar o\, V^\top$ and $o = a V$,
#
# $$
# \sum_j \bar a_{ij}\, a_{ij} = \sum_j \sum_d \bar o_{id}\, V_{jd}\, a_{ij}
# = \sum_d \bar o_{id}\, o_{id} ,
# $$
#
# a dot product of two $D$-vectors per row, computed once before the key blocks are walked.

# %%
out, cache = reference.attention_forward(q, k, v, causal=True)
dout = rng.standard_normal(out.shape)
da = dout @ v.transpose(0, 1, 3, 2)
lhs = (da * cache.att).sum(axis=-1)
rhs = (dout * out).sum(axis=-1)
print(f"rowsum(da * att) vs rowsum(dout * out): {rel_error(lhs, rhs):.1e}")
assert rel_error(lhs, rhs) < 1e-13

# %% [markdown]
# ## Exercises
#
# 1. `npgpt exercise start attention`, then `multihead_attention`: write the kernel and the
#    layer, masks included; the checker compares them with npgpt's and the numerical gradient.
# 2. Section 1 measured the variance of $q \cdot k$ for independent entries. Repeat it with
#    queries and keys taken from a LayerNorm'd random input through random projections of
#    std 0.02: what scale would the scores have without $1/\sqrt D$?
# 3. Write the mask of a **sliding window** (each query sees the previous $w$ keys only), pass
#    it through the online softmax of section 7, and check the result against the reference
#    with scores set to $-\infty$ outside the window.
# 4. Show with a small example that PyTorch's `is_causal=True` with $T_q < T_k$ aligns the mask
#    top-left, and that npgpt's bottom-right alignment is the one a KV cache needs.
