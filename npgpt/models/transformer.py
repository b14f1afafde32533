"""The encoder-decoder Transformer of Vaswani et al. (2017), "Attention Is All You Need".

The model's chain of layers is in the Transformer class docstring: the source embedding, the
encoder, the target embedding, the decoder, the generator and the loss. Each encoder layer
attends over the source (padded source positions hidden); each decoder layer attends causally
over the target (padded target positions hidden), then over `memory` (padded source positions
hidden). PE is the fixed sinusoidal encoding (npgpt.nn.sinusoidal_encoding).

It computes the same function as PyTorch's torch.nn.Transformer (batch_first=True, ReLU) with
nn.Embedding tables and an nn.Linear generator around it, including the two things that are easy
to miss: torch.nn.Transformer always ends its encoder and its decoder with a LayerNorm
(encoder.norm, decoder.norm), for post-LN *and* pre-LN layers, so a post-LN stack is normalised
twice at its top (the last layer's norm2/norm3, then the final norm); and the paper multiplies the
embeddings by sqrt(d_model) before adding the positions. `load_torch_state_dict` maps the names.

Parameter names: src_embed.weight, tgt_embed.weight, encoder.{i}.self_attn.c_attn.weight, ...,
encoder_norm.weight, decoder.{i}.cross_attn.q_proj.weight, ..., decoder_norm.bias,
generator.weight, generator.bias. With share_embeddings there is one table (see Transformer).

Decoding (`translate`): greedy or beam search, with the encoder run once and the decoder's own
forward stepping one position at a time with a KV cache (models/decoding.py). The PyTorch
names and layouts are in models/torch_map.py.
"""

from __future__ import annotations

import math
import numpy as np

from ..config import TransformerConfig
from ..nn import (CrossEntropyLoss, DecoderLayer, Dropout, Embedding, EncoderLayer, KVCache,
                  LayerNorm, Linear, Module, ModuleList, SinusoidalPositionalEncoding,
                  flatten_parameters)
from ..nn.head import TiedHead
from ..nn.module import as_dtype
from ..nn.validate import check_array, check_ids
from . import torch_map
from .decoding import CachedDecoder, RecomputingDecoder, beam_search, greedy


def xavier_uniform(rng: np.random.Generator, shape, dtype) -> np.ndarray:
    """Glorot & Bengio's uniform init: U(-a, a), a = sqrt(6 / (fan_in + fan_out)), for a matrix
    of shape (fan_in, fan_out) (or (fan_out, fan_in): the formula is symmetric)."""
    bound = math.sqrt(6.0 / (shape[0] + shape[1]))
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


