# %% [markdown]
# # 04 — Tokens and language models
#
# A language model gives a probability to every text. Cut the text into tokens $x_1 \ldots x_T$;
# the chain rule of probability turns the whole into a product of next-token predictions,
#
# $$
# p(x_1, \ldots, x_T) = \prod_{t=1}^{T} p(x_t \mid x_1, \ldots, x_{t-1}),
# $$
#
# so a language model is a classifier over the vocabulary, applied at every position, and its
# training loss is the mean cross-entropy $-\frac1T \sum_t \log p(x_t \mid x_{<t})$. This
# notebook is about the two ends of that sentence: what a token is (characters, bytes, byte-pair
# merges) and what the loss means (nats, bits, perplexity, and the number an untrained model
# starts from), with the simplest language model — a table of bigram counts — as the baseline
# every later model must beat.

# %%
import math
from collections import Counter

import matplotlib.pyplot as plt
import numpy as np
import regex

import npgpt
from npgpt import GPT, GPTConfig, nn
from npgpt.data import default_corpus, split
from npgpt.nn import Parameter
from npgpt.optim import AdamW
from npgpt.tokenizers import GPT2_SPLIT_PATTERN, BPETokenizer, CharTokenizer, bytes_to_unicode

np.set_printoptions(precision=3, suppress=True, linewidth=110)
print("npgpt kernels:", npgpt.kernels.current_backend())

# %% [markdown]
# ## 1. Characters
#
# The simplest tokenizer gives one id to each distinct character of the training text
# (`CharTokenizer`, nanoGPT's Shakespeare tokenizer). npgpt's built-in corpus is the text of
# Python's own documentation:

# %%
text = default_corpus()
chars = CharTokenizer.from_text(text)
print(f"{len(text):,} characters, {chars.vocab_size} distinct:")
print(repr("".join(chars.chars)))

sample = "Assert statements are a convenient way"
ids = chars.encode(sample)
print(ids)
assert chars.decode(ids) == sample

# %% [markdown]
# Small vocabulary, long sequences (one token per letter), and a closed world: a character that
# the training text lacks has no id at all.

# %%
try:
    chars.encode("naïve")
except ValueError as e:
    print("ValueError:", e)

# %% [markdown]
# ## 2. Bytes
#
# Every string is stored as bytes: UTF-8 writes a character as 1 to 4 bytes, one for ASCII and
# three for most Chinese characters, whose first byte has the bit pattern `1110xxxx`
# ($\texttt{0xE0}$–$\texttt{0xEF}$) and whose next two are continuation bytes `10xxxxxx`
# ($\texttt{0x80}$–$\texttt{0xBF}$). A tokenizer that starts from the 256 byte values can
# therefore encode any text, with no unknown token — GPT-2's choice.

# %%
chinese = "我爱自然语言处理"                 # "I love natural language processing"
raw = chinese.encode("utf-8")
print(f"{len(chinese)} characters, {len(raw)} bytes")
for c in chinese[:3]:
    print(c, [f"0x{b:02X}" for b in c.encode("utf-8")])

assert len(raw) == 3 * len(chinese)
assert all(0xE0 <= b <= 0xEF for b in raw[0::3])                       # lead bytes
assert all(0x80 <= b <= 0xBF for i, b in enumerate(raw) if i % 3)       # continuation bytes

# %% [markdown]
# ## 3. GPT-2's split pattern
#
# Byte-pair encoding (next section) merges frequent neighbours into new tokens. Left alone it
# would learn tokens such as "dog." and "dog!" as well as "dog", and glue words to the
# punctuation after them. GPT-2 first cuts the text into pieces with a regular expression —
# contractions, runs of letters, of digits, of other symbols, each with at most one leading
# space, and runs of whitespace — and merges only *inside* a piece:

# %%
print(GPT2_SPLIT_PATTERN)
example = "It's 2024: don't   panic, print(x)!"
pieces = regex.findall(GPT2_SPLIT_PATTERN, example)
print(pieces)
assert "".join(pieces) == example               # the split loses nothing

