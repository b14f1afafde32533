"""What `npgpt trace` traces: its settings (TraceConfig, one flag per field, as `npgpt train`'s)
and the model, batch and optimizer they describe.

    cfg = TraceConfig(preset="gradcheck", n_embd=16)     # or model="transformer", checkpoint=...
    trace = run(cfg)                                     # one traced step (npgpt.trace.step)
    trace, subject = traced(cfg)                         # and the model as the step left it

A new GPT is made as `npgpt train` makes it (the preset, the size flags, a character tokenizer
of the text) and reads a batch of random windows of the text; a new Transformer has the same
sizes (d_model = n_embd, n_layer encoder and n_layer decoder layers, d_ff = 4 n_embd, max_len =
block_size) and reads a batch of the reverse task on random symbol strings.

A checkpoint of `npgpt train` or `npgpt seq2seq train` is traced as the run's next step, the one
`--resume` takes: the run's model, tokenizer or vocabulary, AdamW state and dropout generators;
its own data, rebuilt from its settings as the run builds it (pretrain: its text, which must
have the SHA-256 the run recorded, encoded by its tokenizer and split; seq2seq_data: its task or
TSV file), drawn by its saved batch sampler with its batch size and block size; the learning
rate its schedule gives that step and its grad_clip. So the loss is the one the run logs for
that step, and the weights after the traced AdamW step are those it saves (same backend). A flag
given (--batch-size, --block-size, --lr, --grad-clip, --dropout) replaces the run's.
Other checkpoints (a GPT-2 folder; one of `npgpt finetune`, whose task and adapters are not
rebuilt; a Transformer that records no run) bring the model and, when they hold it, AdamW's state
with its last learning rate; their batch is drawn as for a new model, with --seed.

Why one file: TraceConfig's flags and the Subject they build are read against each other: each
flag sets a new model's part or replaces what a run's checkpoint brings (sizes, data, learning
rate, clip, dropout). The run's own pieces (pretrain's load_corpus and lm_batch_fn, seq2seq_data's
load_data and batch_fn, the schedules) are called here, not copied; what is left is a few lines each.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import checkpoint as ckpt_io
from .. import kernels
from ..config import GPT_PRESETS, GPTConfig, TransformerConfig
from ..data import DIGITS, Seq2SeqVocab, default_corpus, get_batch, load_text, pad_batch, split
from ..finetune.init import load_init
from ..models.gpt import GPT
from ..models.transformer import Transformer
from ..optim import AdamW, WarmupCosine
from ..settings import BACKENDS, DTYPES, Checker, setting
from ..tokenizers import CharTokenizer, tokenizer_from_dict
from ..trace.compare import compare_with_torch
from ..trace.step import Trace, trace_step
from .pretrain import PretrainConfig, lm_batch_fn, load_corpus
from .seq2seq import Seq2SeqConfig
from .seq2seq_data import batch_fn, load_data

MODELS = ("gpt", "transformer")
PRESET = "gradcheck"       # the preset of a new model when --preset is not given
BATCH_SIZE = 2             # sequences in a batch when --batch-size is not given (and no run says)
GRAD_CLIP = 1.0            # the max gradient norm when --grad-clip is not given (and no run says)
_PRESET = "the preset's"
TEXT_PREFIX = 200_000      # characters of the text a batch is drawn from (encoding all of it is slow)
_OPT = {"lr": 2e-3, "beta1": 0.9, "beta2": 0.99, "weight_decay": 0.1}     # for a new optimizer
RUNS = {"train": PretrainConfig, "seq2seq": Seq2SeqConfig}   # a run's checkpoint meta key -> its settings


@dataclass(frozen=True)
class TraceConfig:
    """Everything `npgpt trace` takes; each field is the flag of the same name (--n-embd)."""

    model: str | None = setting(None, "gpt, or transformer (the encoder-decoder on the reverse task)",
                                choices=MODELS, shown="gpt, or the checkpoint's")
    checkpoint: str | None = setting(None, "an npgpt checkpoint, a run folder holding ckpt.safetensors, "
                                           "or a GPT-2 folder: trace its next step", metavar="PATH",
                                     shown="a new model")
    data: str | None = setting(None, "gpt: a UTF-8 text file to take the batch from (with a checkpoint "
                                     "of `npgpt train`: a copy of the run's text)", metavar="FILE",
                               shown="the built-in corpus, or the run's")
    preset: str | None = setting(None, "model preset of a new model (GPTConfig.preset); the size flags "
                                       "below override it", choices=tuple(sorted(GPT_PRESETS)), shown=PRESET)
    n_layer: int | None = setting(None, "Transformer blocks (transformer: encoder and decoder layers each)",
                                  shown=_PRESET)
    n_head: int | None = setting(None, "attention heads per block", shown=_PRESET)
    n_embd: int | None = setting(None, "width of the residual stream (transformer: d_model)", shown=_PRESET)
    block_size: int | None = setting(None, "tokens per sequence (transformer: max_len)", shown=_PRESET)
    dropout: float | None = setting(None, "dropout probability", shown="the preset's or the checkpoint's")
    dtype: str | None = setting(None, "the parameters' and activations' dtype", choices=DTYPES,
                                shown="float32, or the checkpoint's")
    batch_size: int | None = setting(None, "sequences in the batch",
                                     shown=f"{BATCH_SIZE}, or the run's")
    lr: float | None = setting(None, "AdamW learning rate",
                               shown="2e-3, or the run's schedule's for its next step, or the checkpoint's")
    beta1: float | None = setting(None, "AdamW beta1", shown="0.9, or the checkpoint's")
    beta2: float | None = setting(None, "AdamW beta2", shown="0.99, or the checkpoint's")
    weight_decay: float | None = setting(None, "AdamW weight decay (matrices only)",
                                         shown="0.1, or the checkpoint's")
    grad_clip: float | None = setting(None, "max global gradient norm (0: no clipping)",
                                      shown=f"{GRAD_CLIP}, or the run's")
    seed: int = setting(0, "seed of the initialisation, the batch and dropout (a run's checkpoint: "
                           "the run's batch and dropout)")
    backend: str | None = setting(None, "kernel backend", choices=BACKENDS, shown="NPGPT_BACKEND or the fastest")
    depth: int | None = setting(None, "tables: show calls nested at most this deep (0: the model's own)",
                                shown="all")
    html: str | None = setting(None, "also write the trace as one self-contained HTML page", metavar="FILE",
                               shown="none")
    json: str | None = setting(None, "write the trace as JSON to FILE ('-': to stdout, instead of the "
                                     "tables)", metavar="FILE", shown="none")
    compare: str | None = setting(None, "run the same step in PyTorch; show every tensor's largest "
                                        "difference", choices=("torch",), shown="none")

    def __post_init__(self):
        check = Checker(self)
        check.integers("n_layer", "n_head", "n_embd", "block_size", unset=_PRESET)
        check.integers("batch_size", unset=f"{BATCH_SIZE}, or the run's")
        check.integers("seed", low=0)
        check.integers("depth", low=0, unset="all")
        for name in ("lr", "weight_decay", "grad_clip"):
            if getattr(self, name) is not None:
                check.numbers(name)
        check.fractions("beta1", "beta2", "dropout", unset="the default")
        check.choices()
        if self.checkpoint is not None:
            given = [f"--{k.replace('_', '-')}" for k in ("n_layer", "n_head", "n_embd") if getattr(self, k)]
            if given:
                check.fail("checkpoint", f"no size flags with it (the checkpoint has its sizes): drop {given}")
            if self.preset is not None:
                check.fail("checkpoint", f"no --preset with it (the checkpoint has its sizes): drop "
                                         f"--preset {self.preset}")
        if self.model == "transformer" and self.data is not None:
            check.fail("data", "no --data with --model transformer (--data is a GPT's text; the "
                               "Transformer reads the reverse task): drop --data")


@dataclass
class Subject:
    """The model, the batch and the optimizer of a trace, and how to describe them."""
    model: object
    batch: tuple
    optimizer: AdamW
    meta: dict
    grad_clip: float = GRAD_CLIP     # the max gradient norm of the step (0: no clipping)


def run(cfg: TraceConfig) -> Trace:
    """Trace one training step as cfg says (on cfg.backend); with compare="torch", compare it
    with its PyTorch twin. Dropout is set to 0 for a comparison (torch draws other masks)."""
    return traced(cfg)[0]


def traced(cfg: TraceConfig) -> tuple[Trace, Subject]:
    """run(cfg)'s trace, and its Subject: the model and the optimizer as the step left them (the
    weights after the traced AdamW step: for a run's checkpoint, those of the run's next one)."""
    with kernels.backend(cfg.backend or kernels.current_backend()):
        notes = []
        if cfg.compare == "torch":
            cfg = dataclasses.replace(cfg, dropout=0.0)
            notes.append("dropout set to 0 for --compare torch (PyTorch draws other masks)")
        subject = prepare(cfg)
        subject.meta["notes"] = notes + subject.meta.get("notes", [])
        subject.meta["backend"] = kernels.current_backend()
        weights, opt_state = subject.model.state_dict(), subject.optimizer.state_dict()
        trace = trace_step(subject.model, subject.batch, subject.optimizer, grad_clip=subject.grad_clip,
                           keep=cfg.compare is not None, meta=subject.meta)
        if cfg.compare == "torch":
            compare_with_torch(trace, subject.model, subject.batch, subject.optimizer, weights,
                               opt_state, subject.grad_clip)
    return trace, subject


def prepare(cfg: TraceConfig) -> Subject:
    """The Subject of cfg: a new model, or the checkpoint's (see the module docstring)."""
    saved = None
    if cfg.checkpoint is not None:
        saved = _read_checkpoint(cfg.checkpoint)
    kind = cfg.model or ("transformer" if saved is not None and saved.meta.get("model") == "Transformer" else "gpt")
    if saved is not None and (kind == "transformer") != (saved.meta.get("model") == "Transformer"):
        raise ValueError(f"--model {kind}, but --checkpoint {cfg.checkpoint!r} holds a "
                         f"{saved.meta.get('model')!r} model: expected them to agree (or drop --model)")
    if cfg.checkpoint is not None and saved is None and kind == "transformer":
        raise ValueError(f"--model transformer, but --checkpoint {cfg.checkpoint!r} is not an npgpt "
                         f"checkpoint (a GPT-2 folder holds a GPT): expected one of `npgpt seq2seq train`")
    if kind == "transformer" and cfg.data is not None:
        raise ValueError(f"--data {cfg.data!r} with --checkpoint {cfg.checkpoint!r}, a Transformer: --data "
                         f"is a GPT's text, the Transformer reads its run's pairs (or the reverse "
                         f"task): drop --data")
    subject = _transformer(cfg, saved) if kind == "transformer" else _gpt(cfg, saved)
    _configure_optimizer(cfg, subject, saved)
    subject.meta["dtype"] = str(subject.model.config.dtype)
    if _run_settings(saved) is not None:
        _restore_run_state(subject, saved)
    return subject


