# %% [markdown]
# # 08 — Pre-training and fine-tuning
#
# GPT-1's recipe (Radford et al., 2018): first **pre-train** a language model on plenty of
# unlabelled text — predicting the next token needs no labels — then **fine-tune** it on a small
# labelled task, reading the answer off its hidden states. What the model learned about the
# language from the first stage is there to be reused in the second. This notebook runs both
# stages in miniature on npgpt's built-in data, then looks at two ways to fine-tune fewer
# parameters: freezing the bottom of the network, and LoRA's low-rank adapters, derived and
# checked. Everything is `npgpt.finetune` on top of the `GPT` of notebook 03, and the training
# loops are written out.

# %%
import math

import matplotlib.pyplot as plt
import numpy as np

import npgpt
from npgpt import GPT, GPTConfig
from npgpt.data import default_corpus, get_batch, split
from npgpt.finetune import (GPTClassifier, LoRALinear, add_lora, classification_batches, encode_texts, freeze,
                            last_token_index, merge_lora, shuffled_words_task)
from npgpt.gradcheck import check_module, numerical_gradient, rel_error
from npgpt.nn import Linear
from npgpt.optim import AdamW, WarmupCosine, clip_grad_norm
from npgpt.tokenizers import CharTokenizer

rng = np.random.default_rng(0)
np.set_printoptions(precision=3, suppress=True, linewidth=110)
print("npgpt kernels:", npgpt.kernels.current_backend())

# %% [markdown]
# ## 1. Pre-training: a language model on unlabelled text
#
# The text: npgpt's built-in corpus, lowercased (the classification task below is lowercased
# too), one token per character. The model: two blocks of width 64, with room for 128
# positions. A few hundred AdamW steps on windows of 64 characters, with a warmup and a cosine
# decay (notebook 06), and a sample every so often to watch it learn:

# %%
text = default_corpus().lower()
tok = CharTokenizer.from_text(text)
train_ids, val_ids = split(np.array(tok.encode(text)), val_fraction=0.1)
cfg = GPTConfig(vocab_size=tok.vocab_size, block_size=128, n_layer=2, n_head=4, n_embd=64)
model = GPT(cfg, seed=0)
print(f"{tok.vocab_size} characters, log V = {math.log(tok.vocab_size):.2f};  {model.num_parameters():,} parameters")

def val_loss(gpt, data=val_ids, batches=4):
    r = np.random.default_rng(123)                    # the same windows at every call
    return float(np.mean([gpt.forward(*get_batch(data, 16, 64, r))[1] for _ in range(batches)]))

def sample(gpt, prompt="the ", n=70):
    return tok.decode(gpt.generate(np.array(tok.encode(prompt)), max_new_tokens=n, temperature=0.8,
                                   top_k=10, seed=0))

steps = 300
opt = AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1)
schedule = WarmupCosine(max_lr=3e-3, warmup_steps=20, total_steps=steps, min_lr=3e-4)
train_curve, val_points = [], [(0, val_loss(model))]
print(f"step   0  val {val_points[0][1]:.3f}  {sample(model)!r}")
for step in range(1, steps + 1):
    x, y = get_batch(train_ids, 16, 64, rng)
    opt.lr = schedule(step)
    model.zero_grad()
    _, loss = model.forward(x, y)
    model.backward()
    clip_grad_norm(model.parameters(), 1.0)
    opt.step()
    train_curve.append(loss)
    if step in (50, 100, 200, 300):
        val_points.append((step, val_loss(model)))
        print(f"step {step:3d}  val {val_points[-1][1]:.3f}  {sample(model)!r}")
print(f"the same estimate on training windows: {val_loss(model, train_ids):.3f}")
assert val_points[-1][1] < val_points[0][1] - 1.5

# %% [markdown]
# The validation text (the last tenth of the corpus) happens to be a little easier than the
# average training window — compare the two estimates on the same number of windows above — so
# the validation points lie below the training curve.

# %%
fig, ax = plt.subplots(figsize=(7, 3.2))
ax.plot(range(1, steps + 1), train_curve, lw=0.8, alpha=0.6, label="training batch")
ax.plot(*zip(*val_points), "o-", label="validation")
ax.axhline(math.log(tok.vocab_size), color="gray", ls="--", label="log V")
ax.set_xlabel("step")
ax.set_ylabel("cross-entropy (nats/char)")
ax.set_title("pre-training", fontsize=10)
ax.legend()
ax.grid(alpha=0.3)
plt.show()
pretrained = model.state_dict()                       # {name: array}: the weights to start from