# %% [markdown]
# ## 4. Byte-pair encoding
#
# Training (Sennrich et al., 2016, on bytes as in GPT-2): start from the 256 byte tokens; count
# every adjacent pair of tokens inside the pieces, each piece weighted by how often it occurs;
# give the most frequent pair a new id and replace it everywhere; repeat until the vocabulary
# has the size asked for. Encoding a new text replays the merges, the earliest learned first.
# GPT-2 learned 50,000 merges; here 512 on the corpus:

# %%
bpe = BPETokenizer.train(text, vocab_size=256 + 512 + 1)     # + 1: the <|endoftext|> token
byte_of = {c: b for b, c in bytes_to_unicode().items()}     # vocab.json writes bytes as chars

def readable(token):
    return repr(bytes(byte_of[c] for c in token).decode("utf-8", errors="replace"))

print(f"vocabulary: {bpe.vocab_size} tokens; the first 12 merges:")
for rank, (left, right) in enumerate(bpe.merges[:12]):
    print(f"  {rank:2d}: {readable(left):8s} + {readable(right):8s} -> {readable(left + right)}")

# %% [markdown]
# The documentation's indentation makes two spaces the most frequent pair. The first merge must
# be the most frequent pair of the whole text — counted here independently of npgpt's trainer
# (which keeps its counts incrementally, with a heap):

# %%
pairs = Counter()
for piece, n in Counter(regex.findall(GPT2_SPLIT_PATTERN, text)).items():
    b = piece.encode("utf-8")
    for pair in zip(b, b[1:]):
        pairs[pair] += n
(top_pair, top_count), = pairs.most_common(1)
first = tuple(byte_of[bpe.merges[0][k]] for k in (0, 1))
print(f"most frequent pair: {bytes(top_pair)!r} ({top_count:,} times); npgpt's first merge: "
      f"{bytes(first)!r} ({pairs[first]:,} times)")
assert pairs[first] == top_count

# %% [markdown]
# Any text round-trips, including text the merges never saw: the Chinese sentence has no merge
# of its own in an English corpus, so it stays 24 byte tokens — a byte-level vocabulary pays
# for rare scripts in sequence length, not in unknown tokens.

# %%
mixed = "    return the x  # 我爱 ✓"
tokens = bpe.encode(mixed)
print(len(mixed), "characters ->", len(tokens), "tokens:")
print([bytes(byte_of[c] for c in bpe.id_to_token(t)) for t in tokens])
assert bpe.decode(tokens) == mixed
assert bpe.encode(chinese) == list(chinese.encode("utf-8"))    # byte token id = byte value

# %% [markdown]
# **Compression.** Each merge can only shorten an encoding: with the merges $0 \ldots k$, the
# encoder applies the first $k$ exactly as before (merge $k$ has the lowest priority and makes a
# token that no earlier merge uses), then joins the pairs of merge $k$ where they remain. So the
# token count falls monotonically with the number of merges. Below, tokenizers made of the
# first $k$ merges (a `BPETokenizer` built from a prefix of the trained vocabulary) encode the
# validation part of the corpus:

# %%
held_out = text[-40_000:]
ranks = [0, 8, 16, 32, 64, 128, 256, 512]
bytes_per_token = []
for k in ranks:
    vocab = {t: i for t, i in bpe.encoder.items() if i < 256 + k}     # the bytes, then k merges
    bytes_per_token.append(len(held_out.encode("utf-8")) / len(BPETokenizer(vocab, bpe.merges[:k]).encode(held_out)))
print("bytes per token:", np.round(bytes_per_token, 2))
assert bytes_per_token[0] == 1.0
assert all(a <= b for a, b in zip(bytes_per_token, bytes_per_token[1:]))

fig, ax = plt.subplots(figsize=(6, 3.2))
ax.plot(ranks, bytes_per_token, "o-")
ax.set_xscale("symlog", linthresh=8)
ax.set_xticks(ranks, [str(k) for k in ranks])
ax.minorticks_off()
ax.set_xlabel("number of merges")
ax.set_ylabel("bytes per token (held-out text)")
ax.set_title("Byte-pair encoding: each merge shortens the text")
ax.grid(alpha=0.3)
plt.show()

