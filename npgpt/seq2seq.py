"""Sequence to sequence: train the encoder-decoder Transformer on a task or a TSV file, translate.

    npgpt seq2seq train --task reverse --out runs/reverse        # or --data pairs.tsv
    npgpt seq2seq translate --checkpoint runs/reverse --input 0123456789 --beam-size 4

The same from Python:

    result = train_seq2seq(Seq2SeqTrainConfig(task="reverse", out="runs/reverse"))
    result.final.exact_match                        # greedy exact match on the held-out pairs
    model, vocab = load_seq2seq("runs/reverse")      # a Transformer in eval mode and its vocabulary
    translate_texts(model, vocab, ["0123456789"], beam_size=4)        # -> ['9876543210']

Data. A built-in task (npgpt.data.make_task: copy, reverse, sort, addition; train and test
sources distinct) or parallel text, one 'source<TAB>target' per line (npgpt.data.load_pairs_tsv),
whose lines are shuffled with the seed and split into train and held-out parts. One character
is one token; source and target share the vocabulary (pad 0, bos 1, eos 2, unk 3, then the
symbols). The model's max_len (--seq-len) covers the longest source and the longest target plus
its end-of-sequence token; by default it is fitted to the data.

Training is npgpt.train.Trainer's loop (progress bar, OUT/log.jsonl, atomic checkpoints, exact
resume, Ctrl-C, NaN guard) with:

    batch      batch_size pairs drawn without replacement from the training pairs by the
               Trainer's Generator, padded (npgpt.data.pad_batch); so a resumed run draws
               the same batches as an uninterrupted one
    loss       the model's label-smoothed cross-entropy over the non-pad target positions
    optimizer  AdamW, betas (0.9, 0.98), eps 1e-9 (the paper's), no weight decay by default
    schedule   "noam":     the paper's lr ~ min(t^-0.5, t W^-1.5), scaled so its peak (at t = W,
                           the warmup) is --lr; the paper's own factor 1 is --lr (d_model W)^-0.5
               "cosine":   linear warmup to --lr, cosine decay to --min-lr at --max-iters
               "constant": linear warmup to --lr, then --lr
    eval       every eval_interval steps and at the end: the validation loss of the held-out
               pairs (in the log) and their exact match under greedy decoding: the fraction
               of sources whose whole output equals the target (OUT/eval.jsonl, the checkpoint)

The checkpoint (OUT/ckpt.safetensors) holds, besides the weights, the optimizer and every
generator state: "seq2seq" (this config), "vocab" (Seq2SeqVocab.to_dict()), "data" (where the
pairs came from, their count and SHA-256: a resume checks it), "exact_match" ({step: fraction}).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from . import checkpoint as ckpt_io
from .train import CHECKPOINT_NAME, RunLog, TrainResult

EVAL_LOG_NAME = "eval.jsonl"
SCHEDULES = ("noam", "cosine", "constant")
DEFAULT_OUT = "out-seq2seq"


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Seq2SeqTrainConfig:
    """Everything `npgpt seq2seq train` takes; each field is the flag of the same name (--n-train).

    The defaults learn the reverse task (digit strings of 10 to 20 digits) to about 99% held-out
    exact match in a few minutes on 2 cores. Set task or data, not both (neither: "reverse").
    """

    # data
    task: str | None = None          # a built-in task: copy, reverse, sort, addition
    data: str | None = None          # a UTF-8 file of 'source<TAB>target' lines, instead of a task
    n_train: int = 50_000            # task: training pairs
    n_test: int = 500                # task: held-out pairs (sources distinct from the training ones)
    min_len: int = 10                # task copy/reverse/sort: fewest digits of a source
    max_len: int = 20                # task copy/reverse/sort: most digits of a source
    n_digits: int = 4                # task addition: most digits of each operand
    test_fraction: float = 0.1       # data: the share of the file's lines held out
    seq_len: int | None = None       # the model's max_len; None: the longest source / target + 1
    # model (TransformerConfig)
    d_model: int = 64
    n_head: int = 4
    layers: int = 2                  # encoder and decoder layers each (unless set below)
    encoder_layers: int | None = None
    decoder_layers: int | None = None
    d_ff: int | None = None          # None: 4 * d_model
    dropout: float = 0.0
    norm_first: bool = True          # pre-LN (trains without warm-up troubles); False: the paper's post-LN
    share_embeddings: bool = False   # one table for source, target and output
    label_smoothing: float = 0.1     # the paper's; measured: reverse reaches 99% in about half the steps
    dtype: str = "float32"
    # optimisation
    max_iters: int = 2000
    batch_size: int = 64
    schedule: str = "cosine"         # noam, cosine or constant (see the module docstring)
    lr: float = 1e-3                 # the peak learning rate of every schedule
    min_lr: float = 1e-4             # cosine: the learning rate at max_iters
    warmup: int = 100                # steps of linear warmup (noam: the step of the peak)
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-9
    weight_decay: float = 0.0
    grad_clip: float = 1.0           # max global gradient norm; 0: no clipping
    # evaluation, checkpoints, output
    eval_interval: int = 250         # steps between evaluations (and at the last step)
    checkpoint_interval: int = 250   # steps between checkpoints (and at the last step, and Ctrl-C)
    seed: int = 0                    # task data, the split, model init, batches and dropout
    out: str = DEFAULT_OUT           # folder of ckpt.safetensors, log.jsonl and eval.jsonl
    backend: str | None = None       # "numpy" | "numba"; None: the default (NPGPT_BACKEND or fastest)
    examples: int = 5                # held-out translations printed at the end

    def __post_init__(self):
        from .data import TASKS

        from .settings import Checker, is_number
        check = Checker(self)
        fail = check.fail
        if self.task is not None and self.data is not None:
            raise ValueError(f"Seq2SeqTrainConfig: task={self.task!r} and data={self.data!r} both "
                             f"given (--task, --data): expected one")
        if self.task is None and self.data is None:
            object.__setattr__(self, "task", "reverse")
        if self.task is not None and self.task not in TASKS:
            fail("task", f"one of {list(TASKS)}")
        if self.data is not None and not isinstance(self.data, str):
            fail("data", "a file name")
        check.integers("n_train", "n_test", "min_len", "max_len", "n_digits", "d_model", "n_head",
                       "layers", "max_iters", "batch_size")
        check.integers("seq_len", "d_ff", unset="fitted")
        if self.seq_len is not None and self.seq_len < 2:
            fail("seq_len", "at least 2 (a target symbol and its end-of-sequence token)")
        check.integers("encoder_layers", "decoder_layers", low=0, unset="--layers")
        check.integers("warmup", "eval_interval", "checkpoint_interval", "seed", "examples", low=0)
        check.numbers("lr", "min_lr", "weight_decay", "grad_clip")
        if not self.lr > 0:
            fail("lr", "a number > 0")
        if not (is_number(self.eps) and self.eps > 0):
            fail("eps", "a number > 0")
        check.choice("schedule", list(SCHEDULES))
        if self.schedule == "cosine" and self.min_lr > self.lr:
            fail("min_lr", f"a number <= lr={self.lr}")
        if self.schedule == "noam" and self.warmup < 1:
            fail("warmup", "at least 1 with --schedule noam (its peak is at step --warmup)")
        if self.schedule != "noam" and self.warmup > self.max_iters:
            fail("warmup", f"at most max-iters={self.max_iters} (lower --warmup with --max-iters)")
        check.fractions("beta1", "beta2", "dropout", "label_smoothing")
        check.fractions("test_fraction", zero=False)
        if self.min_len > self.max_len:
            fail("max_len", f"at least min-len={self.min_len}")
        if self.d_model % self.n_head:
            fail("n_head", f"a divisor of d-model={self.d_model}")
        check.flags("norm_first", "share_embeddings")
        check.choice("dtype", ("float32", "float64"))
        check.choice("backend", (None, "numpy", "numba", "cuda"))

    def model_config(self, vocab_size: int, seq_len: int):
        """The TransformerConfig of the run, for a vocabulary of vocab_size ids."""
        from .config import TransformerConfig

        return TransformerConfig(
            src_vocab_size=vocab_size, tgt_vocab_size=vocab_size, d_model=self.d_model,
            n_head=self.n_head,
            n_encoder_layers=self.layers if self.encoder_layers is None else self.encoder_layers,
            n_decoder_layers=self.layers if self.decoder_layers is None else self.decoder_layers,
            d_ff=self.d_ff or 4 * self.d_model, max_len=seq_len, dropout=self.dropout,
            norm_first=self.norm_first, share_embeddings=self.share_embeddings,
            label_smoothing=self.label_smoothing, pad_id=0, dtype=self.dtype)

    def schedule_fn(self):
        """step (1-based) -> learning rate."""
        from .optim import Noam, WarmupCosine

        if self.schedule == "noam":
            return Noam(self.d_model, self.warmup, factor=self.lr * math.sqrt(self.d_model * self.warmup))
        if self.schedule == "cosine":
            return WarmupCosine(self.lr, self.warmup, self.max_iters, self.min_lr)
        return WarmupCosine(self.lr, self.warmup, self.max_iters, self.lr)       # constant


# Settings a resumed run may change; the rest must match the checkpoint (the same trajectory).
RESUMABLE_CHANGES = ("max_iters", "eval_interval", "checkpoint_interval", "out", "backend", "examples")


def resume_config(out, overrides: dict | None = None) -> Seq2SeqTrainConfig:
    """The Seq2SeqTrainConfig saved in out/ckpt.safetensors, with overrides of RESUMABLE_CHANGES;
    an override of another setting that differs from the saved one is an error."""
    from .train import resumed_settings
    return resumed_settings(out, Seq2SeqTrainConfig, "seq2seq", RESUMABLE_CHANGES, overrides,
                            "npgpt seq2seq train")


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------

class Seq2SeqData(NamedTuple):
    vocab: object           # npgpt.data.Seq2SeqVocab
    train: list             # [(src ids, tgt ids)], targets without bos/eos
    test: list              # the held-out pairs
    source: str             # where they came from, in words
    sha256: str             # of the TSV file, or of the generated pairs
    where: Callable         # (split, index) -> how an error names that pair ("line 7 of 'x.tsv'")


def load_data(cfg: Seq2SeqTrainConfig) -> Seq2SeqData:
    """The run's vocabulary and train / held-out pairs (the same for the same settings)."""
    from .data import load_pairs_tsv, make_task

    if cfg.data is None:
        vocab, train, test = make_task(cfg.task, cfg.n_train, cfg.n_test, seed=cfg.seed,
                                       min_len=cfg.min_len, max_len=cfg.max_len, n_digits=cfg.n_digits)
        digest = hashlib.sha256(json.dumps([train, test]).encode()).hexdigest()
        lengths = (f"{cfg.n_digits}-digit operands" if cfg.task == "addition"
                   else f"{cfg.min_len} to {cfg.max_len} digits")
        source = f"task {cfg.task!r} ({lengths}, seed {cfg.seed})"

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
    from .data import load_text

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
    from .data import pad_batch

    n = min(batch_size, len(pairs))
    return lambda rng: pad_batch([pairs[i] for i in rng.choice(len(pairs), size=n, replace=False)],
                                 vocab, max_len)


