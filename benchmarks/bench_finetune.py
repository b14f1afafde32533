"""What pre-training buys: a classifier fine-tuned from a pre-trained GPT, from the same GPT with
random weights, and with LoRA adapters on the pre-trained GPT, for the same number of steps.

    python benchmarks/bench_finetune.py                      # char and BPE models, 3 runs x 5 seeds
    python benchmarks/bench_finetune.py --models char --seeds 0 --iters 20 --no-write   # a check

The task: npgpt's built-in classification task (npgpt.finetune.shuffled_words_task): sentences of
the built-in corpus, lowercased, against the same words in a shuffled order; the sentences are
split into train and held-out parts first, so no held-out sentence (nor its shuffle) is trained
on; both parts are balanced, so chance is 50%.

The pre-trained models: GPTs of the "baby" preset (4 layers, 4 heads, 128 wide, context 64)
pre-trained by `npgpt train` on the built-in corpus (PRETRAIN below), one char-level (0.8M
parameters) and one on a byte-level BPE of 1024 tokens (0.9M: the same body, a larger token
table), cached in runs/bench-finetune/pretrain-<model> (not in git) and reused while their saved
settings match. The held-out sentences are sentences of that corpus: pre-training has read them
(as running text, without labels). What pre-training can give here is knowledge of the language,
which a random model must learn from ~1,200 labelled examples. A char model of this size learns
mostly spelling; the BPE model's tokens are about words, so its pre-training is about word order.

The three runs (RUNS below, the same steps, batch and schedule) are `npgpt finetune --task
classify` runs, made in this process by the function behind the command
(npgpt.runs.finetune.run); the equivalent commands are printed and recorded. Scores are the
held-out accuracy after the last step, mean and sample standard deviation over the seeds (seed s
draws the head, the adapters, the batches and dropout, and the train / held-out split: --seed s
--data-seed s, so the spread covers the choice of held-out sentences too).
Numba runs on --threads threads (default 1: on a shared 2-core machine one thread per process is
faster than two that contend); times are wall-clock and noisy on a shared machine.
Writes results/finetune.md and finetune.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import statistics
import time
from pathlib import Path

import common  # first: it imports torch before npgpt (see common.py)

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "runs" / "bench-finetune"
PRETRAIN = {                                              # npgpt train's defaults otherwise
    "char": dict(max_iters=1500, sample_tokens=0),
    "bpe": dict(tokenizer="bpe", vocab_size=1024, max_iters=1500, sample_tokens=0),
}
COMMON = dict(task="classify", max_iters=300, batch_size=16, lr=1e-3, min_lr=1e-4, dropout=0.1,
              eval_interval=100, checkpoint_interval=300)
RUNS = {
    "pre-trained, full fine-tune": dict(),
    "random init, full fine-tune": dict(reinit=True),
    "pre-trained, LoRA r=4": dict(lora_rank=4),
    "pre-trained, LoRA r=4, lr 3e-3": dict(lora_rank=4, lr=3e-3, min_lr=3e-4),   # LoRA's usual larger lr
}
SHORT = {"pre-trained, full fine-tune": "full", "random init, full fine-tune": "random",
         "pre-trained, LoRA r=4": "lora", "pre-trained, LoRA r=4, lr 3e-3": "lora-lr3e-3"}
GOAL_LORA_POINTS = 3.0        # "within a few points": LoRA at most this many points below full


def flags(settings: dict) -> str:
    """The command-line flags of settings (True: a switch)."""
    return " ".join(f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}") for k, v in settings.items())


def pretrained(kind: str, threads: int) -> Path:
    """The folder of the pre-trained `kind` model: the cached one if its settings are
    PRETRAIN[kind]'s and it finished, else trained now (a few minutes)."""
    from npgpt import checkpoint as ckpt_io
    from npgpt.runs import pretrain

    folder = WORK / f"pretrain-{kind}"
    wanted = pretrain.PretrainConfig(out=str(folder), **PRETRAIN[kind])
    path = folder / "ckpt.safetensors"
    if path.exists():
        saved = ckpt_io.load(path).meta
        mine = {k: v for k, v in dataclasses.asdict(wanted).items() if k not in ("out", "backend")}
        theirs = {k: v for k, v in saved.get("train", {}).items() if k not in ("out", "backend")}
        if mine == theirs and saved.get("step") == wanted.max_iters:
            print(f"pre-trained {kind} model: {path} (cached)")
            return folder
        print(f"{path} has other settings or is unfinished: pre-training again")
        shutil.rmtree(folder)
    print(f"pre-training: npgpt train --out {folder.relative_to(ROOT)} {flags(PRETRAIN[kind])} "
          f"(Numba on {threads} thread(s))")
    pretrain.run(wanted, progress=True)
    return folder