# %% [markdown]
# ## 5. The baseline: a bigram model
#
# The simplest language model conditions on the previous token only:
# $p(x_t \mid x_{<t}) \approx P[x_{t-1}, x_t]$, one row of a $V \times V$ table per previous
# token. Its maximum-likelihood estimate is the table of counts, each row normalised; add-one
# (Laplace) smoothing keeps pairs the training text never showed from getting probability 0:
#
# $$
# P[a, b] = \frac{N[a, b] + 1}{\sum_{b'} N[a, b'] + V}.
# $$
#
# On characters, with the first 90% of the corpus for training and the last 10% held out:

# %%
ids = np.array(chars.encode(text))
train_ids, val_ids = split(ids, val_fraction=0.1)
V = chars.vocab_size

N = np.zeros((V, V))
np.add.at(N, (train_ids[:-1], train_ids[1:]), 1)
P = (N + 1) / (N.sum(axis=1, keepdims=True) + V)

def bigram_loss(P, data):
    """Mean -log P[x_t, x_{t+1}] over a token array, in nats."""
    return float(-np.log(P[data[:-1], data[1:]]).mean())

unigram = (np.bincount(train_ids, minlength=V) + 1) / (len(train_ids) + V)
losses = {"uniform": math.log(V),
          "unigram": float(-np.log(unigram[val_ids]).mean()),
          "bigram": bigram_loss(P, val_ids)}
for name, loss in losses.items():
    print(f"{name:8s} {loss:.3f} nats/char")
assert losses["bigram"] < losses["unigram"] < losses["uniform"]

# %% [markdown]
# The table, for the 28 most frequent characters (row: the previous character, column: the
# next; brighter is more likely). Read along a row: after a space come letters, after a comma a
# space, after a newline spaces (indentation), after "*" or "=" another one (the underlines of
# the documentation's headings).

# %%
top = np.argsort(-np.bincount(train_ids, minlength=V))[:28]
label = [{" ": "␣", "\n": "\\n"}.get(chars.chars[i], chars.chars[i]) for i in top]
fig, ax = plt.subplots(figsize=(6.4, 5.6))
im = ax.imshow(np.log(P[np.ix_(top, top)]), cmap="viridis")
fig.colorbar(im, ax=ax, shrink=0.8)
ax.set_xticks(range(len(top)), label)
ax.set_yticks(range(len(top)), label)
ax.set_xlabel("next character")
ax.set_ylabel("previous character")
ax.set_title("log P[previous, next], the bigram model")
plt.show()

# %% [markdown]
# ## 6. Cross-entropy in nats, bits, and perplexity
#
# The loss above is in **nats** (natural logarithm). Divided by $\ln 2$ it is in **bits**: the
# average code length, per token, that an optimal code built on the model's probabilities would
# need (Shannon). Bits per *token* depend on what a token is; bits per *character* do not, so
# that is the number to compare across tokenizers:
#
# $$
# \text{bits/char} = \frac{\text{loss in nats per token}}{\ln 2} \cdot \frac{\text{tokens}}{\text{characters}} .
# $$
#
# **Perplexity** is the exponential of the loss,
#
# $$
# \operatorname{PPL} = e^{\,-\frac1T \sum_t \log p(x_t \mid x_{<t})}
# = \Bigl(\prod_t \frac{1}{p(x_t \mid x_{<t})}\Bigr)^{1/T},
# $$
#
# the geometric mean of $1/p$: a model with perplexity $k$ is, on average, as uncertain as a
# uniform choice among $k$ tokens. The uniform model over $V$ tokens has perplexity exactly $V$
# — checked below with npgpt's own cross-entropy on all-zero logits:

# %%
zeros = np.zeros((1000, V))
uniform_loss, _ = nn.cross_entropy_forward(zeros, val_ids[:1000])
print(f"uniform: loss {uniform_loss:.6f} = log V = {math.log(V):.6f}; perplexity {math.exp(uniform_loss):.3f}")
assert math.isclose(math.exp(uniform_loss), V, rel_tol=1e-12)

p_next = P[val_ids[:-1], val_ids[1:]]
geometric = float(np.exp(np.mean(np.log(1 / p_next))))
print(f"bigram: {losses['bigram']:.3f} nats = {losses['bigram'] / math.log(2):.3f} bits per character, "
      f"perplexity {math.exp(losses['bigram']):.2f} (geometric mean of 1/p: {geometric:.2f})")
