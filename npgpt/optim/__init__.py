"""Optimizers (SGD, AdamW), gradient clipping and learning-rate schedules, in NumPy.

Both optimizers follow torch.optim step for step (the tests hold them equal to it), with one
npgpt convention on top: weight decay applies only to parameters whose ``p.decay`` is True (the
layers set it: matrices yes; biases, LayerNorm gains and embedding tables no), so
``AdamW(model.parameters(), weight_decay=0.1)`` decays what it should.

An optimizer never moves a parameter: ``p.data`` and ``p.grad`` stay the arrays they were. It
updates *runs*, stretches of parameters that lie one after another in one flat buffer (a model
flattened by npgpt.nn.flatten_parameters, as GPT and Transformer are, is one run), one update
call per run. Steps count from 1, and so do the schedules (see schedules.py).

What p.grad holds. ``clip_grad_norm`` keeps torch's meaning: the gradients are scaled when it
returns. ``step()`` never changes p.grad. ``step(grad_scale=c)`` updates with c * p.grad, as if
the gradients had been scaled first, and leaves p.grad as it was; ``step(zero_grad=True)`` leaves
every trainable p.grad 0. The Trainer uses ``step(grad_scale=clip_coef(norm, clip),
zero_grad=True)``: the clip and the zeroing folded into the update's one pass (clip.py).

    flat.py        runs: finding them, walking them in chunks
    groups.py      torch-style param groups; argument checks
    optimizer.py   what SGD and AdamW share: groups, runs, lr, zero_grad, state_dict checks
    sgd.py         sgd_update (the rule on flat arrays) and SGD
    adamw.py       adamw_update and AdamW
    clip.py        sum_squares, grad_norm, clip_coef and clip_grad_norm
    schedules.py   Constant, WarmupCosine, Noam
"""

from .adamw import AdamW, adamw_update
from .clip import clip_coef, clip_grad_norm, grad_norm, sum_squares
from .optimizer import Optimizer
from .schedules import Constant, Noam, WarmupCosine
from .sgd import SGD, sgd_update

__all__ = ["SGD", "AdamW", "Optimizer", "adamw_update", "sgd_update", "clip_grad_norm",
           "grad_norm", "clip_coef", "sum_squares", "Constant", "WarmupCosine", "Noam"]
