# %% [markdown]
# # 07 — The encoder-decoder
#
# The Transformer of "Attention Is All You Need" maps a source sequence to a target sequence
# (a sentence to its translation; here, a string of digits to its reverse). An **encoder** reads
# the whole source at once, bidirectionally, into a memory of one vector per source position;
# a **decoder** writes the target one token at a time, each of its layers attending causally to
# the target so far, then to the memory (cross-attention). npgpt's `Transformer`
# (`npgpt/models/transformer.py`):
#
# $$
# \begin{aligned}
# x &= E_{\text{src}}[\text{src}] \sqrt d + PE, &
# \text{memory} &= \operatorname{LN}\bigl(\operatorname{enc}_N \circ \cdots \circ \operatorname{enc}_1 (x)\bigr)
# \quad (B, S, d)\\
# y &= E_{\text{tgt}}[\text{tgt}_{\text{in}}] \sqrt d + PE, &
# \text{logits} &= \operatorname{LN}\bigl(\operatorname{dec}_N \circ \cdots \circ \operatorname{dec}_1
# (y, \text{memory})\bigr)\, W_{\text{gen}} + b \quad (B, T, V)
# \end{aligned}
# $$
#
# This notebook looks at what is new compared with a GPT: cross-attention and its shapes, the
# three masks, where the LayerNorms go (post-LN or pre-LN), label smoothing; then it trains a
# small model on the reverse task, draws its cross-attention, and decodes greedily and with a
# beam.

# %%
import math
import warnings

import matplotlib.pyplot as plt
import numpy as np

import npgpt
from npgpt import Transformer, TransformerConfig, nn
from npgpt.data import iterate_batches, make_task, pad_batch
from npgpt.gradcheck import check_module, numerical_gradient, rel_error
from npgpt.kernels import reference
from npgpt.optim import AdamW, Noam, clip_grad_norm

try:
    import torch
except ImportError:        # PyTorch is optional: the numerical checks stand on their own
    torch = None

rng = np.random.default_rng(0)
np.set_printoptions(precision=3, suppress=True, linewidth=110)
print("npgpt kernels:", npgpt.kernels.current_backend(),
      "| PyTorch:", torch.__version__ if torch is not None else "not installed")

# %% [markdown]
# ## 1. The task and its batches
#
# `make_task("reverse", ...)` draws digit strings and their reverses. The vocabulary has four
# special ids — pad 0, bos 1, eos 2, unk 3 — then the ten digits. `pad_batch` pads a list of
# pairs into one batch: the source as it is; the decoder's input `tgt_in` starts with bos; its
# target `tgt_out` is the same sequence shifted left and ended by eos (**teacher forcing**: at
# position $t$ the decoder sees the true tokens before $t$ and must predict token $t$). The masks
# are True at padding.

# %%
vocab, train_pairs, test_pairs = make_task("reverse", n_train=4000, n_test=200, seed=0, min_len=4, max_len=8)
by_length = {len(s): (s, t) for s, t in train_pairs}              # one pair of each length
batch = pad_batch([by_length[8], by_length[5], by_length[6]], vocab, max_len=16)
print("vocabulary:", vocab.size, "ids; specials pad, bos, eos, unk =", vocab.PAD, vocab.BOS, vocab.EOS, vocab.UNK)
for name, a in batch._asdict().items():
    print(f"{name:8s}", a[1].astype(int), "  ", a.shape)
print("source", repr(vocab.decode(batch.src[1])), "-> target", repr(vocab.decode(batch.tgt_out[1])))
assert (batch.tgt_in[:, 1:] == batch.tgt_out[:, :-1])[~batch.tgt_pad[:, 1:]].all()

# %% [markdown]
# ## 2. Cross-attention
#
# In a decoder layer the queries come from the target and the keys and values from the memory:
#
# $$
# Q = h\, W_q \;\; (B, T, d) \to (B, H, T, D), \qquad
# K, V = \text{memory}\, W_{kv} \;\; (B, S, d) \to (B, H, S, D), \qquad
# A = \operatorname{softmax}\Bigl(\frac{Q K^\top}{\sqrt D}\Bigr) \;\; (B, H, T, S) .
# $$
#
# Row $t$ of $A$ is a distribution over the **source** positions: what target position $t$ reads
# from the source. $T$ and $S$ need not be equal, and nothing is causal here (the whole source
# is known). The backward returns two gradients, one for the decoder stream and one for the
# memory; since every decoder layer reads the same memory, the encoder receives the **sum** of
# the memory gradients of all decoder layers (a fan-out, as in notebook 01).

