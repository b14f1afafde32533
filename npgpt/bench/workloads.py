"""What `npgpt bench` times: the models, and npgpt's three workloads on them.

    MODELS["baby" | "small" | "gpt2"]      a GPTConfig and the training batch (B, T)
    train(spec, repetitions)               one training step: forward, backward, clip, AdamW
    prefill(spec, prompt, repetitions)     generate's first token: the prompt's forward, the KV
                                           cache filled, the next token chosen (greedy)
    decode(spec, prompt, gen, repetitions) the gen tokens after it, one position at a time

Weights are random (GPT(cfg, seed=0)): nothing needs a download, and the speed of a model does
not depend on what its weights say. Each returns a report.Result: the first call timed apart,
then one time per repetition. A decode repetition is one call of generate with 1 + gen new
tokens, timed from its first new token to its last (generate's on_token), so that the prompt's
forward is not counted in the per-token rate (transformers' side is timed the same way, with its
streamer: peer.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..config import GPTConfig
from ..models.gpt import GPT
from ..optim import AdamW, clip_grad_norm
from . import roofline
from .report import Result

HYPER = dict(lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1, grad_clip=1.0)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    config: GPTConfig
    batch: int            # the training step's B x T
    seq: int


MODELS = {
    "baby": ModelSpec("baby", GPTConfig.preset("baby"), 12, 64),            # 4 x 128, vocab 65
    "small": ModelSpec("small", GPTConfig(n_layer=4, n_head=12, n_embd=768), 4, 64),   # GPT-2 wide
    "gpt2": ModelSpec("gpt2", GPTConfig.preset("gpt2"), 4, 64),             # GPT-2 124M
}


def timed(fn, repetitions: int) -> tuple[float, list[float]]:
    """(the first call's seconds, one time per further call)."""
    t = time.perf_counter()
    fn()
    first = time.perf_counter() - t
    seconds = []
    for _ in range(repetitions):
        t = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - t)
    return first, seconds


def batch(spec: ModelSpec, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A random training batch (inputs, targets), int64 (B, T): the same on every side."""
    rng = np.random.default_rng(seed)
    shape = (spec.batch, spec.seq)
    return (rng.integers(0, spec.config.vocab_size, shape, dtype=np.int64),
            rng.integers(0, spec.config.vocab_size, shape, dtype=np.int64))


def prompt_ids(spec: ModelSpec, length: int, seed: int = 0) -> np.ndarray:
    """A random prompt, int64 (length,): the same on every side."""
    return np.random.default_rng(seed).integers(0, spec.config.vocab_size, length, dtype=np.int64)


def train(spec: ModelSpec, repetitions: int, impl: str, threads: int) -> Result:
    model = GPT(spec.config, seed=0)
    opt = AdamW(model.parameters(), lr=HYPER["lr"], betas=HYPER["betas"], weight_decay=HYPER["weight_decay"])
    x, y = batch(spec)
    losses = []

    def step():
        _, loss = model.forward(x, y)
        opt.zero_grad()
        model.backward()
        clip_grad_norm(opt, HYPER["grad_clip"])
        opt.step()
        losses.append(float(loss))
    first, seconds = timed(step, repetitions)
    flops, nbytes = roofline.train_step(spec.config, spec.batch, spec.seq)
    return Result(spec.name, impl, threads, "train", f"train {spec.batch}x{spec.seq}",
                  unit_tokens=spec.batch * spec.seq, seconds=seconds, first_s=first, flops=flops,
                  nbytes=nbytes, params=model.num_parameters(), extra={"first_loss": losses[0]})


def prefill(spec: ModelSpec, prompt: int, repetitions: int, impl: str, threads: int) -> Result:
    model = GPT(spec.config, seed=0)
    ids = prompt_ids(spec, prompt)
    first, seconds = timed(lambda: model.generate(ids, 1, temperature=0), repetitions)
    flops, nbytes = roofline.prefill(spec.config, prompt)
    return Result(spec.name, impl, threads, "prefill", f"pp{prompt}", unit_tokens=prompt,
                  seconds=seconds, first_s=first, flops=flops, nbytes=nbytes,
                  params=model.num_parameters())


def decode(spec: ModelSpec, prompt: int, gen: int, repetitions: int, impl: str, threads: int) -> Result:
    model = GPT(spec.config, seed=0)
    ids = prompt_ids(spec, prompt)
    out = []

    def steps():
        """generate 1 + gen tokens; the seconds from the first new token to the last."""
        stamps = []
        out.append(model.generate(ids, 1 + gen, temperature=0, on_token=lambda _: stamps.append(time.perf_counter())))
        return stamps[-1] - stamps[0]
    first = steps()
    seconds = [steps() for _ in range(repetitions)]
    return _decode_result(spec, prompt, gen, impl, threads, first, seconds, model.num_parameters(),
                          out[-1][prompt:].tolist())


def _decode_result(spec, prompt, gen, impl, threads, first, seconds, params, tokens) -> Result:
    # the mean context of the gen decoded tokens: prompt + 1 .. prompt + gen
    flops, nbytes = roofline.decode(spec.config, prompt + (gen + 1) / 2)
    return Result(spec.name, impl, threads, "decode", f"tg{gen}", unit_tokens=gen, seconds=seconds,
                  first_s=first, flops=flops * gen, nbytes=nbytes * gen, params=params,
                  extra={"tokens": tokens})          # all 1 + gen new tokens, to compare the sides
