"""One benchmark's results, their statistics, and the three ways to print them (md, csv, json).

    result = Result(model="baby", impl="npgpt", threads=2, test="decode", unit_tokens=64,
                    seconds=[...], first_s=..., flops=..., nbytes=...)
    result.mean_ts(), result.std_ts()          tokens per second over the repetitions
    report = Report(machine, roofs, results, command)
    print(report.markdown())                   llama-bench's table, one row per result
    Report.from_json(report.to_json()) == report

Statistics, as llama-bench reports them: each repetition gives one rate (tokens / seconds); the
table shows their mean ± the sample standard deviation (n - 1). The first call of a workload
(Numba's compile or cache load, first-touch page faults, torch's allocator warming up) is
timed apart, `first_s`, and is not among the repetitions.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from dataclasses import asdict, dataclass, field, fields

from .roofline import Roofs

TESTS = ("train", "prefill", "decode", "peak")


@dataclass
class Result:
    """One workload timed in one process: `seconds` holds one time per repetition, each for
    `unit_tokens` tokens (a training step's B x T, a prompt, the new tokens of a decode); flops
    and nbytes are per repetition too (roofline.py). For the peak tests: `rate` holds the
    measured GFLOP/s (sgemm) or GB/s (triad, read) and seconds is empty."""
    model: str                 # "baby", "small", "gpt2"; "-" for the peak tests
    impl: str                  # "npgpt-numba", "npgpt-numpy", "torch" (the twin), "transformers"
    threads: int
    test: str                  # one of TESTS
    label: str                 # what llama-bench calls the test: "train 12x64", "pp64", "tg64", "triad"
    unit_tokens: int = 0
    seconds: list = field(default_factory=list)
    first_s: float | None = None
    flops: float = 0.0
    nbytes: float = 0.0
    rate: float | None = None
    params: int = 0
    extra: dict = field(default_factory=dict)   # loss, tokens, blas, ...: whatever the test records

    def rates(self) -> list[float]:
        return [self.unit_tokens / s for s in self.seconds]

    def mean_ts(self) -> float | None:
        return statistics.fmean(self.rates()) if self.seconds else None

    def std_ts(self) -> float | None:
        return statistics.stdev(self.rates()) if len(self.seconds) > 1 else (0.0 if self.seconds else None)

    def mean_s(self) -> float | None:
        return statistics.fmean(self.seconds) if self.seconds else None

    def gflops(self) -> float | None:
        """Achieved GFLOP/s (mean over the repetitions' times)."""
        if self.test == "peak":
            return self.rate if self.label == "sgemm" else None
        return self.flops / self.mean_s() / 1e9 if self.seconds and self.flops else None

    def gbs(self) -> float | None:
        if self.test == "peak":
            return self.rate if self.label != "sgemm" else None
        return self.nbytes / self.mean_s() / 1e9 if self.seconds and self.nbytes else None

    def bound(self, roofs: Roofs | None) -> tuple[str | None, float | None]:
        """(the roof that bounds it, the fraction of that roof reached), or (None, None)."""
        if roofs is None or not self.seconds or not self.flops:
            return None, None
        name, _ = roofs.bound(self.flops, self.nbytes)
        return name, roofs.fraction(self.flops, self.nbytes, self.mean_s())


@dataclass
class Report:
    machine: dict
    roofs: dict                # {threads (as a string, for json): Roofs as a dict}
    results: list
    command: str = ""

    def roofs_for(self, threads: int) -> Roofs | None:
        r = self.roofs.get(str(threads))
        return Roofs(**r) if r else None

    def rows(self) -> list[dict]:
        """The table's rows: one per result, numbers formatted as the columns show them."""
        return [_row(r, self.roofs_for(r.threads)) for r in self.results]

    def markdown(self) -> str:
        m = self.machine
        loads = " → ".join(str(m.get(k)) for k in ("load_average", "load_average_after") if m.get(k))
        head = (f"CPU: {m.get('cpu')}, {m.get('cores')} cores, {m.get('simd')}; caches {m.get('caches')}; "
                f"BLAS: {m.get('blas')}; "
                f"numpy {m.get('numpy')}, numba {m.get('numba')}; load average {loads}\n"
                + _threads_as_run(m.get("settings") or {}) + f"`{self.command}`")
        rows = self.rows()
        lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---:" if c in NUMERIC else "---"
                                                                  for c in COLUMNS) + "|"]
        lines += ["| " + " | ".join(str(row[c]) for c in COLUMNS) + " |" for row in rows]
        return head + "\n\n" + "\n".join(lines) + "\n"

    def csv(self) -> str:
        """One line per result: the table's columns, the raw numbers, and the machine."""
        out = io.StringIO()
        keys = COLUMNS + ["mean t/s", "std t/s", "cpu", "cores", "simd", "blas", "load average"]
        writer = csv.DictWriter(out, fieldnames=keys, lineterminator="\n")
        writer.writeheader()
        for r, row in zip(self.results, self.rows()):
            writer.writerow({**row, "mean t/s": r.mean_ts(), "std t/s": r.std_ts(), "first s": r.first_s,
                             **{k: self.machine.get(k) for k in ("cpu", "cores", "simd", "blas")},
                             "load average": self.machine.get("load_average")})
        return out.getvalue()

    def to_json(self) -> str:
        return json.dumps({"machine": self.machine, "roofs": self.roofs, "command": self.command,
                           "results": [asdict(r) for r in self.results]}, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "Report":
        d = json.loads(text)
        names = {f.name for f in fields(Result)}
        results = [Result(**{k: v for k, v in r.items() if k in names}) for r in d["results"]]
        return cls(machine=d["machine"], roofs=d["roofs"], results=results, command=d.get("command", ""))


COLUMNS = ["model", "params", "impl", "threads", "test", "t/s", "ms", "GFLOP/s", "GB/s", "bound",
           "% of roof", "first s"]
NUMERIC = {"params", "threads", "t/s", "ms", "GFLOP/s", "GB/s", "% of roof", "first s"}


def _row(r: Result, roofs: Roofs | None) -> dict:
    bound, fraction = r.bound(roofs)
    gflops, gbs = r.gflops(), r.gbs()
    if r.test == "peak":
        bound, fraction = ("compute" if r.label == "sgemm" else "memory"), None
    return {"model": r.model, "params": _millions(r.params), "impl": r.impl, "threads": r.threads,
            "test": r.label,
            "t/s": "–" if r.mean_ts() is None else f"{_fmt(r.mean_ts())} ± {_fmt(r.std_ts())}",
            "ms": "–" if r.mean_s() is None else _fmt(1e3 * r.mean_s() / _per(r)),
            "GFLOP/s": "–" if gflops is None else f"{gflops:.1f}",
            "GB/s": "–" if gbs is None else f"{gbs:.1f}",
            "bound": bound or "–", "% of roof": "–" if fraction is None else f"{100 * fraction:.0f}%",
            "first s": "–" if r.first_s is None else f"{r.first_s:.2f}"}


def _per(r: Result) -> int:
    """ms per what: per token for decode (llama-bench's tg), per call otherwise."""
    return r.unit_tokens if r.test == "decode" else 1


def _millions(n: int) -> str:
    return "–" if not n else (f"{n / 1e6:.1f} M" if n >= 1e6 else f"{n / 1e3:.0f} k")


def _fmt(x: float) -> str:
    """Three significant digits, no exponent: 12.3, 1.23, 1234."""
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.3g}"


def _threads_as_run(settings: dict) -> str:
    """One line: the threads each worker's libraries ran (numpy's BLAS through threadpoolctl,
    torch's own count), as the workers reported them; empty when they reported nothing."""
    parts = []
    for name, setting in settings.items():
        if "blas" in setting:
            parts.append(f"{name}: {setting['blas']}")
        elif "torch_threads" in setting:
            parts.append(f"{name}: torch, {setting['torch_threads']} threads")
    return "Threads as run: " + "; ".join(parts) + "\n" if parts else ""
