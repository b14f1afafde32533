# %% [markdown]
# # 03 — Training a small GPT
#
# Notebooks 01 and 02 derived the backward of every layer. Here they are put together: npgpt's
# `GPT` (GPT-2's architecture), checked as a whole against the numerical gradient, then trained
# for a few hundred steps with AdamW on a slice of npgpt's built-in corpus — the text of
# Python's own documentation, which ships with every Python — at the level of single
# characters, and finally sampled from. All of it runs in seconds on a laptop CPU.

# %%
import math
import time

import matplotlib.pyplot as plt
import numpy as np

import npgpt
from npgpt import GPT, GPTConfig, nn
from npgpt.data import default_corpus, get_batch, split
from npgpt.gradcheck import numerical_gradient, rel_error
from npgpt.kernels import reference
from npgpt.optim import AdamW, clip_grad_norm
from npgpt.tokenizers import CharTokenizer

print("npgpt kernels:", npgpt.kernels.current_backend())

# %% [markdown]
# ## 1. The model, and its backward as one chain rule
#
# For token ids $\text{idx}: (B, T)$, with $W_{te}: (V, C)$ the token table and $W_{pe}$ the
# position table:
#
# $$
# x_0 = W_{te}[\text{idx}] + W_{pe}[0..T-1], \qquad
# x_{l} = \operatorname{block}_l(x_{l-1}), \qquad
# \text{logits} = \operatorname{LN}_f(x_L)\, W_{te}^\top ,
# $$
#
# each block being pre-LN: $x \mathrel{+}= \operatorname{attn}(\operatorname{LN}_1(x))$, then
# $x \mathrel{+}= \operatorname{MLP}(\operatorname{LN}_2(x))$. `GPT.backward()` is this read from
# the bottom up, one line per layer (see `npgpt/models/gpt.py`). Two fan-outs meet in it: the
# residual stream (each block's input gradient is the sum of the skip path and the branch), and
# $W_{te}$, used by the embedding at the bottom and by the output head at the top: its gradient
# is the sum of both.
#
# Before training anything, check the whole chain at once. The preset `"gradcheck"` is a GPT
# small enough (two layers of width 8, in float64) for the numerical gradient of **every**
# parameter, with a random upstream gradient on the logits:

# %%
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

# %% [markdown]
# ## 2. The data
#
# One token per character (`CharTokenizer`: the sorted set of characters of the text), the first
# 90% for training and the rest for validation. A batch is $B$ random windows of $T + 1$
# consecutive tokens: the input is the first $T$, the target the last $T$ — so every position
# of every window is a next-token prediction, and the causal mask of notebook 02 keeps each
# position from seeing its own answer.

# %%
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

# %% [markdown]
# ## 3. The loss before training
#
# GPT-2's initialisation draws every weight from $\mathcal N(0, 0.02^2)$, so the logits start
# close to 0 and the predicted distribution close to uniform over the $V$ characters. The
# cross-entropy of a uniform guess is
#
# $$ -\log \tfrac{1}{V} = \log V , $$
#
# a number to know before the first step: an initial loss far above it means the model starts
# out confidently wrong, and the first steps are spent undoing that instead of learning.
#
# With GPT-2's tied head, the model below starts a little *under* $\log V$. The logit of
# character $v$ at a position is $\operatorname{LN}_f(x)\cdot W_{te}[v]$, and $x$ still holds the
# input character's own embedding, so the input character gets the logit
# $\approx \lVert W_{te}[v] \rVert^2 / \sigma > 0$ while the others get $\approx 0$: before any
# training the model guesses "the same character again". In this text, with its indented code,
# that is right for almost a third of the positions (runs of spaces). With an untied head the
# start is $\log V$.

# %%
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

# %% [markdown]
# ## 4. Training with AdamW
#
# One step: clear the gradients, forward with targets (the mean cross-entropy), backward from it,
# clip the global gradient norm to 1 (a guard against a rare huge step), and an AdamW update.
# AdamW keeps running means of the gradient and of its square, corrected for their start at 0,
# and decays the weights separately from the gradient (only the matrices; not the biases,
# LayerNorm gains or embedding tables):
#
# $$
# m \leftarrow \beta_1 m + (1 - \beta_1)\, g, \qquad
# v \leftarrow \beta_2 v + (1 - \beta_2)\, g^2, \qquad
# p \leftarrow p\,(1 - \eta\lambda) - \eta\, \frac{m / (1 - \beta_1^t)}{\sqrt{v / (1 - \beta_2^t)} + \epsilon} .
# $$
#
# Each parameter moves by roughly $\eta$ per step whatever the scale of its gradient, which is
# why one learning rate suits embeddings, LayerNorm gains and matrices alike.

