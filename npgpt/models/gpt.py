"""GPT: a decoder-only Transformer language model, GPT-2's architecture by default.

The class docstring below writes the model as a chain of layers: token and position
embeddings, pre-LN Transformer blocks, a final LayerNorm, the head that shares the token table,
the mean cross-entropy. backward() is that chain in reverse, in one method: loss, head, ln_f,
the blocks from the top, the embeddings (where the tied table's two gradients meet).

Parameter names follow GPT-2's (without the `transformer.` prefix): wte.weight, wpe.weight,
h.0.ln_1.weight, h.0.attn.c_attn.weight, ..., ln_f.bias; lm_head.weight only when untied.
"""

from __future__ import annotations

import math

import numpy as np

from ..config import GPTConfig
from ..nn import (Block, CrossEntropyLoss, Dropout, Embedding, KVCache, LayerNorm,
                  LearnedPositionalEmbedding, Linear, Module, ModuleList,
                  SinusoidalPositionalEncoding, flatten_parameters)
from ..nn.attention import scaled_init_std
from ..nn.head import TiedHead
from ..nn.validate import check_array, check_ids
from .gpt2_hf import read_gpt2


class GPT(Module):
    """The model of GPTConfig:

    forward:
        x      = dropout(wte[idx] + wpe[0..T-1])      token + position embeddings   (B, T, C)
        x      = block_L( ... block_1(x))             pre-LN Transformer blocks
        h      = ln_f(x)                              the final hidden states          (B, T, C)
        logits = h @ wte^T                            tied: the head is the token table
        loss   = mean cross-entropy(logits, targets)
    backward:
        dlogits = (softmax(logits) - onehot(targets)) / (B T)      the chain rule starts here
        dh = lm_head'(dlogits),   dx_L = ln_f'(dh),   dx_(i-1) = block_i'(dx_i)  from the top
        dwpe += sum_b dx_0,   dwte += the head's dE + the rows of dx_0 scattered by idx
    f'(d): f's backward applied to d.

    With tie_weights=False the head is a Linear of its own, logits = h @ W_head. Initialised as
    GPT-2: every weight ~ N(0, 0.02^2), the two projections into the residual stream of each
    block ~ N(0, (0.02 / sqrt(2 n_layer))^2), biases 0, LayerNorms (1, 0). The same seed gives
    the same weights and dropout masks.

    The parameters lie in one flat buffer (flatten_parameters, the constructor's last step), so
    an optimizer updates the whole model in one pass; nothing moves them afterwards.
    """

    def __init__(self, config: GPTConfig, seed: int = 0):
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise TypeError(f"config is a {type(config).__name__}: expected a GPTConfig")
        self.config = cfg = config
        rng = np.random.default_rng(seed)
        kw = dict(dtype=cfg.dtype, rng=rng)
        self.wte = Embedding(cfg.vocab_size, cfg.n_embd, **kw)
        if cfg.pos_encoding == "learned":
            self.wpe = LearnedPositionalEmbedding(cfg.block_size, cfg.n_embd, **kw)
        else:
            self.wpe = SinusoidalPositionalEncoding(cfg.block_size, cfg.n_embd, dtype=cfg.dtype)
        self.drop = Dropout(cfg.dropout, rng.spawn(1)[0])
        proj_std = scaled_init_std(cfg.n_layer)
        self.h = ModuleList(Block(cfg.n_embd, cfg.n_head, dropout=cfg.dropout, bias=cfg.bias,
                                  activation=cfg.activation, eps=cfg.layer_norm_eps, proj_std=proj_std, **kw)
                            for _ in range(cfg.n_layer))
        self.ln_f = LayerNorm(cfg.n_embd, cfg.layer_norm_eps, cfg.bias, dtype=cfg.dtype)
        if cfg.tie_weights:
            self.lm_head = TiedHead(self.wte)               # logits = h @ wte^T: one table
        else:
            self.lm_head = Linear(cfg.n_embd, cfg.vocab_size, bias=False, **kw)
        self.loss_fn = CrossEntropyLoss()
        flatten_parameters(self)

    # -- forward and backward ----------------------------------------------------------------

    def forward(self, idx, targets=None, kv_caches: list[KVCache] | None = None):
        """idx: int (B, T) -> (logits (B, T, V), loss or None).

        targets: int (B, T), the next token at every position (-100 to ignore one); with them the
        loss is the mean cross-entropy. kv_caches (one KVCache per block, inference only): the
        positions of idx continue the cached ones.
        """
        h = self.forward_hidden(idx, kv_caches)                       # (B, T, C)
        logits = self.lm_head.forward(h)                              # (B, T, V)
        loss = None
        if targets is not None:
            loss = self.loss_fn.forward(logits, targets)
        return logits, loss

    def forward_hidden(self, idx, kv_caches: list[KVCache] | None = None):
        """idx: int (B, T) -> h: (B, T, C), the final hidden states: everything up to and
        including ln_f, before the language-model head. What a classifier head reads."""
        cfg = self.config
        idx = check_ids("idx", idx, cfg.vocab_size, ndim=2)
        B, T = idx.shape
        offset = kv_caches[0].length if kv_caches else 0
        if offset + T > cfg.block_size:
            raise ValueError(f"idx has {offset + T} positions (with the cache): expected at most "
                             f"block_size={cfg.block_size}")
        x = self.drop.forward(self.wte.forward(idx) + self.wpe.forward(T, offset))   # (B, T, C)
        for i, block in enumerate(self.h):
            x = block.forward(x, kv_cache=kv_caches[i] if kv_caches else None)
        return self.ln_f.forward(x)

    def backward(self, dlogits=None, *, dh=None, frozen_below: int = 0):
        """The chain rule through forward (and forward_hidden), in reverse. Gradients are added
        into every trainable .grad; returns None (the input is token ids: no gradient).

        dlogits: (B, T, V), the gradient of whatever scalar you differentiate; by default the
        mean cross-entropy of the last forward (which must have had targets).
        dh: (B, T, C), a gradient of the hidden states h from elsewhere (a classifier's head);
        with it, the head runs backward only if dlogits is given too, and both add.
        frozen_below: the bottom blocks 0 .. frozen_below-1 and the embeddings hold nothing
        trainable (fine-tuning: npgpt.finetune.frozen_below(model)), so their backward is
        skipped, not just their weight gradients: a frozen bottom costs no backward work.
        """
        self._check_frozen_below(frozen_below)
        if dh is None and dlogits is None:
            if self.loss_fn._cache is None:
                raise RuntimeError("GPT.backward() without dlogits needs a forward with targets first")
            dlogits = self.loss_fn.backward(1.0)                      # loss = mean CE(logits)
        if dh is not None:
            check_array("dh", dh, dtype=self.ln_f.weight.dtype, ndim=3, last_dim=self.config.n_embd)
        if dlogits is not None:
            check_array("dlogits", dlogits, dtype=self.ln_f.weight.dtype, ndim=3,
                        last_dim=self.config.vocab_size)
            dh_head = self.lm_head.backward(dlogits)                  # logits = lm_head(h)
            dh = dh_head if dh is None else dh + dh_head              # h feeds both: they add
        dx = self.ln_f.backward(dh)                                   # h = ln_f(x_L)
        for block in reversed(self.h[frozen_below:]):
            dx = block.backward(dx)                                   # x_{i+1} = block_i(x_i)
        if frozen_below > 0:
            return None                                               # nothing below trains
        dx = self.drop.backward(dx)                                   # x_0 = dropout(tok + pos)
        self.wpe.backward(dx)                                         # both addends get dx
        self.wte.backward(dx)                                         # (wte adds to its head's)
        return None

    def _check_frozen_below(self, frozen_below) -> None:
        """frozen_below must be a block index with nothing trainable below it."""
        n = len(self.h)
        if isinstance(frozen_below, bool) or not isinstance(frozen_below, (int, np.integer)) \
                or not 0 <= frozen_below <= n:
            raise ValueError(f"frozen_below={frozen_below!r}: expected an int in [0, n_layer={n}]")
        if frozen_below == 0:
            return
        below = [("wte", self.wte), ("wpe", self.wpe)] + [(f"h.{i}", self.h[i]) for i in range(frozen_below)]
        trains = [name for name, m in below if any(p.requires_grad for p in m.parameters())]
        if trains:
            raise ValueError(f"frozen_below={frozen_below}, but {trains} hold trainable parameters: "
                             f"expected everything below block {frozen_below} frozen (or a smaller "
                             f"frozen_below: npgpt.finetune.frozen_below(model))")

    # -- generation --------------------------------------------------------------------------

    def generate(self, prompt_ids, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, seed: int | None = 0,
                 use_cache: bool = True, window: bool = True, stop_token: int | None = None,
                 vocab_limit: int | None = None, on_token=None):
        """Continue each prompt by sampling one token at a time.

        prompt_ids: int (T,) or (B, T). Returns the prompts with the new tokens appended,
        in the same rank. temperature 0 is greedy (argmax); otherwise the last position's logits
        are divided by temperature, restricted to the top_k most likely tokens and/or to the
        smallest set whose probability reaches top_p (nucleus), and sampled with a Generator
        seeded by `seed`.

        use_cache: keep each block's keys and values so a step costs one position, not T
        (the logits equal full recomputation); the caches have room for block_size positions
        from the start. Only the last position's logits are computed: the head is a (C, V)
        product per position (GPT-2: 154 MB of weights), and a prompt's other positions would
        be scored for nothing. window: beyond block_size keep only the last
        block_size tokens (the cache is rebuilt for the window, since positions shift); with
        window=False a prompt longer than block_size is an error and generation stops at
        block_size. stop_token: stop when every sequence has produced it. vocab_limit: draw only
        ids below it (a tokenizer with fewer tokens than the model's vocabulary: the ids beyond
        it have no text); the softmax then runs over those ids alone. on_token: called with
        each step's new tokens (B,) as soon as they are chosen (to stream them, or to time the
        prompt's forward apart from the steps after it, as npgpt bench does).
        """
        cfg = self.config
        ids, single = _check_prompt(prompt_ids, window, cfg)
        _check_sampling(max_new_tokens, temperature, top_k, top_p, cfg.vocab_size)
        limit = _vocab_limit(vocab_limit, cfg.vocab_size)
        rng = np.random.default_rng(seed)
        was_training = self.training
        self.eval()
        try:
            caches, done = None, np.zeros(ids.shape[0], dtype=bool)
            for _ in range(max_new_tokens):
                if not window and ids.shape[1] >= cfg.block_size:
                    break
                context = ids[:, -cfg.block_size:]
                if use_cache and ids.shape[1] <= cfg.block_size and caches is not None:
                    h = self.forward_hidden(ids[:, -1:], kv_caches=caches)    # one new position
                else:
                    caches = [KVCache(cfg.block_size) for _ in self.h] if use_cache else None
                    h = self.forward_hidden(context, kv_caches=caches)        # (re)fill the window
                logits = self.lm_head.forward(h[:, -1:])[:, -1]              # the last position only
                nxt = sample_next(logits[:, :limit], temperature, top_k, top_p, rng)
                ids = np.concatenate([ids, nxt[:, None]], axis=1)
                if on_token is not None:
                    on_token(nxt)
                if stop_token is not None:
                    done |= nxt == stop_token
                    if done.all():
                        break
        finally:
            self.train(was_training)
        return ids[0] if single else ids

    @classmethod
    def from_pretrained(cls, path, dtype: str = "float32") -> "GPT":
        """A GPT with the weights of a local Hugging Face GPT-2 folder (config.json +
        model.safetensors), in either layout one meets (see models/gpt2_hf.py). A missing file,
        a config that is not GPT-2's, a missing or mis-shaped weight raise an error naming it."""
        folder = read_gpt2(path)
        model = cls(folder.config.replace(dtype=dtype))
        shapes = {name: p.shape for name, p in model.named_parameters()}
        model.load_state_dict(folder.weights_for(shapes))
        return model

    def extra_repr(self):
        return f"{self.num_parameters():,} parameters"


