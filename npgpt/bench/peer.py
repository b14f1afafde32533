"""The peer's side of each workload: PyTorch, in a process where npgpt's kernels never load.

    train    the fair twin (twin.py: nanoGPT's model and loop, fused AdamW), from npgpt's weights
    prefill  transformers' GPT2LMHeadModel.generate(max_new_tokens=1, greedy), npgpt's weights
    decode   the same with 1 + gen new tokens, timed from the first new token to the last by a
             streamer (as workloads.decode, with generate's on_token)

torch and transformers are optional (the `bench` extra): they are imported inside the functions,
and `available()` says which of them this Python has, without importing them. The weights are
npgpt's GPT(cfg, seed=0), built here with NumPy alone and copied across (transformers' GPT-2
stores its Conv1D weights (in, out), as npgpt does: models/gpt2_hf.py), so greedy decoding gives
the same tokens on both sides; the report compares them.
"""

from __future__ import annotations

import importlib.util
import time

from ..models.gpt import GPT
from ..models.gpt2_hf import gpt2_config_to_hf, gpt2_to_hf
from . import roofline, twin
from .report import Result
from .workloads import HYPER, ModelSpec, _decode_result, batch, prompt_ids, timed


def available() -> dict:
    """{"torch": bool, "transformers": bool}: installed here (nothing is imported)."""
    return {name: importlib.util.find_spec(name) is not None for name in ("torch", "transformers")}


def train(spec: ModelSpec, repetitions: int, threads: int) -> Result:
    import torch  # optional heavy dependency: the peer

    model = twin.torch_gpt(spec.config, GPT(spec.config, seed=0).state_dict())
    step = twin.train_step(model, twin.adamw(model, HYPER["lr"], HYPER["betas"], HYPER["weight_decay"]),
                           HYPER["grad_clip"])
    x, y = (torch.from_numpy(a) for a in batch(spec))
    losses = []
    first, seconds = timed(lambda: losses.append(step(x, y)), repetitions)
    flops, nbytes = roofline.train_step(spec.config, spec.batch, spec.seq)
    return Result(spec.name, "torch", threads, "train", f"train {spec.batch}x{spec.seq}",
                  unit_tokens=spec.batch * spec.seq, seconds=seconds, first_s=first, flops=flops,
                  nbytes=nbytes, params=sum(p.numel() for p in model.parameters()),
                  extra={"first_loss": losses[0]})


def hf_gpt2(spec: ModelSpec):
    """transformers' GPT2LMHeadModel with npgpt's weights for spec (eval mode, float32)."""
    import torch  # optional heavy dependency: the peer
    from transformers import GPT2Config, GPT2LMHeadModel  # optional heavy dependency: the peer

    hf = {k: v for k, v in gpt2_config_to_hf(spec.config).items() if k != "architectures"}
    hf.update(bos_token_id=None, eos_token_id=None)   # generation must not stop early (npgpt's does not)
    model = GPT2LMHeadModel(GPT2Config(**hf)).eval()
    weights = {k: torch.from_numpy(v) for k, v in gpt2_to_hf(GPT(spec.config, seed=0).state_dict()).items()}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected or set(missing) - {"lm_head.weight"}:          # the head is tied to wte
        raise RuntimeError(f"hf_gpt2: weights did not fit: missing {missing}, unexpected {unexpected}")
    return model


def _generate(model, ids, n: int, streamer=None):
    import torch  # optional heavy dependency: the peer

    with torch.inference_mode():
        return model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                              do_sample=False, pad_token_id=0, streamer=streamer)


class _Stamps:
    """A transformers streamer that notes when each new token arrives (put is called with the
    prompt first, then with each step's token)."""

    def __init__(self):
        self.times = []

    def put(self, value):
        self.times.append(time.perf_counter())

    def end(self):
        pass


def prefill(spec: ModelSpec, prompt: int, repetitions: int, threads: int) -> Result:
    import torch  # optional heavy dependency: the peer

    model = hf_gpt2(spec)
    ids = torch.from_numpy(prompt_ids(spec, prompt))[None]
    first, seconds = timed(lambda: _generate(model, ids, 1), repetitions)
    flops, nbytes = roofline.prefill(spec.config, prompt)
    return Result(spec.name, "transformers", threads, "prefill", f"pp{prompt}", unit_tokens=prompt,
                  seconds=seconds, first_s=first, flops=flops, nbytes=nbytes,
                  params=sum(p.numel() for p in model.parameters()))


def decode(spec: ModelSpec, prompt: int, gen: int, repetitions: int, threads: int) -> Result:
    import torch  # optional heavy dependency: the peer

    model = hf_gpt2(spec)
    ids = torch.from_numpy(prompt_ids(spec, prompt))[None]
    out = []

    def steps():
        """generate 1 + gen tokens; the seconds from the first new token to the last."""
        stamps = _Stamps()
        out.append(_generate(model, ids, 1 + gen, stamps))
        return stamps.times[-1] - stamps.times[1]            # times[0]: the prompt itself
    first = steps()
    seconds = [steps() for _ in range(repetitions)]
    return _decode_result(spec, prompt, gen, "transformers", threads, first, seconds,
                          sum(p.numel() for p in model.parameters()), out[-1][0, prompt:].tolist())