# %%
B, T, S, d, H = 2, 3, 5, 8, 2
x = rng.standard_normal((B, T, d))
memory = rng.standard_normal((B, S, d))
cross = nn.MultiHeadAttention(d, H, cross=True, dtype="float64", rng=np.random.default_rng(1), std=0.5)
out = cross.forward(x, memory)
dx, dmemory = cross.backward(rng.standard_normal(out.shape))
print("x", x.shape, "memory", memory.shape, "-> out", out.shape, "| dx", dx.shape, "dmemory", dmemory.shape)
print("parameters:", {n: p.shape for n, p in cross.named_parameters()})

errors = check_module(cross, [x, memory], input_names=["x", "memory"])
print({n: f"{e:.1e}" for n, e in errors.items()})
assert max(errors.values()) < 1e-7

# %% [markdown]
# The whole model, in float64, against the numerical gradient: a sample of coordinates of an
# encoder weight (its gradient arrives only through the memory, summed over both decoder
# layers) and of a decoder one.

# %%
cfg64 = TransformerConfig(src_vocab_size=vocab.size, tgt_vocab_size=vocab.size, d_model=16, n_head=2,
                          n_encoder_layers=2, n_decoder_layers=2, d_ff=32, max_len=16, dropout=0.0,
                          label_smoothing=0.1, dtype="float64")
tiny = Transformer(cfg64, seed=0)
logits, _ = tiny.forward(batch.src, batch.tgt_in, src_pad=batch.src_pad, tgt_pad=batch.tgt_pad)
dlogits = rng.standard_normal(logits.shape)
tiny.zero_grad()
tiny.backward(dlogits)
params = dict(tiny.named_parameters())
for name in ("encoder.0.self_attn.c_attn.weight", "decoder.1.cross_attn.kv_proj.weight", "src_embed.weight"):
    p = params[name]
    index = [tuple(rng.integers(0, n) for n in p.shape) for _ in range(12)]
    numeric = numerical_gradient(lambda: tiny.forward(batch.src, batch.tgt_in, src_pad=batch.src_pad,
                                                      tgt_pad=batch.tgt_pad)[0], p.data, dlogits, index=index)
    picked = tuple(np.array(ix) for ix in zip(*index))
    err = rel_error(p.grad[picked], numeric[picked])
    print(f"{name:38s} {err:.1e}")
    assert err < 1e-7

# %% [markdown]
# ## 3. The three masks
#
# Each attention of the model hides some keys (True = hidden; `reference.attention_mask`):
#
# * **encoder self-attention** $(S \times S)$: the padded source positions, as keys, for every
#   query — whole columns;
# * **decoder self-attention** $(T \times T)$: the future (the causal triangle, $j > i$), and
#   the padded target positions;
# * **cross-attention** $(T \times S)$: the padded source positions; no causal part.
#
# For the second sequence of the batch (a source of 5 digits, padded to 8; a target of 5
# digits and bos, padded to 9; · marks padding):

# %%
b = 1
S, T = batch.src.shape[1], batch.tgt_in.shape[1]

def mask(Tq, Tk, causal, key_pad):
    """Sequence b's (Tq, Tk) mask: attention_mask broadcasts against (B, H, Tq, Tk)."""
    return np.broadcast_to(reference.attention_mask(Tq, Tk, causal, key_pad), (len(key_pad), 1, Tq, Tk))[b, 0]

masks = {
    "encoder self-attention": mask(S, S, False, batch.src_pad),
    "decoder self-attention": mask(T, T, True, batch.tgt_pad),
    "cross-attention": mask(T, S, False, batch.src_pad),
}
by_hand = {
    "encoder self-attention": np.broadcast_to(batch.src_pad[b], (S, S)),
    "decoder self-attention": np.triu(np.ones((T, T), dtype=bool), k=1) | batch.tgt_pad[b],
    "cross-attention": np.broadcast_to(batch.src_pad[b], (T, S)),
}
for name in masks:
    assert np.array_equal(masks[name], by_hand[name]), name

