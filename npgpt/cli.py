"""The command line: `npgpt gradcheck | train | sample | bench | seq2seq | finetune | exercise`.

Each subcommand is a pair of functions here: one that declares its arguments, one that runs it
by calling the library. The library never imports this module.
"""

from __future__ import annotations

import argparse
import os
import sys

from .exercises.command import add_exercise
from .exercises.filecheck import run_file
from .finetune.command import add_finetune
from .seq2seq import add_seq2seq


def add_gradcheck(sub):
    p = sub.add_parser("gradcheck", help="check every layer's backward against the numerical gradient",
                       description="Check every layer's hand-written backward against central-difference "
                                   "numerical gradients in float64, for its input and every parameter.")
    p.add_argument("--seed", type=int, default=0, help="seed of the inputs and upstream gradients")
    p.add_argument("--layer", default=None, help="only the layers whose name contains this text")
    p.add_argument("--file", default=None, metavar="PATH",
                   help="check the layers of your own file instead: functions <name>_forward, "
                        "<name>_backward, <name>_inputs(rng), or Module subclasses with "
                        "example_inputs(rng); exit 0 all pass, 1 one fails, 2 the file cannot be used")
    p.set_defaults(run=run_gradcheck)


def run_gradcheck(args) -> int:
    from . import gradcheck

    if args.file is not None:
        return run_file(args.file, seed=args.seed, layer=args.layer)
    rows = gradcheck.check_all(seed=args.seed)
    if args.layer:
        layers = list(dict.fromkeys(r["layer"] for r in rows))
        rows = [r for r in rows if args.layer.lower() in r["layer"].lower()]
        if not rows:
            print(f"npgpt gradcheck: error: --layer {args.layer!r} matches no layer: expected part of "
                  f"one of: {', '.join(layers)}", file=sys.stderr)
            return 2
    print(gradcheck.format_table(rows))
    print("\n" + gradcheck.summary_line(rows))
    return 0 if all(r["passed"] for r in rows) else 1


# -- train -------------------------------------------------------------------------------------

# flag -> (type, help); the defaults are TrainConfig's (npgpt/train.py), shown by --help
_TRAIN_FLAGS = {
    "data": (str, "a UTF-8 text file to train on"),
    "tokenizer": (str, "char: one id per character; bpe: byte-level BPE trained on the data"),
    "vocab_size": (int, "vocabulary size of the BPE tokenizer"),
    "val_fraction": (float, "the last part of the text held out for the validation loss"),
    "preset": (str, "model preset (GPTConfig.preset); the size flags below override it"),
    "n_layer": (int, "Transformer blocks"),
    "n_head": (int, "attention heads per block"),
    "n_embd": (int, "width of the residual stream"),
    "block_size": (int, "context length in tokens"),
    "dropout": (float, "dropout probability"),
    "dtype": (str, "float32 or float64"),
    "max_iters": (int, "optimisation steps"),
    "batch_size": (int, "sequences per step"),
    "lr": (float, "peak learning rate (AdamW)"),
    "min_lr": (float, "learning rate at the end of the cosine decay"),
    "warmup": (int, "steps of linear warmup"),
    "weight_decay": (float, "AdamW weight decay (matrices only)"),
    "beta1": (float, "AdamW beta1"),
    "beta2": (float, "AdamW beta2"),
    "grad_clip": (float, "max global gradient norm (0: no clipping)"),
    "eval_interval": (int, "steps between validation losses"),
    "eval_iters": (int, "validation batches per validation loss"),
    "checkpoint_interval": (int, "steps between checkpoints"),
    "seed": (int, "seed of the initialisation, batches and dropout"),
    "out": (str, "folder for ckpt.safetensors and log.jsonl"),
    "backend": (str, "kernel backend"),
    "sample_tokens": (int, "tokens to sample and print at the end (0: none)"),
}


_METAVARS = {"data": "FILE", "tokenizer": "{char,bpe}", "preset": "NAME", "dtype": "{float32,float64}",
             "out": "DIR", "backend": "{numpy,numba}"}


