"""The encoder-decoder Transformer of Vaswani et al. (2017), "Attention Is All You Need".

    x      = dropout(E_src[src] * sqrt(d) + PE[0..S-1])            source embedding   (B, S, d)
    memory = encoder_norm(enc_N( ... enc_1(x, src_pad)))           the encoder         (B, S, d)
    y      = dropout(E_tgt[tgt_in] * sqrt(d) + PE[0..T-1])         target embedding   (B, T, d)
    h      = decoder_norm(dec_N( ... dec_1(y, memory)))            the decoder         (B, T, d)
    logits = h @ W_gen + b_gen                                     generator           (B, T, V)
    loss   = smoothed cross-entropy(logits, tgt_out), ignoring tgt_out == pad_id

Each encoder layer attends over the source (padded source positions hidden); each decoder layer
attends causally over the target (padded target positions hidden), then over `memory` (padded
source positions hidden). PE is the fixed sinusoidal encoding (npgpt.nn.sinusoidal_encoding).

It computes the same function as PyTorch's torch.nn.Transformer (batch_first=True, ReLU) with
nn.Embedding tables and an nn.Linear generator around it, including the two things that are easy
to miss: torch.nn.Transformer always ends its encoder and its decoder with a LayerNorm
(encoder.norm, decoder.norm), for post-LN *and* pre-LN layers, so a post-LN stack is normalised
twice at its top (the last layer's norm2/norm3, then the final norm); and the paper multiplies the
embeddings by sqrt(d_model) before adding the positions. `load_torch_state_dict` maps the names.

Parameter names: src_embed.weight, tgt_embed.weight, encoder.{i}.self_attn.c_attn.weight, ...,
encoder_norm.weight, decoder.{i}.cross_attn.q_proj.weight, ..., decoder_norm.bias,
generator.weight, generator.bias. With share_embeddings there is one table (see Transformer).

Decoding (`translate`): greedy or beam search, with the encoder run once and a KV cache per
decoder layer (see the section "Decoding" below).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .. import kernels
from ..config import TransformerConfig
from ..nn import (CrossEntropyLoss, DecoderLayer, Dropout, Embedding, EncoderLayer, KVCache,
                  LayerNorm, Linear, Module, ModuleList, Parameter, SinusoidalPositionalEncoding)
from ..nn.attention import merge_heads, split_heads
from ..nn.linear import linear_backward, linear_forward
from ..nn.module import as_dtype
from ..nn.validate import check_array, check_ids


def xavier_uniform(rng: np.random.Generator, shape, dtype) -> np.ndarray:
    """Glorot & Bengio's uniform init: U(-a, a), a = sqrt(6 / (fan_in + fan_out)), for a matrix
    of shape (fan_in, fan_out) (or (fan_out, fan_in): the formula is symmetric)."""
    bound = math.sqrt(6.0 / (shape[0] + shape[1]))
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


class TiedGenerator(Module):
    """The output projection that shares the embedding table E: (V, d) (share_embeddings=True).

        logits = h @ E^T + b          h: (..., d)  ->  (..., V)

    `weight` is the embedding's Parameter itself (so it is listed once, as src_embed.weight) and
    receives dW = (h^T @ dlogits)^T = dlogits^T @ h on top of the embeddings' own gradients.
    The bias is the generator's own (torch: generator.bias of an nn.Linear whose weight is tied).
    """

    def __init__(self, embedding: Embedding):
        super().__init__()
        self.weight = embedding.weight
        self.bias = Parameter(np.zeros(embedding.num_embeddings, dtype=embedding.weight.dtype))
        self._cache = None

    def forward(self, h):
        logits, self._cache = linear_forward(h, self.weight.data.T, self.bias.data)   # W = E^T: (d, V)
        return logits

    def backward(self, dlogits):
        dh, dw, db = linear_backward(dlogits, self._cache, need_dw=self.weight.requires_grad)
        if dw is not None:
            self.weight.grad += dw.T                        # dE = (dW)^T: (d, V) -> (V, d)
        if self.bias.requires_grad:
            self.bias.grad += db
        return dh

    def extra_repr(self):
        return f"tied to the embedding, {self.weight.shape[1]}, {self.weight.shape[0]}"


class Transformer(Module):
    """The encoder-decoder model of a TransformerConfig.

    Shared embeddings (share_embeddings=True, one vocabulary): ONE matrix E of shape (V, d) is
    the source lookup table, the target lookup table and the generator's weight (logits =
    h @ E^T + b). The lookups are scaled by sqrt(d), the output projection is not (as in the
    paper and in a PyTorch model with tgt_embed.weight = generator.weight = src_embed.weight).
    E is listed once, as `src_embed.weight`, and its gradient is the sum of all three uses;
    the generator's bias stays its own (`generator.bias`).

    Initialisation, seeded by `seed` (the same seed gives the same weights and dropout masks):
    every matrix, embeddings and generator included, is xavier-uniform, as torch.nn.Transformer
    does for its own matrices and the Annotated Transformer for the whole model; the q, k, v
    projections of an attention draw as ONE (d, 3d) matrix, as torch's in_proj_weight does, so
    their scale matches torch's. Biases are 0 (where torch draws its feed-forward biases from
    U(+-1/sqrt(fan_in)): the simplest choice, and npgpt's GPT's), LayerNorms (1, 0). An
    embedding element, U(+-sqrt(6/(V+d))) times sqrt(d), has std sqrt(2d/(V+d)): about 1 when
    V ~ d, the size of the positions' sines and cosines.
    """

    def __init__(self, config: TransformerConfig, seed: int = 0):
        super().__init__()
        if not isinstance(config, TransformerConfig):
            raise TypeError(f"config is a {type(config).__name__}: expected a TransformerConfig")
        self.config = cfg = config
        d, dt = cfg.d_model, as_dtype(cfg.dtype)
        n_layers = cfg.n_encoder_layers + cfg.n_decoder_layers
        r_init, r_src_drop, r_tgt_drop, *r_layers = np.random.default_rng(seed).spawn(3 + n_layers)
        layer_kw = dict(dropout=cfg.dropout, norm_first=cfg.norm_first, activation="relu",
                        eps=cfg.layer_norm_eps, dtype=cfg.dtype)

        self.src_embed = Embedding(cfg.src_vocab_size, d, dtype=dt, rng=r_init)
        self.tgt_embed = Embedding(cfg.tgt_vocab_size, d, dtype=dt, rng=r_init)
        if cfg.share_embeddings:
            self.tgt_embed.weight = self.src_embed.weight         # one Parameter, two lookups
        self.pos = SinusoidalPositionalEncoding(cfg.max_len, d, dtype=dt)
        self.src_drop = Dropout(cfg.dropout, r_src_drop)
        self.tgt_drop = Dropout(cfg.dropout, r_tgt_drop)
        self.encoder = ModuleList(EncoderLayer(d, cfg.n_head, cfg.d_ff, rng=r_layers[i], **layer_kw)
                                  for i in range(cfg.n_encoder_layers))
        self.encoder_norm = LayerNorm(d, cfg.layer_norm_eps, dtype=dt)
        self.decoder = ModuleList(DecoderLayer(d, cfg.n_head, cfg.d_ff, rng=r_layers[cfg.n_encoder_layers + i],
                                               **layer_kw)
                                  for i in range(cfg.n_decoder_layers))
        self.decoder_norm = LayerNorm(d, cfg.layer_norm_eps, dtype=dt)
        if cfg.share_embeddings:
            self.generator = TiedGenerator(self.src_embed)
        else:
            self.generator = Linear(d, cfg.tgt_vocab_size, dtype=dt, rng=r_init)
        self.loss_fn = CrossEntropyLoss(ignore_index=cfg.pad_id, label_smoothing=cfg.label_smoothing)
        self.emb_scale = dt.type(math.sqrt(d))
        self._memory_shape = None
        self._has_loss = False
        self._init_weights(r_init)

    def _init_weights(self, rng: np.random.Generator) -> None:
        """Xavier-uniform for every matrix; biases 0 (the layers' own default), norms (1, 0)."""
        d = self.config.d_model
        for name, p in self.named_parameters():
            if p.data.ndim == 2 and not name.endswith(("cross_attn.q_proj.weight", "cross_attn.kv_proj.weight")):
                p.data[...] = xavier_uniform(rng, p.shape, p.dtype)
        for layer in self.decoder:          # cross-attention: q and k, v drawn as one (d, 3d) matrix
            w = xavier_uniform(rng, (d, 3 * d), layer.cross_attn.q_proj.weight.dtype)
            layer.cross_attn.q_proj.weight.data[...] = w[:, :d]
            layer.cross_attn.kv_proj.weight.data[...] = w[:, d:]

    # -- forward and backward ----------------------------------------------------------------

    def forward(self, src, tgt_in, tgt_out=None, src_pad=None, tgt_pad=None):
        """src: int (B, S), tgt_in: int (B, T) -> (logits (B, T, V), loss or None).

        tgt_in is the decoder's input (the target shifted right, starting with a BOS token);
        tgt_out the tokens it must predict at each position; the loss is the label-smoothed
        cross-entropy averaged over the positions where tgt_out != pad_id.
        src_pad, tgt_pad: bool (B, S) / (B, T), True at padded positions (PyTorch's key padding
        mask convention). When None, they are derived from the tokens: src == pad_id and
        tgt_in == pad_id (pass an all-False array to hide nothing).
        """
        src, tgt_in, tgt_out, src_pad, tgt_pad = self._check_inputs(src, tgt_in, tgt_out, src_pad, tgt_pad)
        memory = self.encode(src, src_pad)
        logits = self.decode(tgt_in, memory, src_pad, tgt_pad)
        self._has_loss = tgt_out is not None
        loss = self.loss_fn.forward(logits, tgt_out) if self._has_loss else None
        return logits, loss

    def encode(self, src, src_pad):
        """The encoder: src (B, S) ids -> memory (B, S, d).

        src_pad: bool (B, S), True at padding; taken as given (None hides nothing: forward and
        translate are where a missing mask is derived from pad_id).
        """
        x = self.src_drop.forward(self._embed(self.src_embed, src, "src"))
        for layer in self.encoder:
            x = layer.forward(x, src_pad=src_pad)
        memory = self.encoder_norm.forward(x)
        self._memory_shape = memory.shape
        return memory

    def decode(self, tgt_in, memory, src_pad, tgt_pad):
        """The decoder and the generator: tgt_in (B, T) ids, memory (B, S, d) -> logits (B, T, V)."""
        y = self.tgt_drop.forward(self._embed(self.tgt_embed, tgt_in, "tgt_in"))
        for layer in self.decoder:
            y = layer.forward(y, memory, tgt_pad=tgt_pad, src_pad=src_pad)
        return self.generator.forward(self.decoder_norm.forward(y))

    def _embed(self, table: Embedding, ids, name: str, offset: int = 0):
        """E[ids] * sqrt(d) + PE[offset .. offset+T-1]: (B, T) -> (B, T, d)."""
        return table.forward(ids, name) * self.emb_scale + self.pos.forward(ids.shape[1], offset)

    def backward(self, dlogits=None):
        """The chain rule through forward, in reverse. Gradients are added into every .grad.

        dlogits: (B, T, V), the gradient of whatever scalar you differentiate; by default the
        mean cross-entropy of the last forward (which must have had tgt_out). Returns None.
        """
        if dlogits is None:
            if not self._has_loss:
                raise RuntimeError("Transformer.backward() without dlogits needs a forward with tgt_out first")
            dlogits = self.loss_fn.backward(1.0)                          # (B, T, V)
        else:
            check_array("dlogits", dlogits, dtype=self.decoder_norm.weight.dtype, ndim=3,
                        last_dim=self.generator.bias.shape[0])
        # forward: logits = decoder_norm(y_N) @ W_gen + b
        dy = self.decoder_norm.backward(self.generator.backward(dlogits))
        # forward: y_i = dec_i(y_{i-1}, memory): memory feeds EVERY decoder layer, so its
        # gradient is the sum of what each layer's cross-attention sends back
        dmemory = np.zeros(self._memory_shape, dtype=dy.dtype)
        for layer in reversed(self.decoder):
            dy, dm = layer.backward(dy)
            dmemory += dm
        # forward: y_0 = dropout(E_tgt[tgt_in] * sqrt(d) + PE)   (PE is fixed: nothing to learn)
        self.tgt_embed.backward(self.tgt_drop.backward(dy) * self.emb_scale)
        # forward: memory = encoder_norm(x_N),  x_i = enc_i(x_{i-1})
        dx = self.encoder_norm.backward(dmemory)
        for layer in reversed(self.encoder):
            dx = layer.backward(dx)
        # forward: x_0 = dropout(E_src[src] * sqrt(d) + PE)
        self.src_embed.backward(self.src_drop.backward(dx) * self.emb_scale)
        return None

    # -- input checks ------------------------------------------------------------------------

    def _check_ids(self, name: str, ids, vocab_size: int) -> np.ndarray:
        """Token ids (B, L), 1 <= L <= max_len, every id in [0, vocab_size)."""
        if not isinstance(ids, np.ndarray):
            raise TypeError(f"{name} is a {type(ids).__name__}: expected a numpy array of integer token ids")
        if ids.ndim != 2 or ids.shape[1] == 0:
            raise ValueError(f"{name} has shape {ids.shape}: expected (batch, length) with length >= 1")
        if ids.shape[1] > self.config.max_len:
            raise ValueError(f"{name} has length {ids.shape[1]}: expected at most max_len={self.config.max_len} "
                             f"(TransformerConfig.max_len, the longest sequence the positions cover)")
        return check_ids(name, ids, vocab_size, ndim=2)

    def _check_pad(self, name: str, pad, ids, derive_from: str) -> np.ndarray:
        """A bool (B, L) mask, True at padding; None -> ids == pad_id."""
        if pad is None:
            return ids == self.config.pad_id
        if not isinstance(pad, np.ndarray) or pad.dtype != np.bool_:
            raise TypeError(f"{name} is a {type(pad).__name__} of dtype {getattr(pad, 'dtype', None)}: "
                            f"expected a bool numpy array, True at padded positions")
        if pad.shape != ids.shape:
            raise ValueError(f"{name} has shape {pad.shape}: expected {ids.shape}, the shape of {derive_from}")
        return pad

    def _check_inputs(self, src, tgt_in, tgt_out, src_pad, tgt_pad):
        cfg = self.config
        src = self._check_ids("src", src, cfg.src_vocab_size)
        tgt_in = self._check_ids("tgt_in", tgt_in, cfg.tgt_vocab_size)
        if tgt_in.shape[0] != src.shape[0]:
            raise ValueError(f"tgt_in has batch size {tgt_in.shape[0]} and src {src.shape[0]}: expected the same")
        if tgt_out is not None:
            if not isinstance(tgt_out, np.ndarray):
                raise TypeError(f"tgt_out is a {type(tgt_out).__name__}: expected a numpy array of integer token ids")
            if tgt_out.shape != tgt_in.shape:
                raise ValueError(f"tgt_out has shape {tgt_out.shape}: expected {tgt_in.shape}, the shape of tgt_in")
            tgt_out = check_ids("tgt_out", tgt_out, cfg.tgt_vocab_size)
        src_pad = self._check_pad("src_pad", src_pad, src, "src")
        tgt_pad = self._check_pad("tgt_pad", tgt_pad, tgt_in, "tgt_in")
        return src, tgt_in, tgt_out, src_pad, tgt_pad

    # -- decoding ----------------------------------------------------------------------------
    #
    # The encoder runs once. The decoder then makes one position per step: its self-attention
    # keeps the keys and values of the positions so far in a KVCache per layer, and its
    # cross-attention projects the memory to keys and values once per layer and reuses them.
    # Hypotheses are scored by log P(y | x) / lp(|y|) with GNMT's length penalty
    #     lp(L) = ((5 + L) / 6) ** alpha           (Wu et al., 2016; alpha = length_penalty)
    # where |y| counts the generated tokens including EOS (not BOS); alpha = 0 gives the plain
    # log-probability, larger alpha favours longer outputs.

    def translate(self, src, max_len: int = 32, beam_size: int = 1, length_penalty: float = 0.6,
                  src_pad=None, bos_id: int = 1, eos_id: int = 2, *, use_cache: bool = True,
                  return_scores: bool = False):
        """Decode a batch of sources: greedy when beam_size == 1, beam search otherwise.

        src: int (B, S); src_pad: bool (B, S) or None (then src == pad_id). The decoder starts
        from bos_id and stops at eos_id or after max_len generated tokens (max_len must not
        exceed config.max_len). Runs in eval mode (no dropout) and restores the previous mode.
        It overwrites the layers' forward caches: call backward before, not after.

        Returns a list of B lists of token ids: what follows BOS, without the EOS (other ids,
        PAD and BOS included, are returned as the model made them). With return_scores=True,
        (that list, scores (B,) float64): log P(y + [EOS] | x) / lp(len(y) + 1), or
        log P(y | x) / lp(max_len) for a y that reached max_len without EOS. length_penalty
        (alpha) changes which hypothesis beam search picks; greedy picks the argmax regardless
        and alpha only scales its score.
        use_cache=False recomputes the whole decoder prefix at every step (the reference that
        the cached path is tested against; slower).
        """
        _check_int("beam_size", beam_size, 1)
        search = self.greedy_decode if beam_size == 1 else self.beam_search
        kw = {} if beam_size == 1 else dict(beam_size=beam_size)
        return search(src, max_len=max_len, length_penalty=length_penalty, src_pad=src_pad,
                      bos_id=bos_id, eos_id=eos_id, use_cache=use_cache, return_scores=return_scores, **kw)

    def greedy_decode(self, src, max_len: int = 32, length_penalty: float = 0.6, src_pad=None,
                      bos_id: int = 1, eos_id: int = 2, *, use_cache: bool = True, return_scores: bool = False):
        """Greedy decoding: the most probable token at each step (see translate)."""
        return self._search(_greedy, src, max_len, 1, length_penalty, src_pad, bos_id, eos_id,
                            use_cache, return_scores)

    def beam_search(self, src, beam_size: int = 4, max_len: int = 32, length_penalty: float = 0.6,
                    src_pad=None, bos_id: int = 1, eos_id: int = 2, *, use_cache: bool = True,
                    return_scores: bool = False):
        """Beam search (see translate and _beam_search); beam_size=1 gives greedy's output."""
        return self._search(_beam_search, src, max_len, beam_size, length_penalty, src_pad, bos_id,
                            eos_id, use_cache, return_scores)

    def _search(self, search, src, max_len, beam_size, alpha, src_pad, bos_id, eos_id, use_cache, return_scores):
        """Check the arguments, encode once, run `search` in eval mode, restore the mode."""
        cfg = self.config
        src = self._check_ids("src", src, cfg.src_vocab_size)
        src_pad = self._check_pad("src_pad", src_pad, src, "src")
        _check_int("max_len", max_len, 1, cfg.max_len, " (config.max_len: the positions the decoder covers)")
        _check_int("beam_size", beam_size, 1)
        _check_int("bos_id", bos_id, 0, cfg.tgt_vocab_size - 1, " (a target token id)")
        _check_int("eos_id", eos_id, 0, cfg.tgt_vocab_size - 1, " (a target token id)")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha >= 0:
            raise ValueError(f"length_penalty={alpha!r}: expected a number >= 0")
        was_training = self.training
        self.eval()
        try:
            memory = self.encode(src, src_pad)
            step = _CachedDecoder if use_cache else _RecomputingDecoder
            make = lambda k: step(self, np.repeat(memory, k, axis=0), np.repeat(src_pad, k, axis=0))  # noqa: E731
            hyps, scores = search(make, src.shape[0], beam_size, max_len, alpha, bos_id, eos_id)
        finally:
            self.train(was_training)
        return (hyps, scores) if return_scores else hyps

    # -- PyTorch interoperability ------------------------------------------------------------

    def torch_layout(self) -> dict:
        """{npgpt name: (torch name, rows, transpose)}: where each parameter sits in a PyTorch
        model made of src_embed (nn.Embedding), tgt_embed (nn.Embedding), transformer
        (torch.nn.Transformer, batch_first=True) and generator (nn.Linear).

        torch keeps Linear weights (out, in), npgpt (in, out): transpose. torch fuses q, k, v
        into in_proj_weight (3d, d): npgpt's self-attention c_attn is all of it (transposed),
        cross-attention q_proj rows 0..d-1 and kv_proj rows d..3d-1. With share_embeddings the
        torch model's tgt_embed.weight and generator.weight are the same tensor as
        src_embed.weight (see torch_aliases).
        """
        cfg, d = self.config, self.config.d_model
        layout = {"src_embed.weight": ("src_embed.weight", None, False)}
        if not cfg.share_embeddings:
            layout["tgt_embed.weight"] = ("tgt_embed.weight", None, False)
            layout["generator.weight"] = ("generator.weight", None, True)
        layout["generator.bias"] = ("generator.bias", None, False)
        sublayers = {"self_attn.c_attn": ("self_attn.in_proj", None), "self_attn.c_proj": ("self_attn.out_proj", None),
                     "ff.c_fc": ("linear1", None), "ff.c_proj": ("linear2", None)}
        cross = {"cross_attn.q_proj": ("multihead_attn.in_proj", slice(0, d)),
                 "cross_attn.kv_proj": ("multihead_attn.in_proj", slice(d, 3 * d)),
                 "cross_attn.c_proj": ("multihead_attn.out_proj", None)}
        for stack, n, norms, subs in (("encoder", cfg.n_encoder_layers, (1, 2), sublayers),
                                      ("decoder", cfg.n_decoder_layers, (1, 2, 3), {**sublayers, **cross})):
            for i in range(n):
                ours, theirs = f"{stack}.{i}.", f"transformer.{stack}.layers.{i}."
                for name, (tname, rows) in subs.items():
                    sep = "_" if tname.endswith("in_proj") else "."
                    layout[f"{ours}{name}.weight"] = (f"{theirs}{tname}{sep}weight", rows, True)
                    layout[f"{ours}{name}.bias"] = (f"{theirs}{tname}{sep}bias", rows, False)
                for k in norms:
                    for w in ("weight", "bias"):
                        layout[f"{ours}norm{k}.{w}"] = (f"{theirs}norm{k}.{w}", None, False)
            for w in ("weight", "bias"):
                layout[f"{stack}_norm.{w}"] = (f"transformer.{stack}.norm.{w}", None, False)
        return layout

    def torch_aliases(self) -> dict:
        """{torch name: torch name it is tied to}: with share_embeddings, tgt_embed.weight and
        generator.weight are src_embed.weight. A torch state_dict lists each alias; named
        parameters (and so gradients) list only src_embed.weight."""
        if not self.config.share_embeddings:
            return {}
        return {"tgt_embed.weight": "src_embed.weight", "generator.weight": "src_embed.weight"}

    def torch_to_npgpt(self, arrays: dict) -> dict:
        """{torch name: array or tensor} -> {npgpt name: np.ndarray}, for weights or gradients.

        Every torch name of torch_layout must be there, nothing else (aliases of a tied table
        may be, and must then equal the table); shapes are checked. Errors name the keys.
        """
        arrays = {k: _to_numpy(v) for k, v in arrays.items()}
        layout = self.torch_layout()
        aliases = self.torch_aliases()
        wanted = {tname for tname, _, _ in layout.values()}
        missing = sorted(wanted - set(arrays))
        unexpected = sorted(set(arrays) - wanted - set(aliases))
        if missing or unexpected:
            raise ValueError(f"torch state dict for Transformer: missing keys {missing or 'none'}; "
                             f"unexpected keys {unexpected or 'none'}")
        shapes = self._torch_shapes()
        for tname, a in arrays.items():
            expected = shapes[aliases.get(tname, tname)]
            if a.shape != expected:
                raise ValueError(f"torch state dict: {tname!r} has shape {a.shape}, expected {expected}")
        for alias, target in aliases.items():
            if alias in arrays and not np.array_equal(arrays[alias], arrays[target]):
                raise ValueError(f"torch state dict: {alias!r} differs from {target!r}, but "
                                 f"share_embeddings=True ties them into one table")
        out = {}
        for name, (tname, rows, transpose) in layout.items():
            a = arrays[tname] if rows is None else arrays[tname][rows]
            out[name] = np.ascontiguousarray(a.T if transpose else a)
        return out

    def npgpt_to_torch(self, arrays: dict) -> dict:
        """{npgpt name: array} -> {torch name: np.ndarray}: the inverse of torch_to_npgpt
        (in_proj rebuilt from q_proj and kv_proj; aliases of a tied table included)."""
        layout = self.torch_layout()
        missing = sorted(set(layout) - set(arrays))
        unexpected = sorted(set(arrays) - set(layout))
        if missing or unexpected:
            raise ValueError(f"npgpt_to_torch: missing keys {missing or 'none'}; unexpected keys {unexpected or 'none'}")
        shapes = self._torch_shapes()
        out = {}
        for name, (tname, rows, transpose) in layout.items():
            a = np.asarray(arrays[name])
            a = a.T if transpose else a
            if rows is None:
                out[tname] = np.ascontiguousarray(a)
            else:
                out.setdefault(tname, np.zeros(shapes[tname], dtype=a.dtype))[rows] = a
        for alias, target in self.torch_aliases().items():
            out[alias] = out[target].copy()
        return out

    def torch_state_dict(self) -> dict:
        """This model's weights under the PyTorch model's names and layouts (see torch_layout)."""
        return self.npgpt_to_torch(self.state_dict())

    def load_torch_state_dict(self, state_dict: dict) -> None:
        """Load the weights of the PyTorch layout (numpy arrays or torch tensors), all or nothing:
        missing, unexpected and mis-shaped keys raise a ValueError naming them before any write."""
        self.load_state_dict(self.torch_to_npgpt(state_dict))

    def _torch_shapes(self) -> dict:
        """{torch name: shape} of the PyTorch model's parameters."""
        params = dict(self.named_parameters())
        shapes = {}
        for name, (tname, rows, transpose) in self.torch_layout().items():
            shape = params[name].shape[::-1] if transpose else params[name].shape
            if rows is not None:                          # a row block of in_proj: (3d, ...)
                shape = (3 * self.config.d_model,) + shape[1:]
            shapes[tname] = tuple(shape)
        for alias, target in self.torch_aliases().items():
            shapes[alias] = shapes[target]
        return shapes

    def extra_repr(self):
        cfg = self.config
        ln = "pre-LN" if cfg.norm_first else "post-LN"
        return (f"d_model={cfg.d_model}, n_head={cfg.n_head}, layers={cfg.n_encoder_layers}+"
                f"{cfg.n_decoder_layers}, {ln}, shared={cfg.share_embeddings}")


def _check_int(name: str, value, lo: int, hi: int | None = None, why: str = "") -> None:
    if (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo
            or (hi is not None and value > hi)):
        raise ValueError(f"{name}={value!r}: expected an integer in [{lo}, {'inf' if hi is None else hi}]{why}")


def _to_numpy(a) -> np.ndarray:
    """A numpy array from a numpy array or a torch tensor (without importing torch)."""
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a)