def _tokens(batch) -> int:
    """Real (non-pad) tokens of a batch, source and target: for tokens/s."""
    return int((~batch.src_pad).sum() + (~batch.tgt_pad).sum())


# --------------------------------------------------------------------------------------------
# Evaluation and translation
# --------------------------------------------------------------------------------------------

class Evaluation(NamedTuple):
    exact_match: float      # correct / n
    correct: int            # sources whose whole output equals the target
    n: int                  # held-out pairs
    hypotheses: list        # the output id lists, in the order of the pairs
    beam_size: int


def _chunks(n: int, size: int):
    for k in range(0, n, size):
        yield slice(k, min(k + size, n))


def translate_ids(model, sources, max_len: int | None = None, beam_size: int = 1,
                  length_penalty: float = 0.6, batch_size: int = 128, return_scores: bool = False,
                  bos_id: int = 1, eos_id: int = 2):
    """Translate a list of source id lists: a list of output id lists (after bos, without eos).

    Sources are padded into batches of batch_size (pad id: the model's pad_id); max_len (the
    most generated tokens, eos included) defaults to the model's max_len. An empty source, one
    longer than the model's max_len, or an id outside the source vocabulary raises ValueError
    naming which source. return_scores: also the scores (see Transformer.translate).
    """
    cfg = model.config
    sources = [list(s) for s in sources]
    if max_len is None:
        max_len = cfg.max_len
    check_pairs([(s, [0]) for s in sources], cfg.src_vocab_size, cfg.max_len,
                where=lambda i: f"sources[{i}]")
    hyps, scores = [], []
    for part in _chunks(len(sources), batch_size):
        batch = sources[part]
        S = max(map(len, batch))
        src = np.full((len(batch), S), cfg.pad_id, dtype=np.int64)
        for b, s in enumerate(batch):
            src[b, :len(s)] = s
        src_pad = np.arange(S) >= np.array([len(s) for s in batch])[:, None]      # (B, S)
        h, sc = model.translate(src, max_len=max_len, beam_size=beam_size, length_penalty=length_penalty,
                                src_pad=src_pad, bos_id=bos_id, eos_id=eos_id, return_scores=True)
        hyps += h
        scores += [float(x) for x in sc]
    return (hyps, scores) if return_scores else hyps


