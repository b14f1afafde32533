"""`npgpt seq2seq train | translate`: train the encoder-decoder Transformer (npgpt.runs.seq2seq;
the flags of `train` are Seq2SeqConfig's fields) and translate with a trained checkpoint."""

from __future__ import annotations

import math
import sys

from .. import kernels
from ..data import load_text
from ..runs import seq2seq
from ..runs.seq2seq import DEFAULT_OUT, Seq2SeqConfig, load_seq2seq, translate_texts
from ..settings import BACKENDS, DTYPES
from .flags import add_config_flags, add_resume_flag, run_training
from .parser import help_when_bare


def add(sub) -> None:
    """Declare `npgpt seq2seq` with its subcommands `train` and `translate`."""
    p = sub.add_parser("seq2seq", help="train the encoder-decoder Transformer on a seq2seq task, translate",
                       description="Sequence to sequence with the encoder-decoder Transformer: train "
                                   "on a built-in task (copy, reverse, sort, addition) or on parallel "
                                   "text, and translate with greedy decoding or beam search.")
    help_when_bare(p)
    s = p.add_subparsers(dest="seq2seq_command", metavar="COMMAND")
    _add_train(s)
    _add_translate(s)


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train on a task or a TSV file, report held-out exact match",
                       description="Train an encoder-decoder Transformer with AdamW (betas 0.9, 0.98, "
                                   "eps 1e-9), logging every step to OUT/log.jsonl, evaluations "
                                   "(val loss, greedy exact match on the held-out pairs) to "
                                   "OUT/eval.jsonl, and checkpointing to OUT/ckpt.safetensors. "
                                   "Ctrl-C saves a checkpoint; --resume continues it exactly.")
    add_config_flags(p, Seq2SeqConfig)
    add_resume_flag(p, seq2seq.SPEC)
    p.set_defaults(run=run_train)


def run_train(args) -> int:
    return run_training(args, Seq2SeqConfig, seq2seq)


def _add_translate(sub) -> None:
    p = sub.add_parser("translate", help="translate sources with a trained seq2seq checkpoint",
                       description="Translate each source with a checkpoint of `npgpt seq2seq train` "
                                   "(greedy decoding, or beam search with --beam-size > 1) and print "
                                   "one output per line.")
    p.add_argument("--checkpoint", default=DEFAULT_OUT, metavar="PATH",
                   help=f"a seq2seq checkpoint, or a run folder holding ckpt.safetensors "
                        f"(default: {DEFAULT_OUT})")
    p.add_argument("--input", action="append", default=None, metavar="TEXT",
                   help="a source to translate (repeat for more)")
    p.add_argument("--input-file", default=None, metavar="FILE",
                   help="a UTF-8 file with one source per line")
    p.add_argument("--beam-size", type=int, default=1, metavar="N",
                   help="beams per source; 1 is greedy (default: 1)")
    p.add_argument("--length-penalty", type=float, default=0.6, metavar="X",
                   help="GNMT length penalty alpha of beam search; 0: plain log-probability (default: 0.6)")
    p.add_argument("--max-len", type=int, default=None, metavar="N",
                   help="most output tokens, end-of-sequence included (default: the model's max_len)")
    p.add_argument("--batch-size", type=int, default=128, metavar="N",
                   help="sources decoded together (default: 128)")
    p.add_argument("--scores", action="store_true",
                   help="print each output's score (length-normalised log-probability) after a tab")
    p.add_argument("--dtype", choices=DTYPES, default=None,
                   help="compute in this dtype (default: the checkpoint's)")
    p.add_argument("--backend", default=None, choices=BACKENDS,
                   help="kernel backend (default: NPGPT_BACKEND or the fastest)")
    p.set_defaults(run=run_translate)


def read_sources(path) -> tuple[list[str], list[int]]:
    """The lines of a UTF-8 file (without line ends) and their line numbers; an empty line in
    the middle is an error naming it (the final line end is not a line)."""
    lines = [line.removesuffix("\r") for line in load_text(path).split("\n")]
    if lines and lines[-1] == "":
        lines.pop()
    for n, line in enumerate(lines, start=1):
        if not line:
            raise ValueError(f"{str(path)!r} line {n} is empty: expected one source per line")
    return lines, list(range(1, len(lines) + 1))


def _check_translate_args(args) -> None:
    if (args.input is None) == (args.input_file is None):
        raise ValueError("expected the sources as --input TEXT (repeatable) or --input-file FILE, "
                         "exactly one of the two")
    for name in ("beam_size", "batch_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} {getattr(args, name)}: "
                             f"expected an integer >= 1")
    if not (math.isfinite(args.length_penalty) and args.length_penalty >= 0):
        raise ValueError(f"--length-penalty {args.length_penalty}: expected a number >= 0")


def run_translate(args) -> int:
    try:
        _check_translate_args(args)
        with kernels.backend(args.backend or kernels.current_backend()):
            outs, scores = _translate(args)
    except (ValueError, TypeError, OSError, RuntimeError) as e:
        print(f"npgpt seq2seq translate: error: {e}", file=sys.stderr)
        return 2
    for text, score in zip(outs, scores):
        print(f"{text}\t{score:.4f}" if args.scores else text)
    return 0


def _translate(args):
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
    return translate_texts(model, vocab, texts, beam_size=args.beam_size,
                           length_penalty=args.length_penalty, max_len=args.max_len,
                           batch_size=args.batch_size, return_scores=True, where=where)