# -- decoding: one decoder position per step ---------------------------------------------------

def _cross_attend(attn, z, k, v, src_pad):
    """Cross-attention with the memory's keys and values already projected (B, H, S, D):
    the eval-mode forward of MultiHeadAttention(cross=True) minus the kv_proj of the memory."""
    q = split_heads(attn.q_proj.forward(z), attn.n_head)                  # (B, T, d) -> (B, H, T, D)
    out, _ = kernels.get("attention_forward")(q, k, v, causal=False, key_pad=src_pad)
    return attn.c_proj.forward(merge_heads(out))                           # (B, H, T, D) -> (B, T, d)


def _decoder_layer_step(layer: DecoderLayer, x, k, v, src_pad, cache: KVCache):
    """DecoderLayer.forward in eval mode (dropout is the identity) for the new positions x,
    with the self-attention's past in `cache` and the memory's keys and values (k, v) given."""
    sa = lambda z: layer.self_attn.forward(z, kv_cache=cache)              # noqa: E731
    ca = lambda z: _cross_attend(layer.cross_attn, z, k, v, src_pad)       # noqa: E731
    if layer.norm_first:
        h = x + sa(layer.norm1.forward(x))
        g = h + ca(layer.norm2.forward(h))
        return g + layer.ff.forward(layer.norm3.forward(g))
    h = layer.norm1.forward(x + sa(x))
    g = layer.norm2.forward(h + ca(h))
    return layer.norm3.forward(g + layer.ff.forward(g))