assert math.isclose(math.exp(losses["bigram"]), geometric, rel_tol=1e-9)

# %% [markdown]
# ## 7. The same bigram model, learned by gradient descent
#
# The table can also be *learned*: a $V \times V$ matrix $W$ of logits, one row per previous
# token — an embedding lookup, $z_t = W[x_{t-1}]$ — trained with the softmax cross-entropy. The
# gradient of the mean loss with respect to the row $W[a]$ is the sum, over the $N_a$ positions
# that follow an $a$, of $(\operatorname{softmax}(W[a]) - \operatorname{onehot}(x_t)) / N$
# (notebook 01), which vanishes exactly when
#
# $$
# \operatorname{softmax}(W[a])_b = \frac{N[a, b]}{N_a}:
# $$
#
# the count table *is* the minimum of the training loss. Check it with npgpt's backward: at
# $W = \log(N / N_a)$ the gradient is zero (up to the tiny floor used for unseen pairs).

# %%
sub = train_ids[:50_000]                     # a slice: its (N, V) logits fit in memory
x, y = sub[:-1], sub[1:]
N_sub = np.zeros((V, V))
np.add.at(N_sub, (x, y), 1)
W_mle = np.log(np.maximum(N_sub, 1e-12) / np.maximum(N_sub.sum(axis=1, keepdims=True), 1))

logits, emb_cache = nn.embedding_forward(x, W_mle)              # z_t = W[x_{t-1}]: (N, V)
loss_mle, ce_cache = nn.cross_entropy_forward(logits, y)
dW = nn.embedding_backward(nn.cross_entropy_backward(1.0, ce_cache), emb_cache)
print(f"training loss at the count table {loss_mle:.4f}; largest |gradient| there {np.abs(dW).max():.1e}")
assert np.abs(dW).max() < 1e-9

# %% [markdown]
# Now learn $W$ from zero with AdamW, a batch of 2,048 random positions per step. At $W = 0$
# every prediction is uniform, so the first loss is exactly $\log V$; the curve falls towards
# the count model's loss on the same text, the floor a bigram model cannot go below:

# %%
W = Parameter(np.zeros((V, V)))
opt = AdamW([W], lr=0.1, betas=(0.9, 0.99), weight_decay=0.0)
rng = np.random.default_rng(0)
curve = []
for step in range(300):
    t = rng.integers(0, len(x), size=2048)
    logits, emb_cache = nn.embedding_forward(x[t], W.data)
    loss, ce_cache = nn.cross_entropy_forward(logits, y[t])
    W.grad[...] = nn.embedding_backward(nn.cross_entropy_backward(1.0, ce_cache), emb_cache)
    opt.step()
    curve.append(loss)
print(f"first loss {curve[0]:.4f} (log V = {math.log(V):.4f}); last 20 steps {np.mean(curve[-20:]):.3f}; "
      f"count table {loss_mle:.3f}")
assert math.isclose(curve[0], math.log(V), rel_tol=1e-12)
assert np.mean(curve[-20:]) < loss_mle + 0.15

fig, ax = plt.subplots(figsize=(6.4, 3.4))
ax.plot(curve, lw=1, label="learned bigram (AdamW, batch 2048)")
ax.axhline(math.log(V), color="gray", ls="--", label=f"uniform: log V = {math.log(V):.2f}")
ax.axhline(loss_mle, color="C3", ls=":", label=f"count table: {loss_mle:.2f}")
ax.set_xlabel("step")
ax.set_ylabel("cross-entropy (nats/char)")
ax.legend()
ax.grid(alpha=0.3)
plt.show()