def _check_prompt(prompt_ids, window: bool, cfg: GPTConfig) -> tuple[np.ndarray, bool]:
    """(prompt_ids as a (B, T) int array checked against the vocabulary and block_size, whether
    it was a single prompt (T,))."""
    ids = np.asarray(prompt_ids)
    single = ids.ndim == 1
    ids = check_ids("prompt_ids", ids[None] if single else ids, cfg.vocab_size, ndim=2)
    if ids.shape[1] == 0:
        raise ValueError("prompt_ids is empty: expected at least one token to condition on")
    if not window and ids.shape[1] > cfg.block_size:
        raise ValueError(f"prompt_ids has {ids.shape[1]} tokens: expected at most block_size="
                         f"{cfg.block_size} (or pass window=True to keep the last block_size)")
    return ids, single


def _check_sampling(max_new_tokens, temperature, top_k, top_p, vocab_size):
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens={max_new_tokens!r}, expected a non-negative integer")
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature={temperature!r}, expected a finite number >= 0 (0 is greedy)")
    if top_k is not None and not (isinstance(top_k, (int, np.integer)) and 1 <= top_k):
        raise ValueError(f"top_k={top_k!r}, expected None or an integer >= 1 (vocab_size is {vocab_size})")
    if top_p is not None and not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
        raise ValueError(f"top_p={top_p!r}, expected None or a number in (0, 1]")