# %%
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

# %%
fig, ax = plt.subplots(figsize=(7, 3.2))
ax.plot(range(1, len(losses) + 1), losses, lw=0.8, alpha=0.6, label="training batch")
ax.plot(np.arange(25, len(losses) + 1), np.convolve(losses, np.ones(25) / 25, mode="valid"), label="mean of 25 steps")
ax.plot([0, len(losses)], [val_before, val_after], "o", color="C3", label="validation")
ax.axhline(log_V, color="gray", ls="--", label="log V")
ax.set_xlabel("step")
ax.set_ylabel("cross-entropy (nats/char)")
ax.legend()
ax.grid(alpha=0.3)
plt.show()

# %% [markdown]
# ## 5. Sampling
#
# To generate, feed a prompt, take the logits of the last position, divide them by a
# temperature $\tau$ (below 1 sharpens the distribution, above 1 flattens it), keep the $k$ most
# likely characters, sample one, append it, repeat. With `use_cache=True` each step computes one
# new position and attends to the keys and values kept from the earlier ones — the $T_q < T_k$
# case of notebook 02 — and must give exactly the tokens that recomputing the whole window does.
# A few hundred steps on 180,000 characters teach the model the look of the text — short common
# words such as "the", spaces, quotes and line breaks — not yet its spelling, let alone its sense:

# %%
prompt = np.array(tokenizer.encode("The "))
cached = model.generate(prompt, max_new_tokens=120, temperature=0.8, top_k=10, seed=0, use_cache=True)
recomputed = model.generate(prompt, max_new_tokens=120, temperature=0.8, top_k=10, seed=0, use_cache=False)
print(tokenizer.decode(cached))
assert np.array_equal(cached, recomputed)

# %% [markdown]
# ## 6. What the heads look at
#
# The attention weights of the first block, for a line of the validation text. They are
# recomputed here from the block's own parts — the embeddings, `ln_1`, the projection `c_attn`
# split into heads, the reference kernel — and the recomputation is checked against the
# attention layer's output before it is drawn. After only 300 steps the heads already differ:
# one spreads its weight over the recent characters, others pick out particular earlier ones
# (the previous character, a full stop) — the beginnings of the statistics that notebook 04
# counted with a bigram table.

# %%
line = tokenizer.decode(val_ids[1000:1032])
idx = np.array([tokenizer.encode(line)])
T = idx.shape[1]
block = model.h[0]
x0 = model.wte.forward(idx) + model.wpe.forward(T)                  # (1, T, C)
a = block.ln_1.forward(x0)
q, k, v = np.split(block.attn.c_attn.forward(a), 3, axis=-1)
q, k, v = (nn.split_heads(t, cfg.n_head) for t in (q, k, v))       # (1, H, T, D)
out, cache = reference.attention_forward(q, k, v, causal=True)
assert rel_error(block.attn.c_proj.forward(nn.merge_heads(out)), block.attn.forward(a)) < 1e-5

labels = [{" ": "␣", "\n": "⏎"}.get(c, c) for c in line]
fig, axes = plt.subplots(1, cfg.n_head, figsize=(14, 3.9))
for h, ax in enumerate(axes):
    ax.imshow(cache.att[0, h], cmap="viridis")
    ax.set_xticks(range(T), labels, fontsize=6)
    ax.set_yticks(range(T), labels, fontsize=6)
    ax.set_title(f"block 0, head {h}", fontsize=10)
axes[0].set_ylabel("query (predicting the next character)")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Exercises
#
# 1. `npgpt exercise start residual`, then `tied_head`: the pre-LN block and the tied output head
#    whose two gradients section 1 adds up.
# 2. Train with `tie_weights=False` and compare the first 50 losses with section 4's: where does
#    the tied model's head start of section 3 go?
# 3. Plot the validation loss every 25 steps for learning rates $10^{-3}$, $3 \cdot 10^{-3}$ and
#    $10^{-2}$. Which one is too large, and how does it show?
# 4. Draw section 6's maps for block 1 as well. Do its heads look further back than block 0's?