class _CachedDecoder:
    """Incremental decoding of N sequences: step(tokens) feeds one token per sequence and
    returns the next-token logits (N, V); reorder(index) follows the surviving beams."""

    def __init__(self, model: Transformer, memory, src_pad):
        self.model, self.src_pad, self.t = model, src_pad, 0
        self.caches = [KVCache() for _ in model.decoder]
        self.memory_kv = []                                  # per layer: memory -> (k, v), once
        for layer in model.decoder:
            k, v = np.split(layer.cross_attn.kv_proj.forward(memory), 2, axis=-1)
            H = layer.cross_attn.n_head
            self.memory_kv.append((split_heads(k, H), split_heads(v, H)))   # (N, S, d) -> (N, H, S, D)

    def step(self, tokens):
        m = self.model
        y = m._embed(m.tgt_embed, tokens[:, None], "tokens", offset=self.t)   # (N, 1, d) at position t
        for layer, cache, (k, v) in zip(m.decoder, self.caches, self.memory_kv):
            y = _decoder_layer_step(layer, y, k, v, self.src_pad, cache)
        self.t += 1
        return m.generator.forward(m.decoder_norm.forward(y))[:, -1]          # (N, V)

    def reorder(self, index):
        for cache in self.caches:
            cache.reorder(index)