def _vocab_limit(vocab_limit, vocab_size) -> int:
    limit = vocab_size if vocab_limit is None else vocab_limit
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or not 1 <= limit <= vocab_size:
        raise ValueError(f"vocab_limit={vocab_limit!r}, expected None or an integer in [1, "
                         f"{vocab_size}] (the model's vocab_size)")
    return limit


def sample_next(logits, temperature: float, top_k: int | None, top_p: float | None,
                rng: np.random.Generator) -> np.ndarray:
    """One token id per row of logits (B, V): greedy at temperature 0, else sampled from
    softmax(logits / temperature) restricted by top_k and top_p. Computed in float64."""
    if temperature == 0:
        return logits.argmax(axis=-1)
    z = logits.astype(np.float64) / temperature
    if top_k is not None and top_k < z.shape[-1]:
        kth = np.partition(z, -top_k, axis=-1)[:, -top_k][:, None]       # the k-th largest logit
        z = np.where(z < kth, -np.inf, z)
    p = np.exp(z - z.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    if top_p is not None and top_p < 1:
        order = np.argsort(-p, axis=-1, kind="stable")
        sorted_p = np.take_along_axis(p, order, axis=-1)
        # keep a token if the probability before it is still below top_p (the first always is)
        keep_sorted = np.cumsum(sorted_p, axis=-1) - sorted_p < top_p
        keep = np.zeros_like(keep_sorted)
        np.put_along_axis(keep, order, keep_sorted, axis=-1)
        p = np.where(keep, p, 0.0)
        p /= p.sum(axis=-1, keepdims=True)
    # inverse-CDF sampling: the first token whose cumulative probability exceeds u
    c = np.cumsum(p, axis=-1)
    u = rng.random((p.shape[0], 1)) * c[:, -1:]
    return (c <= u).sum(axis=-1)