def _run_settings(saved):
    """The settings (RUNS) of the `npgpt train` or `npgpt seq2seq train` run that saved the
    checkpoint, read back as the run reads them on --resume; None for any other checkpoint."""
    for section, cls in RUNS.items():
        if saved is not None and isinstance(saved.meta.get(section), dict):
            names = {f.name for f in dataclasses.fields(cls)}
            # JSON has no tuples: a tuple setting comes back as a list
            return cls(**{k: tuple(v) if isinstance(v, list) else v
                          for k, v in saved.meta[section].items() if k in names})
    return None


def _restore_run_state(subject: Subject, saved) -> None:
    """The dropout generators' states the run saved (the Trainer's checkpoint holds them), so the
    traced forward draws the masks the run's next step draws; a note if the backend differs."""
    model, notes, backend = subject.model, subject.meta.setdefault("notes", []), kernels.current_backend()
    if saved.meta.get("backend") not in (None, backend):
        notes.append(f"the run used backend {saved.meta['backend']!r}, this trace {backend!r}: rounding "
                     f"differs (--backend {saved.meta['backend']} repeats the run's numbers)")
    if not model.config.dropout:
        return                                     # no masks drawn
    try:
        ckpt_io.set_rng_states(model, saved.meta.get("rng", {}), f"--checkpoint {str(saved.path)!r}")
    except ValueError as e:
        notes.append(f"dropout generators not restored ({e}): the masks are not the run's")
        return
    ours, theirs = model.config.dropout, saved.meta["config"].get("dropout")
    notes.append("dropout generators restored from the checkpoint: the masks are the run's" if ours == theirs
                 else f"--dropout {ours} (the run's is {theirs}): the masks are not the run's")


