"""Decoding an encoder-decoder Transformer: greedy search and beam search, with a KV cache.

The encoder runs once. The decoder then makes one position per step, through its own forward
(Transformer.decode) with two KVCaches per layer: the self-attention's keys and values of the
positions so far (one more each step), and the cross-attention's projection of the memory
(computed at the first step, reused after). A step costs one position, not the whole prefix;
RecomputingDecoder, which runs the decoder over the whole prefix every step, is the plain
definition the cached one is tested against.

Hypotheses are scored by log P(y | x) / lp(|y|) with GNMT's length penalty

    lp(L) = ((5 + L) / 6) ** alpha           (Wu et al., 2016; alpha = length_penalty)

where |y| counts the generated tokens including EOS (not BOS); alpha = 0 gives the plain
log-probability, larger alpha favours longer outputs.

greedy and beam_search take make_decoder(k), which returns a decoder (CachedDecoder or
RecomputingDecoder) over the memory with each source repeated k times; Transformer.translate
encodes the sources, checks the arguments and runs one of them in eval mode.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..nn import KVCache


class CachedDecoder:
    """Incremental decoding of N sequences: step(tokens) feeds one token per sequence and
    returns the next-token logits (N, V); reorder(index) follows the surviving beams.

    memory (N, S, d), src_pad (N, S): the encoder's output and source mask, one row per
    sequence (a source's k beams share its rows, repeated)."""

    def __init__(self, model, memory, src_pad):
        self.model, self.memory, self.src_pad, self.t = model, memory, src_pad, 0
        self.kv_caches = [KVCache() for _ in model.decoder]          # self-attention: the past
        self.memory_caches = [KVCache() for _ in model.decoder]      # cross-attention: the memory

    def step(self, tokens):
        logits = self.model.decode(tokens[:, None], self.memory, self.src_pad, None, offset=self.t,
                                   kv_caches=self.kv_caches, memory_caches=self.memory_caches)
        self.t += 1
        return logits[:, -1]                                           # (N, 1, V) -> (N, V)

    def reorder(self, index):
        """Row i continues row index[i]. Only the self-attention's past moves: index stays within
        a source's k rows (beam search's), whose memory and memory caches are the same."""
        for cache in self.kv_caches:
            cache.reorder(index)


class RecomputingDecoder:
    """The same interface as CachedDecoder, by running the whole decoder over the prefix at
    every step: the plain definition that the cached decoder is tested against."""

    def __init__(self, model, memory, src_pad):
        self.model, self.memory, self.src_pad = model, memory, src_pad
        self.prefix = np.zeros((memory.shape[0], 0), dtype=np.int64)

    def step(self, tokens):
        self.prefix = np.concatenate([self.prefix, tokens[:, None]], axis=1)   # (N, t+1)
        no_pad = np.zeros(self.prefix.shape, dtype=bool)
        return self.model.decode(self.prefix, self.memory, self.src_pad, no_pad)[:, -1]

    def reorder(self, index):
        self.prefix = self.prefix[index]


def log_softmax(logits) -> np.ndarray:
    """log softmax over the last axis, in float64 (scores add up over many steps)."""
    x = logits.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def gnmt_length_penalty(length, alpha: float):
    """lp(L) = ((5 + L) / 6) ** alpha (Wu et al., 2016); 1 at alpha = 0."""
    return ((5.0 + np.asarray(length, dtype=np.float64)) / 6.0) ** alpha


def greedy(make_decoder, B, _beam_size, max_len, alpha, bos_id, eos_id):
    """The argmax token at every step, until every sequence has made EOS or max_len tokens."""
    dec = make_decoder(1)
    tokens = np.full(B, bos_id, dtype=np.int64)
    logprob = np.zeros(B)
    length = np.zeros(B, dtype=np.int64)
    done = np.zeros(B, dtype=bool)
    out = []
    for _ in range(max_len):
        logp = log_softmax(dec.step(tokens))                                  # (B, V)
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


class Finished(NamedTuple):
    score: float          # log P / lp(length)
    tokens: list          # without BOS and EOS


def beam_search(make_decoder, B, k, max_len, alpha, bos_id, eos_id):
    """Beam search with k beams per source, all sources at once (N = B * k decoder rows).

    At each step every live beam b (cumulative log-probability s_b) proposes every token v:
    s_b + log p(v | beam b). Per source the 2k best proposals are walked in order (_select):
    one that ends in EOS and ranks among the first k is a finished hypothesis, scored
    s / lp(length); the first k that do not end in EOS are the next step's beams (at most k of
    the 2k can be EOS, one per beam, so k always remain). A source is done when it has k
    finished hypotheses and none of its live beams scores better than the best of them at the
    current length, s / lp(t) (a live beam that is still ahead keeps the search going, so a short
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
        logp = log_softmax(dec.step(tokens))                                 # (B*k, V)
        cand = (scores[:, :, None] + logp.reshape(B, k, -1)).reshape(B, -1)  # (B, k*V)
        beam, new_tokens, new_scores = _select(cand, scores, history, finished, done, t + 1, alpha, eos_id)
        if done.all():
            break
        index = (np.arange(B)[:, None] * k + beam).ravel()                   # (B, k) -> rows of (B*k)
        dec.reorder(index)
        history = np.concatenate([history[index], new_tokens.reshape(-1, 1)], axis=1)
        tokens, scores = new_tokens.ravel(), new_scores
    for b in np.flatnonzero(~done):                                          # reached max_len
        lp = gnmt_length_penalty(history.shape[1], alpha)
        finished[b] += [Finished(scores[b, j] / lp, history[b * k + j].tolist())
                        for j in range(k) if scores[b, j] > -np.inf]
    best = [max(f, key=lambda h: h.score) for f in finished]                 # first of equal scores
    return [[int(x) for x in h.tokens] for h in best], np.array([h.score for h in best])


def _select(cand, scores, history, finished, done, length, alpha, eos_id):
    """One step of beam search for every source not done (see beam_search).

    cand: (B, k*V) proposals' scores; length: the hypotheses' length after this step.
    Returns the next beams as (B, k) arrays: the beam each continues, its token, its score
    (sources done stand still). Adds finished hypotheses to `finished`, marks sources `done`.
    """
    B, k = scores.shape
    V = cand.shape[1] // k
    lp = gnmt_length_penalty(length, alpha)
    best = np.argsort(-cand, axis=1, kind="stable")[:, :2 * k]               # ties: lower index first
    beam = np.tile(np.arange(k), (B, 1))
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
                    finished[b].append(Finished(s / lp, history[b * k + src_beam].tolist()))
                continue
            beam[b, live], new_tokens[b, live], new_scores[b, live] = src_beam, v, s
            live += 1
            if live == k:
                break
        new_scores[b, live:] = -np.inf                                       # fewer than k proposals
        done[b] = live == 0 or (len(finished[b]) >= k and
                                max(f.score for f in finished[b]) >= new_scores[b, :live].max() / lp)
    return beam, new_tokens, new_scores