src_labels = [vocab.decode([i]) or "·" for i in batch.src[b]]
tgt_labels = ["<bos>" if i == vocab.BOS else (vocab.decode([i]) or "·") for i in batch.tgt_in[b]]
fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
for ax, (name, m) in zip(axes, masks.items()):
    ax.imshow(~m, cmap="Greys", vmin=0, vmax=1.4)
    rows, cols = (src_labels, src_labels) if name.startswith("encoder") else \
                 (tgt_labels, tgt_labels) if name.startswith("decoder") else (tgt_labels, src_labels)
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("key")
    ax.set_ylabel("query")
    ax.set_title(f"{name}: dark = may look", fontsize=10)
plt.tight_layout()
plt.show()

# %% [markdown]
# The masks are live in the model: whatever sits in the padded source positions, and whatever
# target token comes after position $t$, the logits at the real positions up to $t$ do not move
# by a single bit.

# %%
logits, _ = tiny.forward(batch.src, batch.tgt_in, src_pad=batch.src_pad, tgt_pad=batch.tgt_pad)
src2 = batch.src.copy()
src2[batch.src_pad] = rng.integers(4, vocab.size, size=batch.src_pad.sum())     # garbage in the padding
tgt2 = batch.tgt_in.copy()
tgt2[:, 3:] = rng.integers(4, vocab.size, size=tgt2[:, 3:].shape)             # a different future
logits2, _ = tiny.forward(src2, tgt2, src_pad=batch.src_pad, tgt_pad=batch.tgt_pad)
real_past = ~batch.tgt_pad[:, :3]
print("largest change of the logits at real positions 0..2:", np.abs(logits2 - logits)[:, :3][real_past].max())
assert np.array_equal(logits2[:, :3][real_past], logits[:, :3][real_past])

# %% [markdown]
# ## 4. Post-LN and pre-LN
#
# The paper puts each LayerNorm **after** the residual addition (post-LN); GPT-2 and most models
# since put it **before** the sublayer, on the branch (pre-LN):
#
# $$
# \text{post-LN: } x \leftarrow \operatorname{LN}\bigl(x + \operatorname{sublayer}(x)\bigr)
# \qquad\qquad
# \text{pre-LN: } x \leftarrow x + \operatorname{sublayer}\bigl(\operatorname{LN}(x)\bigr) .
# $$
#
# In pre-LN the residual stream is a sum, $x_L = x_0 + \sum_l f_l(\cdot)$, whose Jacobian holds an
# identity: the gradient reaches every layer directly. In post-LN it goes through every
# LayerNorm on the way down, each rescaling it by the inverse standard deviation of its input.
# Xiong et al. (2020) showed that at initialisation post-LN's gradients are therefore largest
# in the layers nearest the output — one reason the paper needed a learning-rate warmup.
# npgpt's `Transformer(norm_first=...)` computes `torch.nn.Transformer`'s function in both forms
# (PyTorch also ends each stack with a LayerNorm in both, which npgpt reproduces):

# %%
def torch_twin(model):
    """torch.nn.Transformer with embeddings and generator around it, loaded with model's weights."""
    cfg = model.config
    with warnings.catch_warnings():            # "enable_nested_tensor is True, but ...": irrelevant here
        warnings.simplefilter("ignore", UserWarning)
        transformer = torch.nn.Transformer(cfg.d_model, cfg.n_head, cfg.n_encoder_layers, cfg.n_decoder_layers,
                                           cfg.d_ff, dropout=0.0, batch_first=True, norm_first=cfg.norm_first)
    twin = torch.nn.ModuleDict({
        "src_embed": torch.nn.Embedding(cfg.src_vocab_size, cfg.d_model),
        "tgt_embed": torch.nn.Embedding(cfg.tgt_vocab_size, cfg.d_model),
        "transformer": transformer,
        "generator": torch.nn.Linear(cfg.d_model, cfg.tgt_vocab_size)}).double()
    twin.load_state_dict({k: torch.tensor(v) for k, v in model.torch_state_dict().items()})
    return twin

def torch_logits(twin, src, tgt_in, src_pad, tgt_pad, d):
    S, T = src.shape[1], tgt_in.shape[1]
    pe = torch.tensor(nn.sinusoidal_encoding(max(S, T), d, dtype="float64"))
    x = twin["src_embed"](torch.tensor(src)) * math.sqrt(d) + pe[:S]
    y = twin["tgt_embed"](torch.tensor(tgt_in)) * math.sqrt(d) + pe[:T]
    causal = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    src_pad, tgt_pad = torch.tensor(src_pad), torch.tensor(tgt_pad)
    h = twin["transformer"](x, y, tgt_mask=causal, src_key_padding_mask=src_pad,
                            tgt_key_padding_mask=tgt_pad, memory_key_padding_mask=src_pad)
    return twin["generator"](h).detach().numpy()