def _read_checkpoint(path):
    """An npgpt checkpoint (a file, or a run folder's ckpt.safetensors); None for a GPT-2 folder."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"--checkpoint {str(path)!r} does not exist: expected an npgpt checkpoint, "
                                f"a run folder holding ckpt.safetensors, or a GPT-2 folder")
    if p.is_dir():
        if not (p / "ckpt.safetensors").is_file():
            return None                            # a GPT-2 folder, or an error load_init explains
        p = p / "ckpt.safetensors"
    return ckpt_io.load(p)


def _gpt(cfg: TraceConfig, saved) -> Subject:
    """A GPT (new, or the checkpoint's) and its batch: the run's next one for a checkpoint of
    `npgpt train`, else random windows of the text (the module docstring)."""
    run_cfg = _run_settings(saved)
    if run_cfg is not None:
        text, source = _run_text(cfg, saved, run_cfg)
    elif cfg.data is None:
        text, source = default_corpus(), "the built-in corpus"
    else:
        text, source = load_text(cfg.data), repr(cfg.data)
    if cfg.checkpoint is not None:
        init = load_init(cfg.checkpoint, dtype=cfg.dtype, dropout=cfg.dropout, seed=cfg.seed,
                         where=f"--checkpoint {str(cfg.checkpoint)!r}")
        model, tok, what = init.model, init.tokenizer, init.source
    else:
        tok = CharTokenizer.from_text(text)
        sizes = {k: getattr(cfg, k) for k in ("n_layer", "n_head", "n_embd", "block_size", "dropout")
                 if getattr(cfg, k) is not None}
        preset = cfg.preset or PRESET
        model = GPT(GPTConfig.preset(preset, vocab_size=tok.vocab_size, dtype=cfg.dtype or "float32",
                                     **sizes), seed=cfg.seed)
        what = f"a new GPT of preset {preset!r} (seed {cfg.seed})"
    mc, tokens = model.config, f"{source} ({type(tok).__name__})"
    if run_cfg is not None:
        (x, y), which = _lm_run_batch(cfg, saved, run_cfg, tok.encode(text), mc)
        data = f"{x.shape[0]} x {x.shape[1]} tokens of {tokens}, {which}"
    else:
        x, y = _windows(cfg, text, source, tok, mc)
        data = f"{x.shape[0]} x {x.shape[1]} tokens, random windows of {tokens}"
    meta = {"description": f"GPT, {mc.n_layer} layers, {mc.n_head} heads, {mc.n_embd} wide, context "
                           f"{mc.block_size}, vocabulary {mc.vocab_size}: {what}",
            "data": f"{data}; the targets are the next tokens{_no_run(saved)}",
            "inputs": ["idx", "targets"]}
    return Subject(model, (x, y), None, meta)


def _run_text(cfg: TraceConfig, saved, run_cfg: PretrainConfig) -> tuple[str, str]:
    """(the text, how messages name it) of the `npgpt train` run that saved the checkpoint:
    pretrain.load_corpus of its settings, or of --data, which must hold the same text (the
    SHA-256 the run recorded, as `npgpt train --resume` checks)."""
    where = f"--checkpoint {str(cfg.checkpoint)!r}"
    try:
        text, source = load_corpus(dataclasses.replace(run_cfg, data=cfg.data or run_cfg.data))
    except (OSError, ValueError) as e:
        if cfg.data is not None or run_cfg.data is None:
            raise
        raise ValueError(f"{where} was trained on --data {run_cfg.data!r}, which cannot be read ({e}): "
                         f"expected the run's text there (or pass --data, a copy of it)") from None
    recorded = saved.meta.get("data", {}).get("sha256")
    if recorded is not None and recorded != hashlib.sha256(text.encode("utf-8")).hexdigest():
        given = f"--data {cfg.data!r}" if cfg.data is not None else source
        raise ValueError(f"{given} is not the text {where} was trained on (its SHA-256 differs): "
                         f"expected the run's own text, to draw its next batch from")
    return text, source


def _lm_run_batch(cfg: TraceConfig, saved, run_cfg: PretrainConfig, ids, mc: GPTConfig):
    """((x, y), in words) of the `npgpt train` run that saved the checkpoint: its training
    tokens (ids split as the run splits them), windows drawn by its batch sampler's saved state
    (pretrain.lm_batch_fn). With the run's batch size and block size (the defaults) this is the
    batch the run trains on next."""
    train_ids, _ = split(np.asarray(ids, dtype=np.int64), run_cfg.val_fraction)
    rng = np.random.default_rng(cfg.seed)
    if "batch_rng" in saved.meta:
        rng.bit_generator.state = saved.meta["batch_rng"]
    B, T = cfg.batch_size or run_cfg.batch_size, min(cfg.block_size or mc.block_size, mc.block_size)
    batch = lm_batch_fn(train_ids, B, T)(rng)
    theirs = (run_cfg.batch_size, mc.block_size)
    which = ("the run's next batch" if (B, T) == theirs and "batch_rng" in saved.meta
             else f"drawn by the run's batch sampler (its next batch is {theirs[0]} x {theirs[1]})")
    return batch, which


def _windows(cfg: TraceConfig, text: str, source: str, tok, mc: GPTConfig):
    """(x, y): random windows of the text's first TEXT_PREFIX characters, drawn with --seed."""
    T = min(cfg.block_size or mc.block_size, mc.block_size)
    try:
        ids = np.asarray(tok.encode(text[:TEXT_PREFIX]), dtype=np.int64)
    except (ValueError, KeyError) as e:
        raise ValueError(f"the checkpoint's tokenizer cannot encode {source} ({e}): pass --data, a "
                         f"text of the checkpoint's characters") from None
    return get_batch(ids, cfg.batch_size or BATCH_SIZE, T, np.random.default_rng(cfg.seed), source)


def _no_run(saved) -> str:
    """Why a checkpoint's batch is not its run's next one (words for the meta), or ''."""
    if saved is None or _run_settings(saved) is not None:
        return ""
    if isinstance(saved.meta.get("finetune"), dict):
        return " (a checkpoint of `npgpt finetune`: its task and batches are not rebuilt)"
    return " (the checkpoint records no `npgpt train` run to take data from)"


def _transformer_config(cfg: TraceConfig, vocab_size: int) -> TransformerConfig:
    """A new Transformer's config: the sizes of the preset and the flags (module docstring)."""
    preset = {**{f.name: f.default for f in dataclasses.fields(GPTConfig)}, **GPT_PRESETS[cfg.preset or PRESET]}
    size = lambda name: getattr(cfg, name) if getattr(cfg, name) is not None else preset[name]   # noqa: E731
    return TransformerConfig(src_vocab_size=vocab_size, tgt_vocab_size=vocab_size, d_model=size("n_embd"),
                             n_head=size("n_head"), n_encoder_layers=size("n_layer"),
                             n_decoder_layers=size("n_layer"), d_ff=4 * size("n_embd"),
                             max_len=size("block_size"), dropout=size("dropout"),
                             dtype=cfg.dtype or "float32")


def _transformer(cfg: TraceConfig, saved) -> Subject:
    """A Transformer (new, or the checkpoint's) and its batch: the run's next one for a checkpoint
    of `npgpt seq2seq train`, else one of the reverse task (the module docstring)."""
    if saved is not None:
        changes = {k: getattr(cfg, k) for k in ("dtype", "dropout") if getattr(cfg, k) is not None}
        tc = TransformerConfig.from_dict(saved.meta["config"]).replace(**changes)
        model = Transformer(tc, seed=cfg.seed)
        model.load_state_dict(saved.model_state)
        what = f"npgpt checkpoint {str(saved.path)!r} (step {saved.meta.get('step')})"
    else:
        tc = _transformer_config(cfg, Seq2SeqVocab(DIGITS).size)
        model = Transformer(tc, seed=cfg.seed)
        what = f"a new Transformer of the sizes of preset {cfg.preset or PRESET!r} (seed {cfg.seed})"
    run_cfg = _run_settings(saved)
    if run_cfg is not None:
        batch, data = _run_batch(cfg, saved, run_cfg, tc)
    else:
        batch, data = _reverse_batch(cfg, saved, tc)
    V = min(tc.src_vocab_size, tc.tgt_vocab_size)
    meta = {"description": f"Transformer, {tc.n_encoder_layers}+{tc.n_decoder_layers} layers, {tc.n_head} "
                           f"heads, d_model {tc.d_model}, d_ff {tc.d_ff}, "
                           f"{'pre' if tc.norm_first else 'post'}-LN, vocabulary {V}: {what}",
            "data": f"{data}, padded to {batch.src.shape[1]} (source) and {batch.tgt_in.shape[1]} (target) "
                    f"positions",
            "inputs": list(batch._fields)}
    return Subject(model, tuple(batch), None, meta)


def _run_batch(cfg: TraceConfig, saved, run_cfg: Seq2SeqConfig, tc: TransformerConfig):
    """(the batch, in words) of the run of `npgpt seq2seq train` that saved the checkpoint: its
    own training pairs, rebuilt from its settings as the run builds them (npgpt.runs.seq2seq_data:
    npgpt.data's task generator, or its TSV file), drawn by its batch sampler's saved state. With
    the run's batch size (the default) this is the batch the run trains on next."""
    where = f"--checkpoint {str(cfg.checkpoint)!r}"
    try:
        data = load_data(run_cfg)
    except (OSError, ValueError) as e:
        if run_cfg.data is None:
            raise
        raise ValueError(f"{where} was trained on --data {run_cfg.data!r}, which cannot be read ({e}): "
                         f"expected the run's TSV file there, to draw the batch from") from None
    recorded = saved.meta.get("data", {}).get("sha256")
    if recorded is not None and recorded != data.sha256:
        raise ValueError(f"{where}: {data.source} is not the data the run trained on (its SHA-256 "
                         f"differs): expected the run's own file, to draw its batch from")
    rng = np.random.default_rng(cfg.seed)
    if "batch_rng" in saved.meta:
        rng.bit_generator.state = saved.meta["batch_rng"]
    B = cfg.batch_size or run_cfg.batch_size
    batch = batch_fn(data.train, data.vocab, B, tc.max_len)(rng)
    which = ("the run's next batch" if B == run_cfg.batch_size and "batch_rng" in saved.meta
             else f"drawn by the run's batch sampler (its next batch has {run_cfg.batch_size})")
    return batch, f"{batch.src.shape[0]} pairs of {data.source}, {which}"


def _reverse_batch(cfg: TraceConfig, saved, tc: TransformerConfig):
    """(a batch of the reverse task on random symbols of the model's vocabulary, in words): for a
    new Transformer, or a checkpoint that records no run to take the data from."""
    vocab = tokenizer_from_dict(saved.meta["vocab"]) if saved is not None and "vocab" in saved.meta else None
    V = min(tc.src_vocab_size, tc.tgt_vocab_size)
    specials = len(Seq2SeqVocab.SPECIALS)
    if V <= specials or tc.max_len < 3:
        raise ValueError(f"the Transformer has {V} token ids and max_len {tc.max_len}: expected more than "
                         f"{specials} ids and max_len >= 3 to make a reverse-task batch")
    vocab = vocab if isinstance(vocab, Seq2SeqVocab) else Seq2SeqVocab([chr(65 + i) for i in range(V - specials)])
    rng = np.random.default_rng(cfg.seed)
    L = tc.max_len - 1                              # a target and its end-of-sequence token fit
    pairs = []
    for _ in range(cfg.batch_size or BATCH_SIZE):
        src = rng.integers(specials, V, size=int(rng.integers(max(1, L // 2), L + 1))).tolist()
        pairs.append((src, src[::-1]))
    why = "" if saved is None else " (the checkpoint records no `npgpt seq2seq train` run to take data from)"
    return pad_batch(pairs, vocab, tc.max_len), (f"{len(pairs)} random sources of {L // 2}..{L} symbols "
                                                 f"and their reverses{why}")


def _configure_optimizer(cfg: TraceConfig, subject: Subject, saved) -> None:
    """AdamW over the model; with a checkpoint of the same model that holds AdamW's state, that
    state (the traced step is the run's next). The learning rate and the clip of a run's
    checkpoint are the run's for that step (_run_step); the flags given override them all."""
    model, notes = subject.model, subject.meta.setdefault("notes", [])
    opt = AdamW(model.parameters(), lr=_OPT["lr"], betas=(_OPT["beta1"], _OPT["beta2"]),
                weight_decay=_OPT["weight_decay"])
    ours = saved is not None and saved.meta.get("model") == type(model).__name__
    if ours and saved.optimizer_state is not None and saved.meta["optimizer"].get("type") == "AdamW":
        try:
            opt.load_state_dict(saved.optimizer_state)
            notes.append(f"AdamW state restored from the checkpoint: this is its step {opt.step_count + 1}")
        except (KeyError, ValueError) as e:
            notes.append(f"AdamW state not restored ({e}): a new AdamW")
    lr, subject.grad_clip = _run_step(cfg, saved, notes)
    for group in opt.param_groups:
        b1, b2 = group["betas"]
        group.update(lr=lr if lr is not None else group["lr"],
                     betas=(cfg.beta1 if cfg.beta1 is not None else b1, cfg.beta2 if cfg.beta2 is not None else b2),
                     weight_decay=cfg.weight_decay if cfg.weight_decay is not None else group["weight_decay"])
    subject.optimizer = opt


def _run_step(cfg: TraceConfig, saved, notes: list) -> tuple[float | None, float]:
    """(the learning rate, the max gradient norm) of the traced step: --lr and --grad-clip if
    given; for a run's checkpoint, what the run's schedule gives its next step (the Trainer sets
    optimizer.lr = schedule(step) before each update; the run settings' schedule_fn) and the
    run's grad_clip; else (lr None: the checkpoint's last, or a new AdamW's) and GRAD_CLIP."""
    run_cfg = _run_settings(saved)
    if run_cfg is None:
        return cfg.lr, GRAD_CLIP if cfg.grad_clip is None else cfg.grad_clip
    clip = run_cfg.grad_clip if cfg.grad_clip is None else cfg.grad_clip
    if cfg.lr is not None:
        return cfg.lr, clip
    schedule = run_cfg.schedule_fn()
    step = int(saved.meta.get("step", 0)) + 1
    past = (f" (past its --max-iters {run_cfg.max_iters}: a --resume with another --max-iters reshapes "
            f"the schedule)" if step > run_cfg.max_iters and isinstance(schedule, WarmupCosine) else "")
    notes.append(f"learning rate {schedule(step):.4g}: the run's schedule at step {step}{past}")
    return schedule(step), clip