def run_one(kind: str, name: str, seed: int, init: Path, iters: int | None) -> dict:
    from npgpt.runs import finetune

    settings = {**COMMON, **RUNS[name], "seed": seed, "data_seed": seed}
    if iters is not None:
        settings.update(max_iters=iters, eval_interval=0, checkpoint_interval=0)
    out = WORK / f"{kind}-{SHORT[name]}-s{seed}"
    shutil.rmtree(out, ignore_errors=True)                     # the benchmark's own earlier run
    command = f"npgpt finetune --init {init.relative_to(ROOT)} {flags(settings)} --out {out.relative_to(ROOT)}"
    print(f"\n{kind}, {name}, seed {seed}:\n  {command}", flush=True)
    t = time.perf_counter()
    result = finetune.run(finetune.FinetuneConfig(init=str(init), out=str(out), **settings),
                          progress=False, print_fn=lambda *a, **k: None)
    wall = time.perf_counter() - t
    m = result.metrics
    row = {"model": kind, "run": name, "seed": seed, "accuracy": m["test"]["accuracy"],
           "macro_f1": m["test"]["macro_f1"], "test_loss": m["test"]["loss"],
           "train_accuracy": m["train"]["accuracy"], "trainable": m["trainable_parameters"],
           "total": m["total_parameters"], "trainable_percent": m["trainable_percent"],
           "n_train": m["n_train"], "n_test": m["n_test"], "train_s": m["elapsed"], "wall_s": wall,
           "confusion": m["test"]["confusion"], "command": command}
    print(f"  held-out accuracy {row['accuracy']:.4f} (training set {row['train_accuracy']:.4f}), "
          f"{row['trainable']:,} trainable ({row['trainable_percent']:.2f}%), {row['train_s']:.0f} s", flush=True)
    return row


def summarise(rows: list[dict], kinds: list[str]) -> list[dict]:
    out = []
    for kind in kinds:
        for name in RUNS:
            mine = [r for r in rows if r["model"] == kind and r["run"] == name]
            acc = [100 * r["accuracy"] for r in mine]
            out.append({"model": kind, "run": name, "seeds": len(mine),
                        "trainable": f"{mine[0]['trainable']:,} ({mine[0]['trainable_percent']:.1f}%)",
                        "accuracy_mean": statistics.mean(acc),
                        "accuracy_std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
                        "per_seed": ", ".join(f"{a:.1f}" for a in acc),
                        "train_accuracy_mean": statistics.mean(100 * r["train_accuracy"] for r in mine),
                        "train_s_mean": statistics.mean(r["train_s"] for r in mine)})
    return out


