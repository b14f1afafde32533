"""`npgpt bench`: what this CPU does on a GPT, as llama.cpp's llama-bench reports it.

    npgpt bench                                       baby; train, prefill, decode, peak; every core
    npgpt bench --model baby,gpt2 --threads 1,2 --repetitions 5 --output json > mine.json
    npgpt bench --test peak                           the machine's roofs alone
    npgpt bench --model gpt2 --test decode,peak --plot roofline.png

One table on stdout (progress on stderr): tokens per second ± std, ms per step (per token for
decode), GFLOP/s and GB/s achieved, and the fraction of the machine's own limit that bounds the
workload (npgpt/bench/roofline.py), for npgpt and, where installed, PyTorch (the fair twin;
transformers' generate for prefill and decode). Every side and thread count runs in a process of
its own (npgpt/bench/runner.py). Nothing needs a checkout or a download: the weights are random.
The scripts behind the README's detailed tables stay in a checkout's benchmarks/.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..bench import plot
from ..bench.report import TESTS
from ..bench.runner import MODEL_NAMES, Plan, check_tokens, command_of, known, run

FORMATS = ("md", "csv", "json")


def add(sub) -> None:
    p = sub.add_parser("bench", help="what this CPU does on a GPT: train, prefill, decode, its limits",
                       description=__doc__.split("\n\n")[0] + " Models: baby (4 x 128, vocab 65), small "
                       "(4 layers, 768 wide, GPT-2's vocabulary), gpt2 (GPT-2 124M); random weights.")
    p.add_argument("--model", default="baby", metavar="LIST", help=f"comma-separated, of {', '.join(MODEL_NAMES)} "
                   f"(default: baby)")
    p.add_argument("--test", default=",".join(TESTS), metavar="LIST",
                   help="comma-separated, of train (one step: forward, backward, clip, AdamW), prefill "
                        "(a prompt, to the first token), decode (the next tokens, KV cache, greedy), peak "
                        "(sgemm GFLOP/s and memory GB/s: the roofs) (default: all)")
    p.add_argument("--threads", default=None, metavar="LIST",
                   help="comma-separated thread counts, each run in fresh processes (default: every core)")
    p.add_argument("--repetitions", "-r", type=int, default=5, metavar="N",
                   help="timed repetitions of each test, after one untimed first call (default: 5)")
    p.add_argument("--output", "-o", default="md", metavar="FORMAT", help="md, csv or json (default: md)")
    p.add_argument("--prompt", type=int, default=64, metavar="N",
                   help="prefill and decode: prompt tokens (default: 64; at most half a small context)")
    p.add_argument("--gen", type=int, default=64, metavar="N", help="decode: new tokens (default: 64)")
    p.add_argument("--backend", default="numba", metavar="LIST", help="npgpt's backends: numba, numpy "
                   "(default: numba)")
    p.add_argument("--no-peer", action="store_true", help="npgpt alone, even where PyTorch is installed")
    p.add_argument("--peak-mib", type=int, default=256, metavar="MIB",
                   help="each of the triad's three arrays (default: 256, far beyond any cache)")
    p.add_argument("--gemm", default="1024,2048", metavar="LIST", help="sgemm sizes n (n x n x n) for the "
                   "compute peak (default: 1024,2048)")
    p.add_argument("--plot", default=None, metavar="PNG", help="also draw the roofline with every workload into PNG (default: no plot)")
    p.set_defaults(run=main)


def plan_from(args) -> Plan:
    """The Plan of the flags; a ValueError naming the flag for anything not understood."""
    def ints(flag, text):
        try:
            values = [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"--{flag} {text!r}: expected comma-separated whole numbers") from None
        if not values or min(values) < 1:
            raise ValueError(f"--{flag} {text!r}: expected numbers >= 1")
        return values
    lists = {k: [v for v in getattr(args, k).split(",") if v] for k in ("model", "test", "backend")}
    if args.output not in FORMATS:
        raise ValueError(f"--output {args.output!r}: expected one of {', '.join(FORMATS)}")
    for flag in ("repetitions", "prompt", "gen", "peak_mib"):
        ints(flag.replace("_", "-"), str(getattr(args, flag)))
    folder = Path(args.plot).resolve().parent if args.plot else None
    if folder is not None and not folder.is_dir():
        raise ValueError(f"--plot {args.plot!r}: the folder {str(folder)!r} does not exist (checked "
                         f"before the run, so that its results are not lost)")
    return Plan(models=known("model", lists["model"], MODEL_NAMES), tests=known("test", lists["test"], TESTS),
                threads=ints("threads", args.threads) if args.threads else Plan().threads,
                repetitions=args.repetitions, prompt=args.prompt, gen=args.gen,
                backends=known("backend", lists["backend"], ("numba", "numpy")), peer=not args.no_peer,
                peak_elements=args.peak_mib * 2 ** 20 // 4, gemm=ints("gemm", args.gemm))


def main(args) -> int:
    try:
        plan = plan_from(args)
    except ValueError as e:
        print(f"npgpt bench: error: {e}", file=sys.stderr)
        return 2
    cores = os.cpu_count() or 1
    if max(plan.threads) > cores:
        print(f"npgpt bench: warning: --threads {max(plan.threads)} on {cores} cores: the threads will "
              f"share cores, and the numbers say so", file=sys.stderr)
    report = run(plan, command=command_of(plan))
    for line in check_tokens(report):
        print(f"npgpt bench: warning: {line}", file=sys.stderr)
    text = {"md": report.markdown, "csv": report.csv, "json": report.to_json}[args.output]()
    sys.stdout.write(text)
    if args.plot:
        if plot.draw(report, Path(args.plot)):
            print(f"npgpt bench: wrote {args.plot}", file=sys.stderr)
        else:
            print("npgpt bench: --plot needs matplotlib (pip install 'npgpt[bench]'): no plot", file=sys.stderr)
    return 0