# %% [markdown]
# ## 2. The task, and GPT-1's classification head
#
# The built-in task (`shuffled_words_task`): sentences of the same corpus, lowercased, each
# given once in its own order (class 0, "original") and once with its words shuffled (class 1).
# Only the order of the words tells the classes apart — the kind of knowledge a language model
# picks up without being told.

# %%
train, test = shuffled_words_task(seed=0, max_words=10)
print(f"{len(train.texts)} training and {len(test.texts)} test sentences; classes {train.classes}")
for t, c in zip(train.texts[:4], train.labels[:4]):
    print(f"  {train.classes[c]:9s} {t!r}")
train_idx, train_pad = encode_texts(train.texts, tok, max_len=cfg.block_size)
test_idx, test_pad = encode_texts(test.texts, tok, max_len=cfg.block_size)
print("encoded:", train_idx.shape, "with right padding (pad True after each text)")

# %% [markdown]
# GPT-1 reads the class off the hidden state of the **last real token**: with a causal model it
# is the only position that has seen the whole text, and, the padding being on the right, it
# has seen no padding at all — so a padded batch needs no extra mask. With the final hidden
# states $h = \operatorname{LN}_f(x_L)$ of shape $(B, T, C)$ and $\ell_b$ the last real position
# of sequence $b$:
#
# $$
# f_b = h_{b, \ell_b} \in \mathbb R^C, \qquad \text{logits}_b = f_b\, W_{\text{cls}} + b_{\text{cls}} \in \mathbb R^K,
# \qquad \bar h_{b, t} = [t = \ell_b]\; \bar f_b ,
# $$
#
# the backward of a gather being a scatter. Checked: `GPTClassifier`'s logits are its head
# applied to `forward_hidden` at `last_token_index`; extra padding (with any token ids in it)
# changes no logit (beyond float32 rounding); and its gradients match the numerical ones.

# %%
clf = GPTClassifier(GPT(cfg, seed=0), n_classes=2)
idx, pad = train_idx[:6, :40], train_pad[:6, :40]
logits, _ = clf.forward(idx, pad=pad)
last = last_token_index(pad, idx.shape)
h = clf.gpt.forward_hidden(idx)
print("last real positions:", last)
assert np.allclose(logits, clf.head.forward(h[np.arange(len(idx)), last]))

more_idx = np.concatenate([idx, rng.integers(0, tok.vocab_size, size=(6, 9))], axis=1)
more_pad = np.concatenate([pad, np.ones((6, 9), dtype=bool)], axis=1)
err = rel_error(clf.forward(more_idx, pad=more_pad)[0], logits)
print(f"logits with 9 more padded positions vs without: {err:.1e}")
assert err < 1e-6                                                   # padding is invisible

small = GPTClassifier(GPT(GPTConfig.preset("gradcheck"), seed=0), n_classes=3)   # float64, tiny
ids = rng.integers(0, 11, size=(3, 6))
ids_pad = np.zeros((3, 6), dtype=bool)
ids_pad[1, 4:] = True
out, _ = small.forward(ids, pad=ids_pad)
dout = rng.standard_normal(out.shape)
small.zero_grad()
small.backward(dout)
for name, p in small.named_parameters():
    if name in ("head.weight", "gpt.h.1.mlp.c_fc.weight", "gpt.wte.weight"):
        numeric = numerical_gradient(lambda: small.forward(ids, pad=ids_pad)[0], p.data, dout)
        print(f"{name:26s} {rel_error(p.grad, numeric):.1e}")
        assert rel_error(p.grad, numeric) < 1e-7

# %% [markdown]
# ## 3. Fine-tuning: pre-trained against random initialisation
#
# The same classifier, trained the same way (AdamW, batches of 16, the whole model trainable),
# from two starts: the pre-trained weights of section 1, and a fresh random initialisation.