class _RecomputingDecoder:
    """The same interface as _CachedDecoder, by running the whole decoder over the prefix at
    every step: the plain definition that the cached decoder is tested against."""

    def __init__(self, model: Transformer, memory, src_pad):
        self.model, self.memory, self.src_pad = model, memory, src_pad
        self.prefix = np.zeros((memory.shape[0], 0), dtype=np.int64)

    def step(self, tokens):
        self.prefix = np.concatenate([self.prefix, tokens[:, None]], axis=1)   # (N, t+1)
        no_pad = np.zeros(self.prefix.shape, dtype=bool)
        return self.model.decode(self.prefix, self.memory, self.src_pad, no_pad)[:, -1]

    def reorder(self, index):
        self.prefix = self.prefix[index]


def _log_softmax(logits) -> np.ndarray:
    """log softmax over the last axis, in float64 (scores add up over many steps)."""
    x = logits.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def gnmt_length_penalty(length, alpha: float):
    """lp(L) = ((5 + L) / 6) ** alpha (Wu et al., 2016); 1 at alpha = 0."""
    return ((5.0 + np.asarray(length, dtype=np.float64)) / 6.0) ** alpha


def _greedy(make_decoder, B, _beam_size, max_len, alpha, bos_id, eos_id):
    """The argmax token at every step, until every sequence has made EOS or max_len tokens."""
    dec = make_decoder(1)
    tokens = np.full(B, bos_id, dtype=np.int64)
    logprob = np.zeros(B)
    length = np.zeros(B, dtype=np.int64)
    done = np.zeros(B, dtype=bool)
    out = []
    for _ in range(max_len):
        logp = _log_softmax(dec.step(tokens))                                 # (B, V)
        tokens = logp.argmax(axis=-1)
        logprob += np.where(done, 0.0, logp[np.arange(B), tokens])
        length += ~done
        out.append(np.where(done, eos_id, tokens))
        done |= tokens == eos_id
        if done.all():
            break
    out = np.stack(out, axis=1)                                               # (B, steps)
    hyps = [_strip(row, eos_id) for row in out]
    return hyps, logprob / gnmt_length_penalty(length, alpha)