def evaluate(model, pairs, beam_size: int = 1, length_penalty: float = 0.6,
             batch_size: int = 256) -> Evaluation:
    """Exact match: decode every source (greedy when beam_size is 1), count the outputs equal
    to their target. The model decodes up to its max_len tokens."""
    cfg = model.config
    check_pairs(pairs, cfg.src_vocab_size, cfg.max_len, tgt_vocab_size=cfg.tgt_vocab_size)
    hyps = translate_ids(model, [s for s, _ in pairs], beam_size=beam_size,
                         length_penalty=length_penalty, batch_size=batch_size)
    correct = sum(h == list(t) for h, (_, t) in zip(hyps, pairs))
    return Evaluation(correct / len(pairs), correct, len(pairs), hyps, beam_size)


def validation_loss(model, pairs, vocab, batch_size: int = 256) -> float:
    """The model's loss over pairs (label-smoothed cross-entropy per target token, eos
    included), averaged over all their target tokens: batches weighted by their tokens."""
    from .data import pad_batch

    total, tokens = 0.0, 0
    for part in _chunks(len(pairs), batch_size):
        batch = pad_batch(pairs[part], vocab, model.config.max_len)
        n = int((~batch.tgt_pad).sum())
        total += float(model.forward(*batch)[1]) * n
        tokens += n
    return total / tokens


