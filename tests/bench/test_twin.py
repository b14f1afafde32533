"""The fair PyTorch twin (npgpt/bench/twin.py) computes npgpt's function and takes npgpt's step:
from the same weights, the same loss, and after one training step (clip, AdamW with npgpt's
decay rule) the same weights, name by name."""

from __future__ import annotations

import numpy as np
import pytest

from npgpt import GPT, GPTConfig
from npgpt.bench import twin
from npgpt.optim import AdamW, clip_grad_norm
from tests.helpers import assert_close

torch = pytest.importorskip("torch")

CFG = GPTConfig(vocab_size=23, block_size=16, n_layer=2, n_head=2, n_embd=16)


def test_the_twin_takes_npgpt_s_step_from_npgpt_s_weights():
    model = GPT(CFG, seed=3)
    net = twin.torch_gpt(CFG, model.state_dict())
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, CFG.vocab_size, (2, 2, 12))
    opt = AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    step = twin.train_step(net, twin.adamw(net, lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1), grad_clip=0.5)
    for _ in range(2):
        _, loss = model.forward(x, y)
        opt.zero_grad()
        model.backward()
        clip_grad_norm(opt, 0.5)
        opt.step()
        torch_loss = step(torch.from_numpy(x), torch.from_numpy(y))
        assert abs(loss - torch_loss) < 1e-5
    theirs = dict(net.named_parameters())
    C = CFG.n_embd
    for name, p in model.named_parameters():
        mine, t = p.data, theirs[name].detach().numpy()
        t = t.T if name.endswith(twin.LINEAR_WEIGHTS) else t
        if name.endswith("c_attn.bias"):
            # the keys' bias has gradient 0 (a constant added to every score of a query cancels
            # in the softmax): both sides hold rounding noise there, which Adam scales to steps
            mine, t = np.delete(mine, np.s_[C:2 * C]), np.delete(t, np.s_[C:2 * C])
        assert_close(name, mine, t, 1e-4)


def test_the_twin_refuses_what_it_does_not_model():
    with pytest.raises(ValueError, match="tied head"):
        twin.torch_gpt(CFG.replace(tie_weights=False))
    with pytest.raises(ValueError, match="names differ"):
        twin.load_npgpt(twin.torch_gpt(CFG), {"wte.weight": np.zeros((23, 16), np.float32)})