# %% [markdown]
# ## 8. Why an untrained GPT starts near $\log V$
#
# At initialisation a GPT's logits $z \in \mathbb R^V$ are small (every weight drawn from
# $\mathcal N(0, 0.02^2)$). Expand the log-sum-exp to second order around $z = 0$:
#
# $$
# \log \sum_k e^{z_k} = \log V + \bar z + \tfrac12 \operatorname{Var}(z) + O(z^3),
# \qquad \bar z = \tfrac1V \textstyle\sum_k z_k,
# $$
#
# (the mean and the variance over the $V$ logits of one position), so the loss of a position is
# $\ell = \log V + (\bar z - z_y) + \tfrac12 \operatorname{Var}(z) + \ldots$ For a model that knows
# nothing, $z_y$ is just one of the logits and $\bar z - z_y$ averages to 0 over positions:
#
# $$
# \mathbb E[\ell] \approx \log V + \tfrac12\, \mathbb E[\operatorname{Var}(z)] .
# $$
#
# With logits of standard deviation $\sigma \ll 1$ the excess over $\log V$ is $\sigma^2 / 2$:
# an untrained model should start at $\log V$ (4.63 nats for 103 characters, 10.82 for GPT-2's
# 50,257 tokens). A first loss far above it says the initialisation is confidently wrong.
# Measured with an untied output head (notebook 03 explains the tied one's small head start).
# The middle term is not exactly 0 on a finite batch — the targets are not uniform, and each
# token's logit has a small random offset — but the expansion itself holds position by position:

# %%
cfg = GPTConfig(vocab_size=V, block_size=32, n_layer=2, n_head=4, n_embd=64, tie_weights=False)
model = GPT(cfg, seed=0)
rng = np.random.default_rng(1)
starts = rng.integers(0, len(val_ids) - 33, size=32)
xb = np.stack([val_ids[s:s + 32] for s in starts])
yb = np.stack([val_ids[s + 1:s + 33] for s in starts])
logits, loss = model.forward(xb, yb)
z_y = np.take_along_axis(logits, yb[..., None], axis=-1)[..., 0]      # the target's logit
middle = float((logits.mean(axis=-1) - z_y).mean())
half_var = float(0.5 * logits.var(axis=-1).mean())
print(f"std of the logits {logits.std():.3f}")
print(f"log V {math.log(V):.5f} + mean(z_bar - z_y) {middle:+.5f} + Var(z)/2 {half_var:.5f} "
      f"= {math.log(V) + middle + half_var:.5f};   npgpt's loss {loss:.5f}")
assert abs(loss - (math.log(V) + middle + half_var)) < 0.002        # the expansion, to O(z^3)
assert abs(loss - math.log(V)) < 0.05

# %% [markdown]
# Scale the output head by 50 and the same formula predicts (and the model shows) a start well
# above $\log V$ — the symptom of a bad initialisation, visible before the first step:

# %%
model.lm_head.weight.data *= 50
logits, loss_bad = model.forward(xb, yb)
print(f"head x 50: loss {loss_bad:.2f}, log V = {math.log(V):.2f}, std of the logits {logits.std():.2f}")
assert loss_bad > math.log(V) + 1

# %% [markdown]
# ## Checks run above
#
# * The character tokenizer and the byte-level BPE round-trip their texts; UTF-8's byte
#   patterns hold for the Chinese sentence; the split pattern loses no character.
# * npgpt's first BPE merge is the most frequent pair, counted independently; the token count
#   never grows with the number of merges.
# * Perplexity of the uniform model is $V$ (npgpt's cross-entropy on zero logits); perplexity is
#   the geometric mean of $1/p$.
# * npgpt's cross-entropy and embedding backward give a zero gradient at the count table (the
#   maximum-likelihood bigram); the learned bigram starts at exactly $\log V$ and reaches the
#   count table's loss.
# * An untrained GPT's loss equals its second-order expansion around $\log V$ to within 0.002.
#
# ## Exercises
#
# 1. `npgpt exercise start embedding` and `npgpt exercise start cross_entropy`: write the two
#    layers that section 7 uses, and let the checker run them against the numerical gradient.
# 2. Add-$k$ smoothing: replace the $+1$ of section 5 by $+k$ and plot the validation loss
#    against $k$ from $10^{-3}$ to 10. Which $k$ is best, and why is it not 1?
# 3. A bigram model over the BPE tokens of section 4: compare its validation loss with the
#    character bigram's **in bits per character** (section 6). Which wins, and what happens to
#    the table's $V^2$ entries?
# 4. A trigram table has $V^3$ entries. For 103 characters, how many of them does the training
#    text fill? What does that say about conditioning on longer contexts by counting?
# 5. Train `BPETokenizer` with `vocab_size=256 + 4096 + 1` and find the longest token. Why do
#    long tokens appear in a documentation corpus that would not appear in novels?
