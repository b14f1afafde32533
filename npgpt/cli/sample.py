"""`npgpt sample`: continue a prompt with a trained GPT (npgpt.sample)."""

from __future__ import annotations

import math
import os
import sys

from .. import kernels
from ..settings import BACKENDS, DTYPES
from ..sample import default_prompt, generate_text, load_model, vocab_note

DEFAULT_CHECKPOINT = os.path.join("out", "ckpt.safetensors")   # where `npgpt train` writes by default


def add(sub) -> None:
    p = sub.add_parser("sample", help="generate text from a checkpoint or a GPT-2 folder",
                       description="Continue a prompt with a trained GPT: an npgpt checkpoint "
                                   "(default: out/ckpt.safetensors) or a local Hugging Face GPT-2 "
                                   "folder (--gpt2). The text is printed as it is generated.")
    p.add_argument("--checkpoint", default=None, metavar="PATH",
                   help="an npgpt checkpoint, or a run folder holding ckpt.safetensors "
                        "(default: out/ckpt.safetensors)")
    p.add_argument("--gpt2", default=None, metavar="FOLDER",
                   help="a Hugging Face GPT-2 folder: config.json, model.safetensors, vocab.json, "
                        "merges.txt (default: none)")
    p.add_argument("--prompt", default=None, metavar="TEXT",
                   help="the text to continue (default: a newline, or <|endoftext|> for BPE)")
    p.add_argument("--max-new-tokens", type=int, default=200, metavar="N",
                   help="tokens to generate (default: 200)")
    p.add_argument("--temperature", type=float, default=0.8, metavar="X",
                   help="softmax temperature; 0 is greedy (default: 0.8)")
    p.add_argument("--top-k", type=int, default=None, metavar="N",
                   help="sample among the k most likely tokens (default: all)")
    p.add_argument("--top-p", type=float, default=None, metavar="X",
                   help="sample among the most likely tokens whose probability adds up to p "
                        "(nucleus; default: all)")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the sampling (default: 0)")
    p.add_argument("--num-samples", type=int, default=1, metavar="N",
                   help="independent samples (default: 1)")
    p.add_argument("--no-cache", action="store_true",
                   help="recompute every position at each step instead of using the KV cache")
    p.add_argument("--no-window", action="store_true",
                   help="stop at block_size tokens instead of sliding the context window")
    p.add_argument("--dtype", choices=DTYPES, default=None,
                   help="compute in this dtype (default: the checkpoint's; float32 for --gpt2)")
    p.add_argument("--backend", default=None, choices=BACKENDS,
                   help="kernel backend (default: NPGPT_BACKEND or the fastest)")
    p.set_defaults(run=run)


def check_args(args) -> None:
    """The sampling flags, checked before any model is read or any text printed."""
    if args.checkpoint is not None and args.gpt2 is not None:
        raise ValueError("--checkpoint and --gpt2 both given: expected one model")
    for flag, value, ok, expected in (
            ("--max-new-tokens", args.max_new_tokens, args.max_new_tokens >= 0, "an integer >= 0"),
            ("--temperature", args.temperature, math.isfinite(args.temperature) and args.temperature >= 0,
             "a number >= 0 (0: greedy)"),
            ("--top-k", args.top_k, args.top_k is None or args.top_k >= 1, "an integer >= 1"),
            ("--top-p", args.top_p, args.top_p is None or 0 < args.top_p <= 1, "a number in (0, 1]"),
            ("--seed", args.seed, args.seed >= 0, "an integer >= 0"),
            ("--num-samples", args.num_samples, args.num_samples >= 1, "an integer >= 1")):
        if not ok:
            raise ValueError(f"{flag} {value}: expected {expected}")


def run(args) -> int:
    try:
        check_args(args)
        with kernels.backend(args.backend or kernels.current_backend()):
            _sample(args)
    except (ValueError, TypeError, OSError, RuntimeError) as e:
        print(f"npgpt sample: error: {e}", file=sys.stderr)
        return 2
    return 0


def _sample(args) -> None:
    if args.gpt2 is not None:
        model, tok = load_model(gpt2=args.gpt2, dtype=args.dtype)
    else:
        if args.checkpoint is None and not os.path.exists(DEFAULT_CHECKPOINT):
            raise FileNotFoundError(f"no --checkpoint given and {DEFAULT_CHECKPOINT} does not exist: "
                                    f"train one with `npgpt train`, or pass --checkpoint or --gpt2")
        model, tok = load_model(checkpoint=args.checkpoint or DEFAULT_CHECKPOINT, dtype=args.dtype)
    note = vocab_note(model, tok)
    if note:
        print(f"npgpt sample: {note}", file=sys.stderr)
    prompt = args.prompt if args.prompt is not None else default_prompt(tok)
    generate_text(model, tok, prompt, args.max_new_tokens, temperature=args.temperature,
                  top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                  use_cache=not args.no_cache, window=not args.no_window,
                  num_samples=args.num_samples, stream=lambda s: print(s, end="", flush=True))
    print()