if torch is not None:
    for norm_first in (False, True):
        model = Transformer(cfg64.replace(norm_first=norm_first), seed=1)
        ours, _ = model.forward(batch.src, batch.tgt_in, src_pad=batch.src_pad, tgt_pad=batch.tgt_pad)
        theirs = torch_logits(torch_twin(model), batch.src, batch.tgt_in, batch.src_pad, batch.tgt_pad, 16)
        real = ~batch.tgt_pad
        print(f"norm_first={norm_first!s:5s}: logits vs torch.nn.Transformer {rel_error(ours[real], theirs[real]):.1e}")
        assert rel_error(ours[real], theirs[real]) < 1e-12
else:
    print("PyTorch is not installed: the comparison with torch.nn.Transformer is skipped")

# %% [markdown]
# The gradient that reaches each decoder layer's weights, at initialisation, for a six-layer
# decoder in both forms (same weights, same batch, the loss's own gradient):

# %%
def layer_gradient_norms(norm_first, seed=0):
    cfg = TransformerConfig(src_vocab_size=vocab.size, tgt_vocab_size=vocab.size, d_model=64, n_head=4,
                            n_encoder_layers=6, n_decoder_layers=6, d_ff=256, max_len=16, dropout=0.0,
                            norm_first=norm_first, label_smoothing=0.0)
    model = Transformer(cfg, seed=seed)
    b = pad_batch(train_pairs[:32], vocab, max_len=16)
    model.zero_grad()
    model.forward(b.src, b.tgt_in, b.tgt_out, b.src_pad, b.tgt_pad)
    model.backward()
    grads = dict(model.named_parameters())
    return [math.sqrt(sum(float((p.grad.astype(np.float64) ** 2).sum())
                          for n, p in grads.items() if n.startswith(f"decoder.{i}.")))
            for i in range(cfg.n_decoder_layers)]

post, pre = layer_gradient_norms(False), layer_gradient_norms(True)
print("post-LN:", np.round(post, 2), f"  top / bottom {post[-1] / post[0]:.2f}")
print("pre-LN: ", np.round(pre, 2), f"  top / bottom {pre[-1] / pre[0]:.2f}")
assert post[-1] / post[0] > 1.5 * (pre[-1] / pre[0])

fig, ax = plt.subplots(figsize=(6, 3.2))
ax.plot(range(1, 7), post, "o-", label="post-LN (the paper)")
ax.plot(range(1, 7), pre, "s-", label="pre-LN")
ax.set_xlabel("decoder layer (1 = nearest the input)")
ax.set_ylabel("|gradient| of the layer's weights")
ax.set_title("at initialisation", fontsize=10)
ax.legend()
ax.grid(alpha=0.3)
plt.show()

# %% [markdown]
# ## 5. Label smoothing
#
# The paper trains towards a softened target: with $\varepsilon = 0.1$, the true token gets
# $1 - \varepsilon + \varepsilon/V$ and every token $\varepsilon / V$ (notebook 01 derived the
# gradient $p - q$). Take logits with a margin $m$ for the right token, $z_y = m$ and $z_v = 0$
# otherwise. With $\varepsilon = 0$ the loss keeps falling as $m \to \infty$: the model is
# pushed towards infinite confidence. With $\varepsilon > 0$ it has a minimum where $p = q$,
# that is $e^{m} = q_y / q_v$:
#
# $$
# m^\ast = \log\Bigl(1 + \frac{V (1 - \varepsilon)}{\varepsilon}\Bigr), \qquad
# \min_m \ell = H(q) = -\textstyle\sum_v q_v \log q_v ,
# $$
#
# the entropy of the smoothed target: the floor of the training loss (0.55 nats for
# $V = 14$, $\varepsilon = 0.1$ — the loss curve below flattens there).