def encode_texts(vocab, texts, max_len: int, where: Callable = None) -> list[list[int]]:
    """The ids of each text; an empty text, a character not in vocab, or a text longer than
    max_len raises ValueError saying which text (where(i), default 'input i+1'), which
    character and where."""
    where = where or (lambda i: f"input {i + 1}")
    known, out = set(vocab.symbols), []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{where(i)} is a {type(text).__name__}: expected a str")
        if not text:
            raise ValueError(f"{where(i)} is empty: expected at least one symbol to translate")
        for pos, c in enumerate(text):
            if c not in known:
                raise ValueError(f"{where(i)} ({text!r}): character {c!r} at position {pos} is not in "
                                 f"the model's vocabulary ({''.join(vocab.symbols)!r})")
        if len(text) > max_len:
            raise ValueError(f"{where(i)} has {len(text)} symbols: longer than the model's "
                             f"max_len={max_len} (the longest source it was built for)")
        out.append(vocab.encode(text))
    return out


def translate_texts(model, vocab, texts, beam_size: int = 1, length_penalty: float = 0.6,
                    max_len: int | None = None, batch_size: int = 128, return_scores: bool = False,
                    where: Callable = None):
    """Translate strings: one output string per text (see translate_ids and encode_texts)."""
    ids = encode_texts(vocab, texts, model.config.max_len, where)
    hyps, scores = translate_ids(model, ids, max_len=max_len, beam_size=beam_size,
                                 length_penalty=length_penalty, batch_size=batch_size,
                                 return_scores=True, bos_id=vocab.BOS, eos_id=vocab.EOS)
    outs = [vocab.decode(h) for h in hyps]
    return (outs, scores) if return_scores else outs