class Transformer(Module):
    """The encoder-decoder model of a TransformerConfig:

    forward:
        x      = dropout(E_src[src] * sqrt(d) + PE[0..S-1])        source embedding   (B, S, d)
        memory = encoder_norm(enc_N( ... enc_1(x, src_pad)))       the encoder         (B, S, d)
        y      = dropout(E_tgt[tgt_in] * sqrt(d) + PE[0..T-1])     target embedding   (B, T, d)
        h      = decoder_norm(dec_N( ... dec_1(y, memory)))        the decoder         (B, T, d)
        logits = h @ W_gen + b_gen                                 generator           (B, T, V)
        loss   = smoothed cross-entropy(logits, tgt_out), ignoring tgt_out == pad_id
    backward:
        dlogits = (softmax(logits) - q) / count,   dy_N = decoder_norm'(generator'(dlogits))
        (dy_(i-1), dm_i) = dec_i'(dy_i),   dmemory = sum_i dm_i    memory feeds every decoder layer
        dE_tgt += sqrt(d) dropout'(dy_0) scattered by tgt_in
        dx_N = encoder_norm'(dmemory),   dx_(i-1) = enc_i'(dx_i)
        dE_src += sqrt(d) dropout'(dx_0) scattered by src          PE is fixed: no gradient
    f'(d): f's backward applied to d.

    Shared embeddings (share_embeddings=True, one vocabulary): ONE matrix E of shape (V, d) is
    the source lookup table, the target lookup table and the generator's weight (logits =
    h @ E^T + b). The lookups are scaled by sqrt(d), the output projection is not (as in the
    paper and in a PyTorch model with tgt_embed.weight = generator.weight = src_embed.weight).
    E is listed once, as `src_embed.weight`, and its gradient is the sum of all three uses;
    the generator (a TiedHead) has a bias of its own (`generator.bias`).

    Initialisation, seeded by `seed` (the same seed gives the same weights and dropout masks):
    every matrix, embeddings and generator included, is xavier-uniform, as torch.nn.Transformer
    does for its own matrices and the Annotated Transformer for the whole model; the q, k, v
    projections of an attention draw as ONE (d, 3d) matrix, as torch's in_proj_weight does, so
    their scale matches torch's. Biases are 0 (where torch draws its feed-forward biases from
    U(+-1/sqrt(fan_in)): the simplest choice, and npgpt's GPT's), LayerNorms (1, 0). An
    embedding element, U(+-sqrt(6/(V+d))) times sqrt(d), has std sqrt(2d/(V+d)): about 1 when
    V ~ d, the size of the positions' sines and cosines. The parameters then move into one flat
    buffer (flatten_parameters), so an optimizer updates the whole model in one pass.
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
            self.generator = TiedHead(self.src_embed, bias=True)    # logits = h @ E^T + b
        else:
            self.generator = Linear(d, cfg.tgt_vocab_size, dtype=dt, rng=r_init)
        self.loss_fn = CrossEntropyLoss(ignore_index=cfg.pad_id, label_smoothing=cfg.label_smoothing)
        self.emb_scale = dt.type(math.sqrt(d))
        self._memory_shape = None
        self._has_loss = False
        self._init_weights(r_init)
        flatten_parameters(self)                                    # one buffer: one optimizer pass

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

    def decode(self, tgt_in, memory, src_pad, tgt_pad, *, offset: int = 0,
               kv_caches: list[KVCache] | None = None, memory_caches: list[KVCache] | None = None):
        """The decoder and the generator: tgt_in (B, T) ids, memory (B, S, d) -> logits (B, T, V).

        Incremental decoding (inference only, see decoding.CachedDecoder): tgt_in holds the
        positions offset .. offset+T-1; kv_caches and memory_caches hold one KVCache per layer
        for its self-attention (the earlier positions) and its cross-attention (the memory).
        """
        y = self.tgt_drop.forward(self._embed(self.tgt_embed, tgt_in, "tgt_in", offset))
        for i, layer in enumerate(self.decoder):
            y = layer.forward(y, memory, tgt_pad=tgt_pad, src_pad=src_pad,
                              kv_cache=kv_caches[i] if kv_caches else None,
                              memory_cache=memory_caches[i] if memory_caches else None)
        return self.generator.forward(self.decoder_norm.forward(y))

    def _embed(self, table: Embedding, ids, name: str, offset: int = 0):
        """E[ids] * sqrt(d) + PE[offset .. offset+T-1]: (B, T) -> (B, T, d)."""
        return table.forward(ids, name) * self.emb_scale + self.pos.forward(ids.shape[1], offset)

    def backward(self, dlogits=None):
        """The chain rule through forward (encode, then decode), in reverse. Gradients are added
        into every .grad.

        dlogits: (B, T, V), the gradient of whatever scalar you differentiate; by default the
        mean cross-entropy of the last forward (which must have had tgt_out). Returns None.
        """
        if dlogits is None:
            if not self._has_loss:
                raise RuntimeError("Transformer.backward() without dlogits needs a forward with tgt_out first")
            dlogits = self.loss_fn.backward(1.0)                          # (B, T, V)
        else:
            check_array("dlogits", dlogits, dtype=self.decoder_norm.weight.dtype, ndim=3,
                        last_dim=self.config.tgt_vocab_size)
        # decode, forward: logits = generator(decoder_norm(y_N))
        dy = self.decoder_norm.backward(self.generator.backward(dlogits))
        # forward: y_i = dec_i(y_{i-1}, memory): memory feeds EVERY decoder layer, so its
        # gradient is the sum of what each layer's cross-attention sends back
        dmemory = np.zeros(self._memory_shape, dtype=dy.dtype)
        for layer in reversed(self.decoder):
            dy, dm = layer.backward(dy)
            dmemory += dm
        # forward: y_0 = dropout(E_tgt[tgt_in] * sqrt(d) + PE)   (PE is fixed: nothing to learn,
        # but its backward is called, so that every forward call has its backward, in reverse)
        dy = self.tgt_drop.backward(dy)
        self.pos.backward(dy)
        self.tgt_embed.backward(dy * self.emb_scale)
        # encode, forward: memory = encoder_norm(x_N),  x_i = enc_i(x_{i-1})
        dx = self.encoder_norm.backward(dmemory)
        for layer in reversed(self.encoder):
            dx = layer.backward(dx)
        # forward: x_0 = dropout(E_src[src] * sqrt(d) + PE)
        dx = self.src_drop.backward(dx)
        self.pos.backward(dx)
        self.src_embed.backward(dx * self.emb_scale)
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

    # -- decoding (models/decoding.py) -------------------------------------------------------

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
        log P(y | x) / lp(max_len) for a y that reached max_len without EOS, where
        lp(L) = ((5 + L) / 6) ** length_penalty (GNMT's). length_penalty (alpha) changes which
        hypothesis beam search picks; greedy picks the argmax regardless and alpha only scales
        its score. use_cache=False recomputes the whole decoder prefix at every step (the
        reference that the cached path is tested against; slower).
        """
        _check_int("beam_size", beam_size, 1)
        search = self.greedy_decode if beam_size == 1 else self.beam_search
        kw = {} if beam_size == 1 else dict(beam_size=beam_size)
        return search(src, max_len=max_len, length_penalty=length_penalty, src_pad=src_pad,
                      bos_id=bos_id, eos_id=eos_id, use_cache=use_cache, return_scores=return_scores, **kw)

    def greedy_decode(self, src, max_len: int = 32, length_penalty: float = 0.6, src_pad=None,
                      bos_id: int = 1, eos_id: int = 2, *, use_cache: bool = True, return_scores: bool = False):
        """Greedy decoding: the most probable token at each step (see translate)."""
        return self._search(greedy, src, max_len, 1, length_penalty, src_pad, bos_id, eos_id,
                            use_cache, return_scores)

    def beam_search(self, src, beam_size: int = 4, max_len: int = 32, length_penalty: float = 0.6,
                    src_pad=None, bos_id: int = 1, eos_id: int = 2, *, use_cache: bool = True,
                    return_scores: bool = False):
        """Beam search (see translate and decoding.beam_search); beam_size=1 gives greedy's output."""
        return self._search(beam_search, src, max_len, beam_size, length_penalty, src_pad, bos_id,
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
            decoder = CachedDecoder if use_cache else RecomputingDecoder
            make = lambda k: decoder(self, np.repeat(memory, k, axis=0), np.repeat(src_pad, k, axis=0))  # noqa: E731
            hyps, scores = search(make, src.shape[0], beam_size, max_len, alpha, bos_id, eos_id)
        finally:
            self.train(was_training)
        return (hyps, scores) if return_scores else hyps

    # -- PyTorch interoperability (models/torch_map.py) --------------------------------------

    def torch_layout(self) -> dict:
        """{npgpt name: (torch name, rows, transpose)}: where each parameter sits in the PyTorch
        model (src_embed, tgt_embed, transformer = torch.nn.Transformer, generator)."""
        return torch_map.layout(self.config)

    def torch_aliases(self) -> dict:
        """{torch name: torch name it is tied to} (share_embeddings); see torch_map.aliases."""
        return torch_map.aliases(self.config)

    def torch_to_npgpt(self, arrays: dict) -> dict:
        """{torch name: array or tensor} -> {npgpt name: np.ndarray}, for weights or gradients,
        every key and shape checked (see torch_map.to_npgpt)."""
        return torch_map.to_npgpt(self.config, self._shapes(), arrays)

    def npgpt_to_torch(self, arrays: dict) -> dict:
        """{npgpt name: array} -> {torch name: np.ndarray}: the inverse of torch_to_npgpt."""
        return torch_map.to_torch(self.config, self._shapes(), arrays)

    def torch_state_dict(self) -> dict:
        """This model's weights under the PyTorch model's names and layouts."""
        return self.npgpt_to_torch(self.state_dict())

    def load_torch_state_dict(self, state_dict: dict) -> None:
        """Load the weights of the PyTorch layout (numpy arrays or torch tensors), all or nothing:
        missing, unexpected and mis-shaped keys raise a ValueError naming them before any write."""
        self.load_state_dict(self.torch_to_npgpt(state_dict))

    def _shapes(self) -> dict:
        return {name: p.shape for name, p in self.named_parameters()}

    def extra_repr(self):
        cfg = self.config
        ln = "pre-LN" if cfg.norm_first else "post-LN"
        return (f"d_model={cfg.d_model}, n_head={cfg.n_head}, layers={cfg.n_encoder_layers}+"
                f"{cfg.n_decoder_layers}, {ln}, shared={cfg.share_embeddings}")


def _check_int(name: str, value, lo: int, hi: int | None = None, why: str = "") -> None:
    if (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo
            or (hi is not None and value > hi)):
        raise ValueError(f"{name}={value!r}: expected an integer in [{lo}, {'inf' if hi is None else hi}]{why}")