# %%
V = vocab.size
margins = np.linspace(0, 12, 1201)
z = np.zeros((len(margins), V))
z[:, 0] = margins                                          # the right token is token 0
target = np.zeros(len(margins), dtype=np.int64)
curves = {}
for eps in (0.0, 0.1, 0.2):
    curves[eps] = np.array([nn.cross_entropy_forward(z[i:i + 1], target[i:i + 1], label_smoothing=eps)[0]
                            for i in range(len(margins))])
    if eps > 0:
        q = np.full(V, eps / V)
        q[0] += 1 - eps
        m_star = math.log(1 + V * (1 - eps) / eps)
        entropy = float(-(q * np.log(q)).sum())
        best = margins[np.argmin(curves[eps])]
        print(f"eps {eps}: minimum at m = {best:.2f} (m* = {m_star:.3f}); "
              f"min loss {curves[eps].min():.5f} (H(q) = {entropy:.5f})")
        assert abs(best - m_star) <= 0.01 and abs(curves[eps].min() - entropy) < 1e-5

fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
q = np.full(V, 0.1 / V)
q[0] += 0.9
axes[0].bar(np.arange(V) - 0.2, np.eye(V)[0], width=0.4, label="one-hot (eps = 0)")
axes[0].bar(np.arange(V) + 0.2, q, width=0.4, label="smoothed (eps = 0.1)")
axes[0].set_yscale("log")
axes[0].set_ylim(1e-3, 2)
axes[0].set_xlabel("token")
axes[0].set_title("the target distribution q (log scale)", fontsize=10)
axes[0].legend()
for eps, c in curves.items():
    axes[1].plot(margins, c, label=f"eps = {eps}")
axes[1].set_xlabel("logit margin m of the right token")
axes[1].set_ylabel("loss")
axes[1].set_title(f"loss against confidence (V = {V})", fontsize=10)
axes[1].legend()
axes[1].grid(alpha=0.3)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 6. Training on the reverse task
#
# A small post-LN model (two encoder and two decoder layers of width 64), the paper's recipe
# scaled down: Adam with $\beta_2 = 0.98$, the Noam schedule (notebook 06), label smoothing 0.1,
# gradient clipping. 600 steps of 32 pairs, a few seconds:

# %%
cfg = TransformerConfig(src_vocab_size=vocab.size, tgt_vocab_size=vocab.size, d_model=64, n_head=4,
                        n_encoder_layers=2, n_decoder_layers=2, d_ff=128, max_len=16, dropout=0.0,
                        norm_first=False, label_smoothing=0.1, pad_id=vocab.PAD)
model = Transformer(cfg, seed=0)
opt = AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98), eps=1e-9, weight_decay=0.0)
schedule = Noam(cfg.d_model, warmup_steps=100, factor=1.0)
batches = iterate_batches(train_pairs, vocab, batch_size=32, max_len=16, rng=np.random.default_rng(0), epochs=None)

losses = []
for step in range(1, 601):
    b = next(batches)
    opt.lr = schedule(step)
    model.zero_grad()
    _, loss = model.forward(b.src, b.tgt_in, b.tgt_out, b.src_pad, b.tgt_pad)
    model.backward()
    clip_grad_norm(model.parameters(), 1.0)
    opt.step()
    losses.append(loss)
    if step == 200:
        half_trained = model.state_dict()                    # for section 8: a model still unsure
    if step == 1 or step % 150 == 0:
        print(f"step {step:3d}  lr {opt.lr:.2e}  loss {loss:.3f}")

test = pad_batch(test_pairs, vocab, max_len=16)
greedy = model.translate(test.src, max_len=10, beam_size=1)
accuracy = np.mean([out == tgt for out, (_, tgt) in zip(greedy, test_pairs)])
print(f"exact-match accuracy on {len(test_pairs)} unseen sources, greedy: {accuracy:.1%}")
assert np.mean(losses[-50:]) < 0.8 and accuracy > 0.8

# %%
floor = float(-(q * np.log(q)).sum())
fig, ax = plt.subplots(figsize=(7, 3.2))
ax.plot(losses, lw=0.8, alpha=0.5, label="loss per step")
ax.plot(np.arange(25, len(losses) + 1), np.convolve(losses, np.ones(25) / 25, mode="valid"), label="mean of 25 steps")
ax.axhline(floor, color="C3", ls=":", label=f"label-smoothing floor H(q) = {floor:.2f}")
ax.set_xlabel("step")
ax.set_ylabel("smoothed cross-entropy")
ax.legend()
ax.grid(alpha=0.3)
plt.show()

