"""Inference, prefill and decode apart: npgpt's GPT.generate against transformers' generate on the
same weights, each in its own process, and how close decoding comes to the machine's bandwidth.

    python benchmarks/bench_decode.py                    # GPT-2 124M, prompt 64, 64 new tokens, 5 rounds
    python benchmarks/bench_decode.py --rounds 1 --no-write
    python benchmarks/bench_decode.py --profile          # where npgpt's decoding time goes

The workloads are npgpt bench's (npgpt/bench/workloads.py and peer.py): random weights (npgpt's
GPT(cfg, seed=0), copied into transformers' GPT2LMHeadModel), batch 1, greedy. prefill: generate
with 1 new token (the prompt's forward and the first token); decode: generate with 1 + 64 new
tokens minus that, per token. Each round runs npgpt (which first measures the machine's roofs:
numpy's best sgemm and the Numba triad) and then transformers, each in a fresh process
(npgpt/bench/runner.py); the table gives the median over rounds of each round's mean, and the
decode rate as a fraction of that round's bandwidth roof: decoding reads every weight once per
token (4 N_w bytes, GPT-2: 0.49 GB, plus the KV cache), so triad GB/s / bytes per token is the
most tokens per second the memory allows. The two sides' greedy tokens are compared.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)

from npgpt.bench import machine, roofline  # noqa: E402  (after the path: a checkout runs this)
from npgpt.bench.report import Result  # noqa: E402
from npgpt.bench.runner import launch  # noqa: E402
from npgpt.bench.workloads import MODELS  # noqa: E402

RESULTS = Path(os.environ.get("NPGPT_BENCH_RESULTS") or HERE / "results")


def one_round(args) -> list[tuple[Result, dict | None]]:
    base = {"threads": args.threads, "models": [args.model], "tests": ["prefill", "decode"],
            "repetitions": args.repetitions, "prompt": args.prompt, "gen": args.gen}
    out = []
    for job in ({**base, "side": "npgpt", "backend": "numba",
                 "peak": {"elements": 1 << 26, "gemm": [1024, 2048]}},
                {**base, "side": "torch", "backend": "torch", "peak": None}):
        done = launch(job)
        out += [(Result(**r), done["roofs"]) for r in done["results"] if r["test"] != "peak"]
    roofs = next(r for _, r in out if r)
    return [(r, roofs) for r, _ in out]


def summarise(rounds: list) -> list[dict]:
    rows = []
    for impl in ("npgpt-numba", "transformers"):
        for test in ("prefill", "decode"):
            rs = [(r, roofs) for rnd in rounds for r, roofs in rnd if r.impl == impl and r.test == test]
            if not rs:
                continue
            r0 = rs[0][0]
            row = {"impl": impl, "test": r0.label,
                   "ms": statistics.median(1e3 * r.mean_s() / (r.unit_tokens if test == "decode" else 1)
                                           for r, _ in rs),
                   "tokens/s": statistics.median(r.mean_ts() for r, _ in rs),
                   "range t/s": f"{min(r.mean_ts() for r, _ in rs):.1f}–{max(r.mean_ts() for r, _ in rs):.1f}",
                   "GB/s": statistics.median(r.gbs() for r, _ in rs),
                   "triad GB/s": statistics.median(roofs["gbs"] for _, roofs in rs),
                   "% of roof": 100 * statistics.median(r.bound(_roofs(roofs))[1] for r, roofs in rs),
                   "bound": r0.bound(_roofs(rs[0][1]))[0], "rounds": len(rs)}
            rows.append(row)
    return rows


def _roofs(d):
    return roofline.Roofs(**d)


def same_tokens(rounds) -> bool:
    tokens = {r.impl: r.extra["tokens"] for rnd in rounds for r, _ in rnd if r.test == "decode"}
    return tokens.get("npgpt-numba") == tokens.get("transformers")


def profile(args) -> str:
    """cProfile of npgpt's generate (1 + gen new tokens) in this process: the top functions."""
    from npgpt import GPT, kernels
    from npgpt.bench.workloads import prompt_ids

    kernels.use_backend("numba")
    kernels.get("warmup")(("float32",))
    spec = MODELS[args.model]
    model = GPT(spec.config, seed=0)
    ids = prompt_ids(spec, args.prompt)
    model.generate(ids, 2, temperature=0)
    profiler = cProfile.Profile()
    t = time.perf_counter()
    profiler.runcall(model.generate, ids, 1 + args.gen, temperature=0)
    wall = time.perf_counter() - t
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(14)
    return f"generate(prompt {args.prompt}, {1 + args.gen} new tokens): {wall:.2f} s under cProfile\n" + \
        "\n".join(line for line in text.getvalue().splitlines() if line.strip())


def table(rows) -> str:
    cols = ["impl", "test", "ms", "tokens/s", "range t/s", "GB/s", "triad GB/s", "% of roof", "bound", "rounds"]
    fmt = {"ms": "{:.1f}", "tokens/s": "{:.1f}", "GB/s": "{:.1f}", "triad GB/s": "{:.1f}", "% of roof": "{:.0f}%"}
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt[c].format(r[c]) if c in fmt and r.get(c) is not None else str(r.get(c, "–"))
                                for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="gpt2", choices=sorted(MODELS), help="default: gpt2 (124M)")
    p.add_argument("--prompt", type=int, default=64, help="prompt tokens (default: 64)")
    p.add_argument("--gen", type=int, default=64, help="new tokens after the first (default: 64)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="threads (default: every core)")
    p.add_argument("--rounds", type=int, default=5, help="rounds, npgpt then transformers (default: 5)")
    p.add_argument("--repetitions", type=int, default=3, help="timed calls per round (default: 3)")
    p.add_argument("--profile", action="store_true", help="only profile npgpt's decoding, in this process")
    p.add_argument("--name", default="decode", help="results/NAME.md and NAME.json (default: decode)")
    p.add_argument("--no-write", action="store_true", help="print, but do not write results/")
    args = p.parse_args(argv)
    if args.profile:
        print(profile(args))
        return 0
    load_before = machine.load_average()
    rounds = []
    for i in range(args.rounds):
        rounds.append(one_round(args))
        print(f"round {i + 1}: " + ", ".join(f"{r.impl} {r.label} {r.mean_ts():.1f} t/s" for r, _ in rounds[-1]),
              file=sys.stderr, flush=True)
    rows = summarise(rounds)
    command = "python benchmarks/bench_decode.py " + " ".join(argv if argv is not None else sys.argv[1:])
    loads = f"{load_before} → {machine.load_average()}"
    text = (f"# Inference: npgpt vs transformers, {args.model}, batch 1, greedy\n\nCommand: `{command.strip()}`\n\n"
            f"{table(rows)}\n\nSame greedy tokens: {'yes' if same_tokens(rounds) else 'NO'}. Load average "
            f"(1, 5, 15 min) before → after: {loads}. Machine: {json.dumps(machine.describe())}\n")
    print(text)
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"{args.name}.md").write_text(text)
        (RESULTS / f"{args.name}.json").write_text(json.dumps({
            "command": command.strip(), "rows": rows, "same_tokens": same_tokens(rounds), "load": loads,
            "rounds": [[{"result": r.__dict__, "roofs": roofs} for r, roofs in rnd] for rnd in rounds]}, indent=1))
        print(f"wrote {RESULTS / args.name}.md and .json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