def load_seq2seq(checkpoint, dtype: str | None = None):
    """(model in eval mode, vocab) from a checkpoint of `npgpt seq2seq train`: the file or its
    run folder. Any other checkpoint (a GPT's, say) raises ValueError saying what it holds."""
    from .data import Seq2SeqVocab

    ck = _load_checkpoint(checkpoint)
    if ck.meta.get("model") != "Transformer" or "vocab" not in ck.meta:
        what = (f"a {ck.meta.get('model')!r} model" if ck.meta.get("model") != "Transformer"
                else "a Transformer without a seq2seq vocabulary")
        hint = " (saved by `npgpt train`?)" if ck.meta.get("model") == "GPT" else ""
        raise ValueError(f"checkpoint {str(ck.path)!r} is not a seq2seq checkpoint: it holds {what}"
                         f"{hint}; expected one saved by `npgpt seq2seq train`")
    try:
        vocab = Seq2SeqVocab.from_dict(ck.meta["vocab"])
    except ValueError as e:
        raise ValueError(f"checkpoint {str(ck.path)!r}: its vocabulary is not valid: {e}") from None
    cfg = ck.config
    if not vocab.size == cfg.src_vocab_size == cfg.tgt_vocab_size:
        raise ValueError(f"checkpoint {str(ck.path)!r}: its vocabulary has {vocab.size} ids but the "
                         f"model {cfg.src_vocab_size} source / {cfg.tgt_vocab_size} target ids: "
                         f"expected them to belong together")
    model = ck.build_model(dtype=dtype)
    model.eval()
    return model, vocab


def _load_checkpoint(checkpoint):
    path = Path(checkpoint)
    if path.is_dir():                     # a run's folder: its checkpoint
        path = path / CHECKPOINT_NAME
    return ckpt_io.load(path)


# --------------------------------------------------------------------------------------------
# The run (`npgpt seq2seq train`)
# --------------------------------------------------------------------------------------------

@dataclass
class Seq2SeqResult(TrainResult):
    exact_match: dict = field(default_factory=dict)   # {step: greedy held-out exact match}
    final: Evaluation | None = None                    # the last step's evaluation