# %% [markdown]
# ## 7. What the decoder reads: the cross-attention map
#
# To reverse a string, the decoder's $t$-th output should read source position $S - 1 - t$: the
# cross-attention should sit on the **anti-diagonal**. The weights are recomputed here from the
# layers' own parts — the memory, the last decoder layer's post-LN self-attention sublayer, its
# `q_proj` and `kv_proj`, and the reference attention kernel — and the recomputation is checked
# against the layer's output before it is drawn. The decoder is fed its own greedy output.

# %%
def cross_attention(model, src, tgt_in, src_pad):
    """The probabilities (B, H, T, S) of the last decoder layer's cross-attention (post-LN)."""
    memory = model.encode(src, src_pad)
    T = tgt_in.shape[1]
    y = model.tgt_embed.forward(tgt_in) * model.emb_scale + model.pos.forward(T)
    *below, last = list(model.decoder)
    for layer in below:
        y = layer.forward(y, memory, src_pad=src_pad)
    h = last.norm1.forward(y + last.self_attn.forward(y))           # the query stream (post-LN)
    attn = last.cross_attn
    q = nn.split_heads(attn.q_proj.forward(h), attn.n_head)                          # (B, H, T, D)
    k, v = (nn.split_heads(a, attn.n_head) for a in np.split(attn.kv_proj.forward(memory), 2, axis=-1))
    out, cache = reference.attention_forward(q, k, v, causal=False, key_pad=src_pad)
    assert rel_error(attn.c_proj.forward(nn.merge_heads(out)), attn.forward(h, memory, key_pad=src_pad)) < 1e-5
    return cache.att

src = np.array([s for s, _ in test_pairs if len(s) == 8])          # the sources of 8 digits
outputs = model.translate(src, max_len=10)
keep = [j for j, o in enumerate(outputs) if len(o) == 8]           # (nearly all of them)
src, outputs = src[keep], [outputs[j] for j in keep]
tgt_in = np.array([[vocab.BOS, *o] for o in outputs])                # (B, 9): bos + 8 digits
att = cross_attention(model, src, tgt_in, np.zeros(src.shape, dtype=bool)).mean(axis=1)   # (B, T, S), mean of heads
on_anti_diagonal = np.mean(att[:, :8].argmax(axis=-1) == 7 - np.arange(8))
print(f"target positions whose strongest source position is S - 1 - t: {on_anti_diagonal:.0%} "
      f"({len(src)} sources of 8 digits)")
assert on_anti_diagonal > 0.8

# %%
i = 0
fig, ax = plt.subplots(figsize=(4.6, 4.6))
ax.imshow(att[i, :8], cmap="viridis")
ax.set_xticks(range(8), list(vocab.decode(src[i])))
ax.set_yticks(range(8), list(vocab.decode(outputs[i])))
ax.set_xlabel("source")
ax.set_ylabel("generated target")
ax.set_title("cross-attention of the last decoder layer\n(mean of 4 heads)", fontsize=10)
plt.show()

# %% [markdown]
# ## 8. Greedy decoding and beam search
#
# `translate` encodes the source once, then generates with a KV cache (notebook 03), stopping at
# eos. **Greedy** takes the most probable token at each step. **Beam search** keeps the $k$ most
# probable prefixes, extends each by every token, and keeps the $k$ best of those; it scores a
# finished hypothesis by $\log P(y \mid x) / \mathrm{lp}(|y|)$ with GNMT's length penalty
# $\mathrm{lp}(L) = ((5 + L)/6)^\alpha$ (with $\alpha = 0$: the plain log-probability). Greedy
# can commit to a token that looked best but leads nowhere; the beam keeps alternatives. First a
# check that the score `translate` reports is the log-probability of its output, recomputed by
# the teacher-forced forward of section 1:

# %%
hyps, scores = model.translate(test.src[:20], max_len=10, beam_size=4, length_penalty=0.0, return_scores=True)
recomputed = []
for k, y in enumerate(hyps):
    src_k = test.src[k:k + 1][:, ~test.src_pad[k]]
    logits, _ = model.forward(src_k, np.array([[vocab.BOS, *y]]))
    logp = logits[0].astype(np.float64) - logits[0].max(axis=-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(axis=-1, keepdims=True))             # log-softmax: (len(y) + 1, V)
    recomputed.append(logp[np.arange(len(y) + 1), [*y, vocab.EOS]].sum())
print(f"beam scores vs log P(y + eos | x) recomputed: {rel_error(np.array(scores), np.array(recomputed)):.1e}")
assert rel_error(np.array(scores), np.array(recomputed)) < 1e-5