def _strip(row, eos_id) -> list[int]:
    """The tokens before the first EOS, as Python ints."""
    row = [int(t) for t in row]
    return row[:row.index(eos_id)] if eos_id in row else row


class _Finished(NamedTuple):
    score: float          # log P / lp(length)
    tokens: list          # without BOS and EOS


def _best(finished: list) -> float:
    return max(f.score for f in finished)


def _beam_search(make_decoder, B, k, max_len, alpha, bos_id, eos_id):
    """Beam search with k beams per source, all sources at once (N = B * k decoder rows).

    At each step every live beam b (cumulative log-probability s_b) proposes every token v:
    s_b + log p(v | beam b). Per source the 2k best proposals are walked in order: one that
    ends in EOS and ranks among the first k is a finished hypothesis, scored s / lp(length);
    the first k that do not end in EOS are the next step's beams (at most k of the 2k can be
    EOS, one per beam, so k always remain). A source is done when it has k finished
    hypotheses and none of its live beams scores better than the best of them at the current
    length, s / lp(t) (a live beam that is still ahead keeps the search going, so a short
    hypothesis that ended early cannot win by filling the k places first); at max_len its live
    beams are finished as they stand. The answer is the best finished score. With k = 1 every
    step keeps the argmax: greedy decoding, exactly (the live beam never outscores the EOS
    proposal it ranked below).
    At the first step only beam 0 is live (the others start at -inf), so the k beams differ.
    """
    dec = make_decoder(k)
    scores = np.full((B, k), -np.inf)
    scores[:, 0] = 0.0
    history = np.zeros((B * k, 0), dtype=np.int64)                          # generated tokens per row
    tokens = np.full(B * k, bos_id, dtype=np.int64)
    finished = [[] for _ in range(B)]
    done = np.zeros(B, dtype=bool)
    for t in range(max_len):
        logp = _log_softmax(dec.step(tokens))                                # (B*k, V)
        V = logp.shape[-1]
        cand = (scores[:, :, None] + logp.reshape(B, k, V)).reshape(B, k * V)   # (B, k*V)
        best = np.argsort(-cand, axis=1, kind="stable")[:, :2 * k]           # ties: lower index first
        beam = np.tile(np.arange(k), (B, 1))                                 # done sources stand still
        new_tokens = np.full((B, k), eos_id, dtype=np.int64)
        new_scores = scores.copy()
        for b in np.flatnonzero(~done):
            live = 0
            for rank, c in enumerate(best[b]):
                s, (src_beam, v) = cand[b, c], divmod(int(c), V)
                if s == -np.inf:
                    break
                if v == eos_id:
                    if rank < k:
                        row = history[b * k + src_beam]
                        finished[b].append(_Finished(s / gnmt_length_penalty(t + 1, alpha), row.tolist()))
                    continue
                beam[b, live], new_tokens[b, live], new_scores[b, live] = src_beam, v, s
                live += 1
                if live == k:
                    break
            new_scores[b, live:] = -np.inf                                   # fewer than k proposals
            done[b] = live == 0 or (len(finished[b]) >= k and _best(finished[b]) >=
                                    new_scores[b, :live].max() / gnmt_length_penalty(t + 1, alpha))
        if done.all():
            break
        index = (np.arange(B)[:, None] * k + beam).ravel()                   # (B, k) -> rows of (B*k)
        dec.reorder(index)
        history = np.concatenate([history[index], new_tokens.reshape(-1, 1)], axis=1)
        tokens, scores = new_tokens.ravel(), new_scores
    for b in np.flatnonzero(~done):                                          # reached max_len
        for j in range(k):
            if scores[b, j] > -np.inf:
                finished[b].append(_Finished(scores[b, j] / gnmt_length_penalty(history.shape[1], alpha),
                                             history[b * k + j].tolist()))
    hyps, best_scores = [], np.zeros(B)
    for b in range(B):
        top = max(finished[b], key=lambda f: f.score)                        # first of equal scores
        hyps.append([int(x) for x in top.tokens])
        best_scores[b] = top.score
    return hyps, best_scores