def train_seq2seq(cfg: Seq2SeqTrainConfig, resume: bool = False, progress: bool | None = True,
                  on_step: Callable | None = None, print_fn: Callable = print) -> Seq2SeqResult:
    """Train an encoder-decoder Transformer as cfg says; with resume, continue the checkpoint
    in cfg.out. Prints the data, the model, evaluations, the final held-out exact match and a
    few example translations through print_fn."""
    from . import kernels
    from .models.transformer import Transformer
    from .optim import AdamW
    from .train import Trainer

    if cfg.backend is not None:
        kernels.use_backend(cfg.backend)
    out = Path(cfg.out)
    saved = ckpt_io.load(out / CHECKPOINT_NAME) if resume else None
    if saved is None and (out / CHECKPOINT_NAME).exists():
        raise FileExistsError(f"{str(out / CHECKPOINT_NAME)!r} exists: pass --resume to continue "
                              f"that run, or another --out (nothing was overwritten)")
    data = load_data(cfg)
    if saved is not None and saved.meta.get("data", {}).get("sha256") != data.sha256:
        raise ValueError(f"--resume: {data.source} is not the data the run in {str(out)!r} was "
                         f"trained on (its SHA-256 differs): resume with the same data")
    seq_len = cfg.seq_len or fitted_seq_len(data.train + data.test)
    for split, pairs in (("train", data.train), ("test", data.test)):
        check_pairs(pairs, data.vocab.size, seq_len, where=lambda i, s=split: data.where(s, i))
    mcfg = cfg.model_config(data.vocab.size, seq_len)
    model = Transformer(mcfg, seed=cfg.seed)
    opt = AdamW(model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
                weight_decay=cfg.weight_decay)
    history = {}                          # {str(step): exact match}: in every checkpoint
    meta = {"seq2seq": dataclasses.asdict(cfg), "vocab": data.vocab.to_dict(),
            "data": {"source": data.source, "sha256": data.sha256, "n_train": len(data.train),
                     "n_test": len(data.test)},
            "backend": kernels.current_backend(), "exact_match": history}
    last = {}                             # the latest Evaluation and its step

    def eval_fn(m):
        last["eval"] = evaluate(m, data.test)
        return validation_loss(m, data.test, data.vocab)

    trainer = Trainer(model, opt, batch_fn(data.train, data.vocab, cfg.batch_size, seq_len),
                      eval_fn=eval_fn, schedule=cfg.schedule_fn(), max_iters=cfg.max_iters,
                      grad_clip=cfg.grad_clip, eval_interval=cfg.eval_interval,
                      checkpoint_interval=cfg.checkpoint_interval, out_dir=out, meta=meta,
                      seed=cfg.seed, progress=progress, tokens_fn=_tokens)
    if saved is not None:
        trainer.resume(saved)
        history.update(saved.meta.get("exact_match", {}))
        print_fn(f"resuming {str(out)!r} at step {trainer.step} of {cfg.max_iters}")
    eval_log = RunLog(out / EVAL_LOG_NAME, cfg.max_iters, trainer.step, progress=False)

    def after_step(tr, rec):
        if "val_loss" in rec:
            ev = last["eval"]
            last["step"] = rec["step"]
            history[str(rec["step"])] = ev.exact_match
            eval_log.note({"step": rec["step"], "val_loss": rec["val_loss"],
                           "exact_match": ev.exact_match, "correct": ev.correct, "n": ev.n})
            _write_above_bar(f"step {rec['step']}: held-out exact match {ev.exact_match:.2%} "
                             f"({ev.correct}/{ev.n}, greedy)")
        if on_step is not None:
            on_step(tr, rec)

    trainer.on_step = after_step
    print_fn(f"data: {data.source}: {len(data.train):,} train / {len(data.test):,} held-out pairs, "
             f"vocabulary {data.vocab.size} ({len(data.vocab.symbols)} symbols + 4 specials)")
    print_fn(f"model: Transformer {mcfg.n_encoder_layers}+{mcfg.n_decoder_layers} layers, "
             f"{mcfg.n_head} heads, d_model {mcfg.d_model}, d_ff {mcfg.d_ff}, max_len {mcfg.max_len}, "
             f"{'pre' if mcfg.norm_first else 'post'}-LN, {model.num_parameters():,} parameters, "
             f"{mcfg.dtype}, backend {kernels.current_backend()}")
    try:
        result = trainer.run()
    finally:
        eval_log.close()
    final = last["eval"] if last.get("step") == result.step else None
    if final is None and not result.interrupted and result.step > 0:
        final = evaluate(model, data.test)        # a resume that had nothing left to do
    res = Seq2SeqResult(**vars(result), exact_match={int(k): v for k, v in history.items()}, final=final)
    _report(cfg, res, model, data, print_fn)
    return res