def add_train(sub):
    from .settings import add_flags, add_resume_flag
    from .train import TrainConfig

    p = sub.add_parser("train", help="pre-train a GPT on a text file (default: a small char-level model)",
                       description="Pre-train a GPT with AdamW (linear warmup, cosine decay), logging "
                                   "every step to OUT/log.jsonl and checkpointing to "
                                   "OUT/ckpt.safetensors. With no arguments: a small char-level "
                                   "model on the built-in corpus, in a few minutes, then a sample. "
                                   "Ctrl-C saves a checkpoint; --resume continues it exactly.")
    shown = {"data": "the built-in corpus, Python's docs", "backend": "NPGPT_BACKEND or the fastest"}
    add_flags(p, _TRAIN_FLAGS, TrainConfig, shown, unset="the preset's",
              metavar=lambda name, type_: _METAVARS.get(name, {int: "N", float: "X"}.get(type_, "VALUE")))
    add_resume_flag(p, "--max-iters, intervals, --backend, --sample-tokens")
    p.set_defaults(run=run_train)


def run_train(args) -> int:
    from .train import TrainConfig, resume_config, run_command, train

    flags = {k: v for k, v in vars(args).items() if k in _TRAIN_FLAGS}
    return run_command("npgpt train", flags, args.resume, TrainConfig, resume_config, train)


# -- sample ------------------------------------------------------------------------------------

DEFAULT_CHECKPOINT = os.path.join("out", "ckpt.safetensors")   # where `npgpt train` writes by default


def add_sample(sub):
    p = sub.add_parser("sample", help="generate text from a checkpoint or a GPT-2 folder",
                       description="Continue a prompt with a trained GPT: an npgpt checkpoint "
                                   "(default: out/ckpt.safetensors) or a local Hugging Face GPT-2 "
                                   "folder (--gpt2). The text is printed as it is generated.")
    p.add_argument("--checkpoint", default=None,
                   help="an npgpt checkpoint, or a run folder holding ckpt.safetensors "
                        "(default: out/ckpt.safetensors)")
    p.add_argument("--gpt2", default=None, metavar="FOLDER",
                   help="a Hugging Face GPT-2 folder: config.json, model.safetensors, vocab.json, merges.txt")
    p.add_argument("--prompt", default=None,
                   help="the text to continue (default: a newline, or <|endoftext|> for BPE)")
    p.add_argument("--max-new-tokens", type=int, default=200, help="tokens to generate (default: 200)")
    p.add_argument("--temperature", type=float, default=0.8,
                   help="softmax temperature; 0 is greedy (default: 0.8)")
    p.add_argument("--top-k", type=int, default=None, help="sample among the k most likely tokens")
    p.add_argument("--top-p", type=float, default=None,
                   help="sample among the most likely tokens whose probability adds up to p (nucleus)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling (default: 0)")
    p.add_argument("--num-samples", type=int, default=1, help="independent samples (default: 1)")
    p.add_argument("--no-cache", action="store_true",
                   help="recompute every position at each step instead of using the KV cache")
    p.add_argument("--no-window", action="store_true",
                   help="stop at block_size tokens instead of sliding the context window")
    p.add_argument("--dtype", choices=("float32", "float64"), default=None,
                   help="compute in this dtype (default: the checkpoint's; float32 for --gpt2)")
    p.add_argument("--backend", default=None, help="kernel backend: numpy or numba")
    p.set_defaults(run=run_sample)


