"""The fair peer: npgpt's GPT written as a PyTorch user would write it, eager, on the CPU.

npgpt is timed against the fastest reasonable eager PyTorch, not against a strawman. The twin is
nanoGPT's model and loop, with npgpt's sizes and settings:

    torch.nn modules: nn.Embedding, nn.LayerNorm, nn.Linear (one Linear for q, k, v: c_attn),
    F.scaled_dot_product_attention(is_causal=True) (torch's fused CPU attention),
    F.gelu(approximate="tanh"), the head tied to the token table (F.linear(h, wte.weight)),
    F.cross_entropy; no dropout modules when dropout is 0 (nothing to call);
    torch.optim.AdamW with two param groups (decay on the Linear weights only, npgpt's rule),
    fused=True (torch's one-kernel AdamW, on the CPU since torch 2.4: the fastest of its three
    implementations here, see docs/speed.md), torch.nn.utils.clip_grad_norm_, and
    zero_grad(set_to_none=True) (torch's default).

How it runs is part of being fair (npgpt/bench/runner.py, benchmarks/*.py): in a process of its
own, where npgpt's Numba kernels are never imported (two libraries' thread pools in one process
slow both), with torch.set_num_threads(n) and the environment as the user left it (npgpt's
OMP_WAIT_POLICY=PASSIVE, set for Numba's OpenMP threads, must not reach torch's).

Parameter names are npgpt's (wte.weight, h.0.attn.c_attn.weight, ...), so `load_npgpt(twin,
state_dict)` gives the twin npgpt's exact initial weights: the two first losses are then equal,
a check that both compute the same function. torch is imported inside the functions: it is an
optional dependency (the `bench` extra), and npgpt's own processes never load it.
"""

from __future__ import annotations

import numpy as np

from ..config import GPTConfig

# npgpt's Linear stores its weight (in, out); torch's nn.Linear (out, in): these are transposed
LINEAR_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def torch_gpt(cfg: GPTConfig, state_dict: dict | None = None):
    """GPT-2's architecture (npgpt's GPT with cfg: pre-LN blocks, learned positions, tied head,
    biases, GELU-tanh) as a torch.nn.Module, float32. forward(idx, targets=None) returns the
    mean cross-entropy with targets, else the logits (B, T, V).

    state_dict: npgpt's {name: array} (GPT(cfg, seed).state_dict()) to start from npgpt's
    weights; without it, torch's default initialisation (the speed is the same)."""
    import torch  # optional heavy dependency: the peer, only in its own process
    nn, F = torch.nn, torch.nn.functional

    if cfg.pos_encoding != "learned" or not cfg.tie_weights or not cfg.bias or cfg.activation != "gelu_tanh":
        raise ValueError(f"torch_gpt: the twin is GPT-2's architecture: expected learned positions, a "
                         f"tied head, biases and gelu_tanh; the config has {cfg}")
    Block = _block_class(cfg)

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
            self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
            self.h = nn.ModuleList(Block() for _ in range(cfg.n_layer))
            self.ln_f = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_eps)

        def forward(self, idx, targets=None):
            x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
            for block in self.h:
                x = block(x)
            logits = F.linear(self.ln_f(x), self.wte.weight)          # the tied head
            if targets is None:
                return logits
            return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))

    model = GPT()
    if state_dict is not None:
        load_npgpt(model, state_dict)
    return model


def _block_class(cfg: GPTConfig):
    """The twin's Block (pre-LN: x + attn(ln_1(x)), then + mlp(ln_2(x))), a torch.nn.Module class."""
    import torch  # optional heavy dependency: the peer
    nn, F = torch.nn, torch.nn.functional
    C, H = cfg.n_embd, cfg.n_head

    class CausalSelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_attn = nn.Linear(C, 3 * C)                      # q, k, v in one product
            self.c_proj = nn.Linear(C, C)

        def forward(self, x):
            B, T, _ = x.shape
            q, k, v = self.c_attn(x).split(C, dim=2)
            q, k, v = (t.view(B, T, H, C // H).transpose(1, 2) for t in (q, k, v))   # (B, H, T, D)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))     # (B, T, C)

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_fc, self.c_proj = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)

        def forward(self, x):
            return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1, self.attn = nn.LayerNorm(C, eps=cfg.layer_norm_eps), CausalSelfAttention()
            self.ln_2, self.mlp = nn.LayerNorm(C, eps=cfg.layer_norm_eps), MLP()

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            return x + self.mlp(self.ln_2(x))
    return Block


def load_npgpt(model, state_dict: dict) -> None:
    """Copy npgpt's arrays {name: (in, out) or table} into the twin, by name (Linear weights
    transposed to torch's (out, in)); a missing or extra name is an error."""
    import torch  # optional heavy dependency: the peer

    mine = dict(model.named_parameters())
    if set(mine) != set(state_dict):
        raise ValueError(f"load_npgpt: names differ: only npgpt has {sorted(set(state_dict) - set(mine))[:5]}, "
                         f"only the twin {sorted(set(mine) - set(state_dict))[:5]}")
    with torch.no_grad():
        for name, p in mine.items():
            a = np.asarray(state_dict[name])
            p.copy_(torch.from_numpy(np.ascontiguousarray(a.T if name.endswith(LINEAR_WEIGHTS) else a)))


def decay_groups(model, weight_decay: float) -> list[dict]:
    """npgpt's weight-decay rule as torch param groups: the Linear weights decay; embeddings,
    biases and LayerNorms do not (npgpt.nn.Parameter.decay)."""
    decays = {n: p.dim() == 2 and not n.startswith(("wte.", "wpe.")) for n, p in model.named_parameters()}
    return [{"params": [p for n, p in model.named_parameters() if decays[n]], "weight_decay": weight_decay},
            {"params": [p for n, p in model.named_parameters() if not decays[n]], "weight_decay": 0.0}]


def adamw(model, lr: float, betas=(0.9, 0.95), weight_decay: float = 0.1):
    """torch.optim.AdamW over decay_groups(model), fused (one kernel per step over every
    parameter; torch's fastest AdamW on the CPU: see the module docstring)."""
    import torch  # optional heavy dependency: the peer

    return torch.optim.AdamW(decay_groups(model, weight_decay), lr=lr, betas=betas, fused=True)


def train_step(model, optimizer, grad_clip: float = 1.0):
    """The loop's body as nanoGPT writes it: step(x, y) -> loss (a float), for torch tensors."""
    import torch  # optional heavy dependency: the peer

    params = list(model.parameters())

    def step(x, y):
        loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        return loss.item()
    return step