def goals(summary: list[dict], kind: str) -> dict:
    acc = {s["run"]: s["accuracy_mean"] for s in summary if s["model"] == kind}
    full, random = acc["pre-trained, full fine-tune"], acc["random init, full fine-tune"]
    return {"pretrained_minus_random_points": full - random, "pretrained_beats_random": full > random,
            "lora_goal_points": GOAL_LORA_POINTS,
            "lora": {name: {"full_minus_lora_points": full - a, "within_goal": full - a <= GOAL_LORA_POINTS}
                     for name, a in acc.items() if "LoRA" in name}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="char,bpe", help="pre-trained models: char, bpe (default: both)")
    parser.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds (default: 0,1,2,3,4)")
    parser.add_argument("--iters", type=int, default=None, help="steps per run (default: COMMON's)")
    parser.add_argument("--threads", type=int, default=1, help="Numba threads (default: 1)")
    parser.add_argument("--no-write", action="store_true", help="print only; write no results")
    args = parser.parse_args()
    kinds = args.models.split(",")
    unknown = sorted(set(kinds) - set(PRETRAIN))
    if unknown:
        parser.error(f"--models {args.models}: {unknown} unknown, expected some of {sorted(PRETRAIN)}")
    import numba
    numba.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    env = common.environment()
    from npgpt import checkpoint as ckpt_io

    pre, rows = {}, []
    for kind in kinds:
        init = pretrained(kind, args.threads)
        meta = ckpt_io.load(init / "ckpt.safetensors").meta
        pre[kind] = {"command": f"npgpt train --out {init.relative_to(ROOT)} {flags(PRETRAIN[kind])}",
                     "step": meta["step"], "val_loss": meta["val_losses"][str(meta["step"])],
                     "train_s": meta["elapsed"]}
        print(f"pre-trained {kind}: step {pre[kind]['step']}, validation loss {pre[kind]['val_loss']:.4f}")
        rows += [run_one(kind, name, seed, init, args.iters) for seed in seeds for name in RUNS]
    summary = summarise(rows, kinds)
    verdict = {kind: goals(summary, kind) for kind in kinds}
    table = common.markdown_table(
        ["model", "run", "trainable", "accuracy_mean", "accuracy_std", "per_seed", "train_accuracy_mean",
         "train_s_mean"], summary,
        {"accuracy_mean": "{:.1f}", "accuracy_std": "{:.1f}", "train_accuracy_mean": "{:.1f}",
         "train_s_mean": "{:.0f}"})
    print("\n" + table)
    print(json.dumps(verdict, indent=1))
    if args.no_write:
        return
    settings = {**COMMON, "max_iters": args.iters or COMMON["max_iters"], "seeds": seeds,
                "threads": args.threads}
    title = "Fine-tuning: what pre-training buys"
    common.RESULTS.mkdir(parents=True, exist_ok=True)
    (common.RESULTS / "finetune.md").write_text(
        f"# {title}\n\n{_notes(pre, verdict, settings, rows)}\n\n{table}\n\n"
        f"Environment (written by `python benchmarks/bench_finetune.py --models {args.models} --seeds "
        f"{args.seeds}`, {time.strftime('%Y-%m-%d %H:%M')}):\n\n"
        + "\n".join(f"- {k}: {v}" for k, v in env.items()) + "\n")
    (common.RESULTS / "finetune.json").write_text(json.dumps(
        {"title": title, "environment": env, "pretrain": pre, "settings": settings, "runs": RUNS,
         "goals": verdict, "summary": summary, "rows": rows}, indent=1) + "\n")
    print(f"wrote {common.RESULTS / 'finetune.md'} and finetune.json")


def _notes(pre: dict, verdict: dict, settings: dict, rows: list[dict]) -> str:
    n_train, n_test = rows[0]["n_train"], rows[0]["n_test"]
    lines = [
        f"The built-in task (`npgpt finetune --task classify` without --data): sentences of the "
        f"built-in corpus against the same words shuffled, {n_train:,} training and {n_test} held-out "
        f"examples (a fifth of the sentences, each with its shuffle), balanced: chance is 50%. "
        f"The char model's context is 64 characters, so longer texts keep their first 64; the BPE "
        f"model's 64 tokens hold every text whole.",
        "",
        "Pre-trained models (the `baby` preset):",
        "",
        *[f"- {kind}: `{p['command']}`: validation loss {p['val_loss']:.3f} after {p['step']} steps "
          f"({p['train_s']:.0f} s)" for kind, p in pre.items()],
        "",
        f"Every fine-tune: {settings['max_iters']} steps of {settings['batch_size']} examples, AdamW at "
        f"lr {settings['lr']:g} with warmup then cosine decay to {settings['min_lr']:g}, dropout "
        f"{settings['dropout']}; seeds {settings['seeds']} (each also draws its own held-out split); Numba "
        f"on {settings['threads']} thread(s). Accuracy: held-out, in %, mean and sample standard "
        f"deviation over the seeds; the training-set accuracy beside it shows how much a run "
        f"memorised. Times: wall-clock seconds of training on a shared 2-core machine, noisy.",
        "",
        "The commands (seed 0; the other seeds change --seed, --data-seed and --out):",
        "",
        "```sh",
        *[p["command"] for p in pre.values()],
        *[r["command"] for r in rows if r["seed"] == settings["seeds"][0]],
        "```",
        "",
        "Goals:",
        "",
        *[f"- {kind}: pre-trained minus random init: {v['pretrained_minus_random_points']:+.1f} points "
          f"(goal > 0: {'met' if v['pretrained_beats_random'] else 'missed'}); "
          + "; ".join(f"{name[len('pre-trained, '):]}: {g['full_minus_lora_points']:.1f} points below the "
                      f"full fine-tune (goal at most {v['lora_goal_points']:.0f}: "
                      f"{'met' if g['within_goal'] else 'missed'})" for name, g in v["lora"].items())
          for kind, v in verdict.items()],
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
