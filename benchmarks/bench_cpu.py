"""`npgpt bench` written to benchmarks/results/: the llama-bench-style table (bench.md), the full
report (bench.json, `npgpt.bench.report.Report.from_json` reads it back) and the roofline plot
(roofline.png), from one run.

    python benchmarks/bench_cpu.py                                   # the docs' table: see below
    python benchmarks/bench_cpu.py --model baby --test peak -r 2     # any of npgpt bench's flags

Without flags it runs the configuration of docs/speed.md: the three models, every test, 1 and 2
threads, 5 repetitions (about 10 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)

from npgpt.bench import plot  # noqa: E402  (after the path: a checkout runs this)
from npgpt.bench.runner import check_tokens, command_of, run  # noqa: E402
from npgpt.cli import bench  # noqa: E402

RESULTS = Path(os.environ.get("NPGPT_BENCH_RESULTS") or HERE / "results")
DEFAULT = ["--model", "baby,small,gpt2", "--threads", "1,2", "--repetitions", "5"]


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv) or DEFAULT
    parser = argparse.ArgumentParser(prog="bench_cpu.py")
    bench.add(parser.add_subparsers())
    args = parser.parse_args(["bench"] + argv)
    plan = bench.plan_from(args)
    report = run(plan, command="python benchmarks/bench_cpu.py " + " ".join(argv) + f"  # = {command_of(plan)}")
    warnings = check_tokens(report)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bench.md").write_text(f"# npgpt bench on this machine\n\n{report.markdown()}\n"
                                      + "".join(f"\nwarning: {w}\n" for w in warnings))
    (RESULTS / "bench.json").write_text(report.to_json())
    drawn = plot.draw(report, RESULTS / "roofline.png")
    print(report.markdown())
    print(f"wrote {RESULTS}/bench.md, bench.json" + (", roofline.png" if drawn else " (no matplotlib: no plot)"),
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