def run_sample(args) -> int:
    from . import kernels
    from .sample import default_prompt, generate_text, load_model

    try:
        if args.checkpoint is not None and args.gpt2 is not None:
            raise ValueError("--checkpoint and --gpt2 both given: expected one model")
        if args.backend is not None:
            kernels.use_backend(args.backend)
        if args.gpt2 is not None:
            model, tok = load_model(gpt2=args.gpt2, dtype=args.dtype)
        else:
            if args.checkpoint is None and not os.path.exists(DEFAULT_CHECKPOINT):
                raise FileNotFoundError(f"no --checkpoint given and {DEFAULT_CHECKPOINT} does not exist: "
                                        f"train one with `npgpt train`, or pass --checkpoint or --gpt2")
            model, tok = load_model(checkpoint=args.checkpoint or DEFAULT_CHECKPOINT, dtype=args.dtype)
        prompt = args.prompt if args.prompt is not None else default_prompt(tok)
        generate_text(model, tok, prompt, args.max_new_tokens, temperature=args.temperature,
                      top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                      use_cache=not args.no_cache, window=not args.no_window,
                      num_samples=args.num_samples,
                      stream=lambda s: print(s, end="", flush=True))
        print()
    except (ValueError, TypeError, OSError, RuntimeError) as e:
        print(f"npgpt sample: error: {e}", file=sys.stderr)
        return 2
    return 0


# -- bench -------------------------------------------------------------------------------------

# --what -> (the script in benchmarks/, its quick default flags)
_BENCH = {
    "step": ("bench_step.py", ["--models", "baby", "--rounds", "1", "--steps", "5"]),
    "gemm": ("bench_gemm.py", ["--quick", "--no-one-thread"]),
    "attention": ("bench_attention.py", ["--T", "64", "256", "--repeats", "3", "--no-memory"]),
}


def add_bench(sub):
    p = sub.add_parser("bench", help="time npgpt against PyTorch on this machine (benchmarks/*.py)",
                       description="Run a benchmark of a source checkout (benchmarks/bench_*.py, the code "
                                   "behind the README's Speed tables) with a quick default set: a GPT "
                                   "training step (baby model, NumPy and Numba backends and PyTorch, one "
                                   "round), GEMM throughput, or attention. --full runs the script's own "
                                   "defaults; flags after -- go to the script.")
    p.add_argument("--what", choices=sorted(_BENCH), default="step",
                   help="training step, matrix products or attention (default: step)")
    p.add_argument("--full", action="store_true",
                   help="the script's full default set, as the README's tables were made (minutes)")
    p.add_argument("--out", default="bench-results", metavar="DIR",
                   help="folder for the tables and plots (default: bench-results; the repository's "
                        "benchmarks/results only if named here)")
    p.add_argument("script_args", nargs=argparse.REMAINDER, metavar="-- FLAGS",
                   help="further flags for the script, e.g. -- --models gpt2 --rounds 3")
    p.set_defaults(run=run_bench)


def run_bench(args) -> int:
    import subprocess
    from pathlib import Path

    script, quick = _BENCH[args.what]
    # an editable install runs from the checkout; `pip install .` copies only the package, so
    # the checkout it was installed from is looked for in the working directory
    places = [Path(__file__).resolve().parents[1], Path.cwd()]
    found = [d / "benchmarks" / script for d in places if (d / "benchmarks" / script).is_file()]
    if not found:
        print(f"npgpt bench: error: benchmarks/{script} not found beside the npgpt package or in "
              f"{Path.cwd()}: the benchmarks live in a source checkout of npgpt; run npgpt bench "
              f"from its folder", file=sys.stderr)
        return 2
    path = found[0]
    extra = [a for a in args.script_args if a != "--"]
    cmd = [sys.executable, str(path)] + ([] if args.full else quick) + extra
    os.makedirs(args.out, exist_ok=True)
    print(" ".join(["$", "python", str(path)] + cmd[2:]), flush=True)
    env = dict(os.environ, NPGPT_BENCH_RESULTS=os.path.abspath(args.out))
    return subprocess.run(cmd, env=env).returncode


COMMANDS = [add_gradcheck, add_train, add_sample, add_bench, add_seq2seq, add_finetune, add_exercise]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="npgpt", description="A GPT and a Transformer from scratch in NumPy.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        status = args.run(args)
        sys.stdout.flush()             # a closed pipe shows here, not in Python's flush at exit
        return status
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`npgpt gradcheck | head`): stop quietly; stdout goes to
        # /dev/null so that Python's flush at exit does not raise again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141                     # 128 + SIGPIPE, what a shell reports for such a writer


if __name__ == "__main__":
    raise SystemExit(main())
