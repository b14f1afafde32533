"""The data of a seq2seq run: character pairs from a built-in task or a TSV file, checked and
batched (npgpt.runs.seq2seq trains on them).

    data = load_data(cfg)               # vocabulary, train and held-out pairs, where they came from
    check_pairs(data.train, data.vocab.size, max_len=fitted_seq_len(data.train + data.test))
    next_batch = batch_fn(data.train, data.vocab, batch_size=64, max_len=21)   # rng -> Batch

A built-in task (npgpt.data.make_task: copy, reverse, sort, addition; train and test sources
distinct) or parallel text, one 'source<TAB>target' per line (npgpt.data.load_pairs_tsv), whose
lines are shuffled with the seed and split into train and held-out parts. One character is one
token; source and target share the vocabulary (pad 0, bos 1, eos 2, unk 3, then the symbols).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from ..data import load_pairs_tsv, load_text, make_task, pad_batch


class Seq2SeqData(NamedTuple):
    vocab: object           # npgpt.data.Seq2SeqVocab
    train: list             # [(src ids, tgt ids)], targets without bos/eos
    test: list              # the held-out pairs
    source: str             # where they came from, in words
    sha256: str             # of the TSV file, or of the generated pairs
    where: Callable         # (split, index) -> how an error names that pair ("line 7 of 'x.tsv'")


def load_data(cfg) -> Seq2SeqData:
    """The vocabulary and train / held-out pairs of the run of cfg (a Seq2SeqConfig): the same
    for the same settings."""
    if cfg.data is None:
        task = cfg.resolved_task
        vocab, train, test = make_task(task, cfg.n_train, cfg.n_test, seed=cfg.seed,
                                       min_len=cfg.min_len, max_len=cfg.max_len, n_digits=cfg.n_digits)
        digest = hashlib.sha256(json.dumps([train, test]).encode()).hexdigest()
        lengths = (f"{cfg.n_digits}-digit operands" if task == "addition"
                   else f"{cfg.min_len} to {cfg.max_len} digits")
        source = f"task {task!r} ({lengths}, seed {cfg.seed})"

        def where(split, i):
            pairs = train if split == "train" else test
            s, t = pairs[i]
            return f"{split} pair {i} ({vocab.decode(s)!r} -> {vocab.decode(t)!r})"
        return Seq2SeqData(vocab, train, test, source, digest, where)

    vocab, pairs = load_pairs_tsv(cfg.data)
    linenos = _tsv_line_numbers(cfg.data)
    n_test = int(round(len(pairs) * cfg.test_fraction))
    if len(pairs) < 2 or n_test < 1 or n_test >= len(pairs):
        raise ValueError(f"data {cfg.data!r} has {len(pairs)} pairs: --test-fraction {cfg.test_fraction} "
                         f"holds out {n_test}, expected at least one pair on each side (more lines, "
                         f"or another --test-fraction)")
    order = np.random.default_rng(cfg.seed).permutation(len(pairs))
    test_idx, train_idx = order[:n_test], order[n_test:]
    train, test = [pairs[i] for i in train_idx], [pairs[i] for i in test_idx]
    digest = hashlib.sha256(Path(cfg.data).read_bytes()).hexdigest()

    def where(split, i):
        line = linenos[(train_idx if split == "train" else test_idx)[i]]
        return f"{cfg.data!r} line {line}"
    return Seq2SeqData(vocab, train, test, repr(cfg.data), digest, where)


def _tsv_line_numbers(path) -> list[int]:
    """The line number of each pair load_pairs_tsv reads (it skips empty lines)."""
    return [n for n, line in enumerate(load_text(path).split("\n"), start=1) if line.removesuffix("\r")]


def fitted_seq_len(pairs) -> int:
    """The shortest max_len that holds every pair: the longest source, or target + eos."""
    return max(max(len(s), len(t) + 1) for s, t in pairs)


def check_pairs(pairs, vocab_size: int, max_len: int, where: Callable = None,
                tgt_vocab_size: int | None = None) -> None:
    """Every pair (src ids, tgt ids) fits a model of max_len positions and vocab_size ids
    (tgt_vocab_size for the targets, when it differs).

    A source longer than max_len, a target longer than max_len - 1 (its bos/eos takes one), an
    empty side, or an id outside [0, vocab_size) raises ValueError naming the pair (where(i),
    default 'pairs[i]'), the side, the length or id, and the limit.
    """
    where = where or (lambda i: f"pairs[{i}]")
    sizes = {"source": vocab_size, "target": vocab_size if tgt_vocab_size is None else tgt_vocab_size}
    for i, pair in enumerate(pairs):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise ValueError(f"{where(i)} is {pair!r}: expected a pair (source ids, target ids)")
        for side, ids, limit in (("source", pair[0], max_len), ("target", pair[1], max_len - 1)):
            ids = list(ids)
            if not ids:
                raise ValueError(f"{where(i)}: the {side} is empty, expected at least one symbol")
            if len(ids) > limit:
                plus = (f" ({len(ids) + 1} positions with its end-of-sequence token)"
                        if side == "target" else "")
                raise ValueError(f"{where(i)}: the {side} has {len(ids)} symbols{plus}, longer than "
                                 f"max_len={max_len} (--seq-len; the model's positions)")
            for pos, t in enumerate(ids):
                if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or not 0 <= t < sizes[side]:
                    raise ValueError(f"{where(i)}: {side} token {pos} is {t!r}, expected a token id "
                                     f"in [0, {sizes[side]})")


def batch_fn(pairs, vocab, batch_size: int, max_len: int) -> Callable:
    """rng -> a padded Batch of batch_size pairs drawn without replacement (all of them when
    there are fewer). Only rng decides which, so a resumed run draws the same batches."""
    n = min(batch_size, len(pairs))
    return lambda rng: pad_batch([pairs[i] for i in rng.choice(len(pairs), size=n, replace=False)],
                                 vocab, max_len)


def target_tokens(batch) -> int:
    """The target positions the loss is a mean over (the real tokens and the end-of-sequence)."""
    return int((~batch.tgt_pad).sum())


def tokens_fn(batch) -> int:
    """Real (non-pad) tokens of a batch, source and target: for tokens/s."""
    return int((~batch.src_pad).sum() + (~batch.tgt_pad).sum())