# %%
def finetune(clf, steps=120, lr=1e-3, seed=0, batch_size=16):
    """Train clf on the task; return the loss of every step and the test accuracy."""
    opt = AdamW(clf.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    r = np.random.default_rng(seed)
    losses = []
    while len(losses) < steps:
        for xb, pb, yb in classification_batches(train_idx, train_pad, train.labels, batch_size, r):
            clf.zero_grad()
            _, loss = clf.forward(xb, yb, pb)
            clf.backward()
            clip_grad_norm(clf.parameters(), 1.0)
            opt.step()
            losses.append(loss)
            if len(losses) == steps:
                break
    predictions = np.concatenate([clf.predict(xb, pb)
                                  for xb, pb, _ in classification_batches(test_idx, test_pad, test.labels, 256)])
    return np.array(losses), float(np.mean(predictions == test.labels))

def from_pretrained():
    gpt = GPT(cfg, seed=1)
    gpt.load_state_dict(pretrained)
    return gpt

runs = {}
runs["random initialisation"] = finetune(GPTClassifier(GPT(cfg, seed=1), n_classes=2))
runs["pre-trained"] = finetune(GPTClassifier(from_pretrained(), n_classes=2))
for name, (losses, acc) in runs.items():
    print(f"{name:22s} loss over the last 30 steps {losses[-30:].mean():.3f};  test accuracy {acc:.1%}")
assert runs["pre-trained"][0][-30:].mean() < runs["random initialisation"][0][-30:].mean()

# %% [markdown]
# The pre-trained start fits the task faster: its loss falls further below a coin toss's
# $\log 2$ than the random start's (section 6 draws both). At this scale — a model
# pre-trained for seconds, a few hundred labelled sentences — the gap in test accuracy is a few
# points and noisy; GPT-1's gains came from a model pre-trained for a month on 7,000 books.
#
# ## 4. Freezing
#
# The cheapest way to fine-tune less: leave the bottom of the network as pre-training left it.
# `freeze(model, "gpt.wte", "gpt.wpe", "gpt.h.0")` sets `requires_grad = False` on those
# parameters: an optimizer built **afterwards** leaves them out, and the backward stops at the
# lowest block that still trains. Checked: after some steps the frozen tensors are bit-for-bit
# what they were, and everything else has moved.

# %%
clf = GPTClassifier(from_pretrained(), n_classes=2)
total = clf.num_parameters()
trainable = freeze(clf, "gpt.wte", "gpt.wpe", "gpt.h.0")
print(f"{trainable:,} of {total:,} parameters still train")
assert trainable == clf.num_parameters(trainable_only=True)
before = {name: p.data.copy() for name, p in clf.named_parameters()}
finetune(clf, steps=5)
frozen = [n for n, p in clf.named_parameters() if not p.requires_grad]
print("frozen:", frozen[:3], "...", len(frozen), "tensors")
assert all(np.array_equal(before[n], p.data) for n, p in clf.named_parameters() if not p.requires_grad)
assert all(not np.array_equal(before[n], p.data) for n, p in clf.named_parameters() if p.requires_grad)

# %% [markdown]
# ## 5. LoRA: low-rank adapters
#
# Hu et al. (2021) freeze every weight matrix $W: (\text{in}, \text{out})$ and learn a low-rank
# correction beside it:
#
# $$
# y = x W + b + \frac{\alpha}{r}\, x A B, \qquad A: (\text{in}, r), \quad B: (r, \text{out}),
# \quad r \ll \min(\text{in}, \text{out}) .
# $$
#
# * **Parameters**: $r(\text{in} + \text{out})$ per matrix instead of $\text{in} \cdot \text{out}$.
# * **The start changes nothing**: $B = 0$ (and $A$ random), so $xAB = 0$ and the model computes
#   exactly what it did. Not $A = B = 0$: the gradients
#   $\bar B = \frac\alpha r (xA)^\top \bar y$ and $\bar A = \frac\alpha r\, x^\top (\bar y B^\top)$
#   would then both vanish forever. With $B = 0$ only $\bar A$ vanishes at the first step; after
#   one update of $B$ both move.
# * **Merging costs nothing at inference**: $W' = W + \frac\alpha r AB$ is a plain matrix of the
#   original shape, and $xW' = xW + \frac\alpha r xAB$ exactly (up to rounding).
#
# First the layer alone, `LoRALinear`, against the numerical gradient (with a random $B$, so that
# $\bar A$ is not trivially 0):

# %%
lora = LoRALinear(Linear(6, 5, dtype="float64", rng=np.random.default_rng(1)), rank=2, alpha=4.0)
lora.lora_B.data[...] = rng.standard_normal(lora.lora_B.shape)
x = rng.standard_normal((3, 4, 6))
errors = check_module(lora, [x], input_names=["x"])
print({n: f"{e:.1e}" for n, e in errors.items()}, "(the base weight and bias are frozen: not listed)")
assert set(errors) == {"x", "lora_A", "lora_B"} and max(errors.values()) < 1e-7

# %% [markdown]
# Then on the pre-trained classifier: `add_lora` wraps the four matrices of every block
# (attention's `c_attn`, `c_proj`; the MLP's `c_fc`, `c_proj`) and freezes the rest of the GPT;
# the classification head stays trainable.

# %%
clf = GPTClassifier(from_pretrained(), n_classes=2)
before, _ = clf.forward(test_idx[:16], pad=test_pad[:16])
rank, alpha = 4, 8.0
trainable = add_lora(clf, rank=rank, alpha=alpha)
after, _ = clf.forward(test_idx[:16], pad=test_pad[:16])
print("unchanged by add_lora:", np.array_equal(before, after))
assert np.array_equal(before, after)

C = cfg.n_embd
shapes = [(C, 3 * C), (C, C), (C, 4 * C), (4 * C, C)]            # c_attn, attn.c_proj, c_fc, mlp.c_proj
expected = cfg.n_layer * sum(rank * (i + o) for i, o in shapes) + (C * 2 + 2)   # adapters + head
full = cfg.n_layer * sum(i * o for i, o in shapes)
print(f"trainable: {trainable:,} (adapters and head) against {full:,} in the four matrices of each block")
assert trainable == expected == clf.num_parameters(trainable_only=True)

clf.zero_grad()
clf.forward(train_idx[:32], train.labels[:32], train_pad[:32])
clf.backward()
grads = {n: np.abs(p.grad).max() for n, p in clf.named_parameters() if "lora" in n}
print(f"first backward: largest |dA| {max(v for n, v in grads.items() if n.endswith('lora_A')):.1e}, "
      f"largest |dB| {max(v for n, v in grads.items() if n.endswith('lora_B')):.1e}")
assert all(v == 0 for n, v in grads.items() if n.endswith("lora_A"))
assert all(v > 0 for n, v in grads.items() if n.endswith("lora_B"))

# %% [markdown]
# Fine-tune the adapters (a larger learning rate suits them: they start from zero), then merge
# them: the merged model has the original parameter names and shapes and gives the same logits.

# %%
runs[f"pre-trained, LoRA r={rank}"] = finetune(clf, lr=3e-3)
losses, acc = runs[f"pre-trained, LoRA r={rank}"]
print(f"LoRA: loss over the last 30 steps {losses[-30:].mean():.3f};  test accuracy {acc:.1%}")

adapted, _ = clf.forward(test_idx[:64], pad=test_pad[:64])
print("layers merged:", merge_lora(clf))
merged, _ = clf.forward(test_idx[:64], pad=test_pad[:64])
print(f"logits after merging vs before: {rel_error(merged, adapted):.1e}")
assert rel_error(merged, adapted) < 1e-5
assert not [n for n, _ in clf.named_parameters() if "lora" in n]
assert {n: p.shape for n, p in clf.gpt.named_parameters()} == {n: a.shape for n, a in pretrained.items()}

# %% [markdown]
# ## 6. The three fine-tunings side by side
#
# LoRA trains 8,322 parameters (the adapters and the head) against the full model's 113,346:
# compare its curve with the full fine-tuning of the same pre-trained model.

# %%
fig, ax = plt.subplots(figsize=(7.5, 3.4))
for name, (losses, acc) in runs.items():
    ax.plot(np.arange(20, len(losses) + 1), np.convolve(losses, np.ones(20) / 20, mode="valid"),
            label=f"{name} (test accuracy {acc:.0%})")
ax.axhline(math.log(2), color="gray", ls="--", label="log 2: a coin toss")
ax.set_xlabel("fine-tuning step")
ax.set_ylabel("classification loss (mean of 20 steps)")
ax.legend(fontsize=8)
ax.grid(alpha=0.3)
plt.show()

# %% [markdown]
# ## Checks run above
#
# * Pre-training lowers the validation loss by more than 1.5 nats.
# * `GPTClassifier`'s logits are its head applied to the last real token's hidden state; extra
#   padding changes no logit; its gradients match the numerical ones.
# * Fine-tuning from the pre-trained weights fits the task faster than from a random start.
# * Freezing: frozen tensors are bit-for-bit unchanged after training, every other tensor moved.
# * LoRA: the layer's gradients match the numerical ones; `add_lora` leaves the output exactly
#   unchanged, trains $r(\text{in} + \text{out})$ parameters per matrix plus the head, and
#   its first backward gives $\bar A = 0$, $\bar B \ne 0$; merging changes no output and restores
#   the original parameter names and shapes.
#
# ## Exercises
#
# 1. `npgpt exercise start linear`: the layer that LoRA wraps. Then write `lora_forward` and
#    `lora_backward` yourself from section 5's formulas and compare with `npgpt.finetune`'s.
# 2. `npgpt exercise start tied_head`: the language-model head that pre-training trains and
#    GPT-1's auxiliary loss reuses. Fine-tune with `GPTClassifier(..., aux_lm_weight=0.5)`: does
#    the auxiliary language-modelling loss help at this scale?
# 3. Pre-train for 100, 250, 1000 steps and fine-tune from each. Plot the test accuracy against
#    the pre-training validation loss.
# 4. LoRA with rank 1, 4, 16: the trainable parameters and the final fine-tuning loss of each.
#    What does rank 1 already capture?
# 5. Initialise LoRA with $A = B = 0$ (set `lora_A.data[...] = 0` after `add_lora`) and train.
#    Confirm that nothing but the head ever moves, as section 5 predicts.