# %%
results = {}
for k in (1, 2, 4):
    hyps, scores = model.translate(test.src, max_len=10, beam_size=k, return_scores=True)
    results[k] = (np.mean([h == t for h, (_, t) in zip(hyps, test_pairs)]), float(np.mean(scores)), hyps)
    print(f"beam size {k}: exact match {results[k][0]:.1%}, mean score {results[k][1]:.4f}")
assert results[4][1] >= results[1][1] - 1e-6
assert model.beam_search(test.src, beam_size=1, max_len=10) == results[1][2]      # a beam of 1 is greedy
differ = [j for j in range(len(test_pairs)) if results[1][2][j] != results[4][2][j]]
print(f"greedy and a beam of 4 disagree on {len(differ)} of {len(test_pairs)} sources")
for j in differ[:4]:
    print(f"  {vocab.decode(test_pairs[j][0])!r}: greedy {vocab.decode(results[1][2][j])!r}, "
          f"beam {vocab.decode(results[4][2][j])!r}, right {vocab.decode(test_pairs[j][1])!r}")

# %% [markdown]
# The trained model is so sure of each next digit that the beam rarely finds anything greedy
# missed. The same model after 200 of its 600 steps is still unsure, and there the two differ:
# on every source where they disagree, the beam's output is the more probable one.

# %%
unsure = Transformer(cfg, seed=0)
unsure.load_state_dict(half_trained)
half = {k: unsure.translate(test.src, max_len=10, beam_size=k, return_scores=True) for k in (1, 4)}
differ = [j for j in range(len(test_pairs)) if half[1][0][j] != half[4][0][j]]
for k, (hyps, scores) in half.items():
    exact = np.mean([h == t for h, (_, t) in zip(hyps, test_pairs)])
    print(f"after 200 steps, beam size {k}: exact match {exact:.1%}, mean score {np.mean(scores):.4f}")
print(f"greedy and a beam of 4 disagree on {len(differ)} of {len(test_pairs)} sources, e.g.")
for j in differ[:4]:
    print(f"  {vocab.decode(test_pairs[j][0])!r}: greedy {vocab.decode(half[1][0][j])!r} "
          f"({half[1][1][j]:.2f}), beam {vocab.decode(half[4][0][j])!r} ({half[4][1][j]:.2f}), "
          f"right {vocab.decode(test_pairs[j][1])!r}")
assert differ and all(half[4][1][j] >= half[1][1][j] - 1e-6 for j in differ)

# %% [markdown]
# ## Checks run above
#
# * Cross-attention's gradients (decoder stream, memory, all four weights) and a sample of the
#   whole model's (encoder weights through the memory, the embedding table) match the
#   numerical gradient.
# * The three masks are the causal triangle and the padding columns; garbage in the padding and
#   a changed future leave the logits at real, earlier positions bit-for-bit unchanged.
# * Post-LN and pre-LN models compute `torch.nn.Transformer`'s logits (when PyTorch is
#   installed); at initialisation post-LN's decoder gradients grow towards the top.
# * The label-smoothed loss has its minimum at $m^\ast = \log(1 + V(1-\varepsilon)/\varepsilon)$,
#   equal to the entropy of the smoothed target.
# * The trained model reverses unseen strings; its cross-attention sits on the anti-diagonal
#   (recomputed from the layer's parts, checked against its output).
# * Beam search's scores are the teacher-forced log-probabilities of its outputs; a wider beam
#   scores at least as well on average; a beam of one is greedy; where a half-trained model's
#   greedy and beam outputs differ, the beam's is the more probable.
#
# ## Exercises
#
# 1. `npgpt exercise start multihead_attention` (then `residual`): the layers this model is made
#    of; give your attention a `cross` mode and check it with section 2's `check_module` call.
# 2. Train the same model on `make_task("sort", ...)` and draw its cross-attention. What pattern
#    do you expect, and what do you see?
# 3. Train with `norm_first=True`, without the warmup (a constant learning rate at the Noam
#    peak), and again post-LN without warmup. Which one trains?
# 4. Set `label_smoothing=0` and compare the loss curves and the test accuracy. Why does the
#    loss now go lower, and does the accuracy follow?
# 5. Take one source on which the half-trained model's greedy and beam outputs disagree. Print
#    the log-probability of each token of both outputs: where did greedy commit too early?