def _write_above_bar(text: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(text)


def _report(cfg, res: Seq2SeqResult, model, data: Seq2SeqData, print_fn) -> None:
    if res.interrupted:
        print_fn(f"interrupted at step {res.step}: checkpoint saved to {res.checkpoint}; "
                 f"continue with: npgpt seq2seq train --resume --out {cfg.out}")
        return
    tail = res.losses[-50:]
    val = res.val_losses.get(res.step)
    if tail:
        print_fn(f"done: step {res.step}, train loss {np.mean(tail):.4f} (mean of the last "
                 f"{len(tail)} steps)" + (f", val loss {val:.4f}" if val is not None else "")
                 + f", {res.elapsed:.1f} s of training; checkpoint {res.checkpoint}")
    ev = res.final
    if ev is None:
        return
    print_fn(f"held-out exact match: {ev.exact_match:.2%} ({ev.correct}/{ev.n} sources, greedy decoding)")
    if cfg.examples:
        print_fn("examples (source -> output):")
        for (s, t), h in list(zip(data.test, ev.hypotheses))[:cfg.examples]:
            ok = "ok" if h == list(t) else f"wrong, expected {data.vocab.decode(t)}"
            print_fn(f"  {data.vocab.decode(s)} -> {data.vocab.decode(h) or '(nothing)'}   ({ok})")


# --------------------------------------------------------------------------------------------
# The command line: `npgpt seq2seq train | translate`
# --------------------------------------------------------------------------------------------

# flag -> (type, help); the defaults are Seq2SeqTrainConfig's, shown by --help
_TRAIN_FLAGS = {
    "task": (str, "a built-in task: copy, reverse, sort or addition (default: reverse, unless --data)"),
    "data": (str, "a UTF-8 file of 'source<TAB>target' lines to train on, instead of a task"),
    "n_train": (int, "task: training pairs"),
    "n_test": (int, "task: held-out pairs"),
    "min_len": (int, "task copy/reverse/sort: fewest digits of a source"),
    "max_len": (int, "task copy/reverse/sort: most digits of a source"),
    "n_digits": (int, "task addition: most digits of each operand"),
    "test_fraction": (float, "--data: the share of the lines held out for evaluation"),
    "seq_len": (int, "the model's max_len: longest source, and longest target + 1"),
    "d_model": (int, "width of every layer"),
    "n_head": (int, "attention heads"),
    "layers": (int, "encoder layers and decoder layers (each)"),
    "encoder_layers": (int, "encoder layers"),
    "decoder_layers": (int, "decoder layers"),
    "d_ff": (int, "hidden width of the feed-forward networks"),
    "dropout": (float, "dropout probability"),
    "norm_first": (bool, "pre-LN layers; --no-norm-first: the paper's post-LN"),
    "share_embeddings": (bool, "one embedding table for source, target and output"),
    "label_smoothing": (float, "epsilon of the label-smoothed cross-entropy"),
    "dtype": (str, "float32 or float64"),
    "max_iters": (int, "optimisation steps"),
    "batch_size": (int, "pairs per step"),
    "schedule": (str, "learning-rate schedule: noam (the paper's), cosine or constant"),
    "lr": (float, "peak learning rate (every schedule, noam included)"),
    "min_lr": (float, "cosine: learning rate at the last step"),
    "warmup": (int, "steps of linear warmup"),
    "beta1": (float, "AdamW beta1"),
    "beta2": (float, "AdamW beta2"),
    "eps": (float, "AdamW epsilon"),
    "weight_decay": (float, "AdamW weight decay (matrices only)"),
    "grad_clip": (float, "max global gradient norm (0: no clipping)"),
    "eval_interval": (int, "steps between evaluations (val loss, greedy exact match)"),
    "checkpoint_interval": (int, "steps between checkpoints"),
    "seed": (int, "seed of the task data, the split, the initialisation, batches and dropout"),
    "out": (str, "folder for ckpt.safetensors, log.jsonl and eval.jsonl"),
    "backend": (str, "kernel backend: numpy or numba (default: NPGPT_BACKEND or the fastest)"),
    "examples": (int, "held-out translations to print at the end"),
}


def add_seq2seq(sub) -> None:
    """Declare `npgpt seq2seq` with its subcommands `train` and `translate`."""
    p = sub.add_parser("seq2seq", help="train the encoder-decoder Transformer on a seq2seq task, translate",
                       description="Sequence to sequence with the encoder-decoder Transformer: train "
                                   "on a built-in task (copy, reverse, sort, addition) or on parallel "
                                   "text, and translate with greedy decoding or beam search.")
    s = p.add_subparsers(dest="seq2seq_command", metavar="COMMAND")
    s.required = True
    _add_train(s)
    _add_translate(s)


def _add_train(sub) -> None:
    from .settings import add_flags, add_resume_flag

    p = sub.add_parser("train", help="train on a task or a TSV file, report held-out exact match",
                       description="Train an encoder-decoder Transformer with AdamW (betas 0.9, 0.98, "
                                   "eps 1e-9), logging every step to OUT/log.jsonl, evaluations "
                                   "(val loss, greedy exact match on the held-out pairs) to "
                                   "OUT/eval.jsonl, and checkpointing to OUT/ckpt.safetensors. "
                                   "Ctrl-C saves a checkpoint; --resume continues it exactly.")
    shown = {"seq_len": "fitted to the data", "d_ff": "4 * d-model", "encoder_layers": "--layers",
             "decoder_layers": "--layers"}
    add_flags(p, _TRAIN_FLAGS, Seq2SeqTrainConfig, shown, unset="None")
    add_resume_flag(p, "--max-iters, intervals, --backend, --examples")
    p.set_defaults(run=run_train)


def run_train(args) -> int:
    from .train import run_command

    flags = {k: v for k, v in vars(args).items() if k in _TRAIN_FLAGS}
    return run_command("npgpt seq2seq train", flags, args.resume, Seq2SeqTrainConfig, resume_config,
                       train_seq2seq)


def _add_translate(sub) -> None:
    p = sub.add_parser("translate", help="translate sources with a trained seq2seq checkpoint",
                       description="Translate each source with a checkpoint of `npgpt seq2seq train` "
                                   "(greedy decoding, or beam search with --beam-size > 1) and print "
                                   "one output per line.")
    p.add_argument("--checkpoint", default=DEFAULT_OUT,
                   help=f"a seq2seq checkpoint, or a run folder holding ckpt.safetensors "
                        f"(default: {DEFAULT_OUT})")
    p.add_argument("--input", action="append", default=None, metavar="TEXT",
                   help="a source to translate (repeat for more)")
    p.add_argument("--input-file", default=None, metavar="FILE",
                   help="a UTF-8 file with one source per line")
    p.add_argument("--beam-size", type=int, default=1, help="beams per source; 1 is greedy (default: 1)")
    p.add_argument("--length-penalty", type=float, default=0.6,
                   help="GNMT length penalty alpha of beam search; 0: plain log-probability (default: 0.6)")
    p.add_argument("--max-len", type=int, default=None,
                   help="most output tokens, end-of-sequence included (default: the model's max_len)")
    p.add_argument("--batch-size", type=int, default=128, help="sources decoded together (default: 128)")
    p.add_argument("--scores", action="store_true",
                   help="print each output's score (length-normalised log-probability) after a tab")
    p.add_argument("--dtype", choices=("float32", "float64"), default=None,
                   help="compute in this dtype (default: the checkpoint's)")
    p.add_argument("--backend", default=None, help="kernel backend: numpy or numba")
    p.set_defaults(run=run_translate)


def read_sources(path) -> tuple[list[str], list[int]]:
    """The lines of a UTF-8 file (without line ends) and their line numbers; an empty line in
    the middle is an error naming it (the final line end is not a line)."""
    from .data import load_text

    lines = [line.removesuffix("\r") for line in load_text(path).split("\n")]
    if lines and lines[-1] == "":
        lines.pop()
    for n, line in enumerate(lines, start=1):
        if not line:
            raise ValueError(f"{str(path)!r} line {n} is empty: expected one source per line")
    return lines, list(range(1, len(lines) + 1))


def run_translate(args) -> int:
    from . import kernels

    try:
        if (args.input is None) == (args.input_file is None):
            raise ValueError("expected the sources as --input TEXT (repeatable) or --input-file FILE, "
                             "exactly one of the two")
        for name in ("beam_size", "batch_size"):
            if getattr(args, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} {getattr(args, name)}: "
                                 f"expected an integer >= 1")
        if not (math.isfinite(args.length_penalty) and args.length_penalty >= 0):
            raise ValueError(f"--length-penalty {args.length_penalty}: expected a number >= 0")
        if args.backend is not None:
            kernels.use_backend(args.backend)
        model, vocab = load_seq2seq(args.checkpoint, dtype=args.dtype)
        limit = model.config.max_len
        if args.max_len is not None and not 1 <= args.max_len <= limit:
            raise ValueError(f"--max-len {args.max_len}: expected an integer in [1, {limit}] "
                             f"(the model's max_len: the positions its decoder covers)")
        if args.input_file is not None:
            texts, linenos = read_sources(args.input_file)
            where = lambda i: f"{args.input_file!r} line {linenos[i]}"      # noqa: E731
        else:
            texts = args.input
            where = (lambda i: "--input") if len(texts) == 1 else (lambda i: f"--input {i + 1}")
        outs, scores = translate_texts(model, vocab, texts, beam_size=args.beam_size,
                                       length_penalty=args.length_penalty, max_len=args.max_len,
                                       batch_size=args.batch_size, return_scores=True, where=where)
    except (ValueError, TypeError, OSError, RuntimeError) as e:
        print(f"npgpt seq2seq translate: error: {e}", file=sys.stderr)
        return 2
    for text, score in zip(outs, scores):
        print(f"{text}\t{score:.4f}" if args.scores else text)
    return 0
