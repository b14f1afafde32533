"""The classification head of GPT-1 (Radford et al., 2018): a class read off the hidden state of
each sequence's last real token, with an optional auxiliary language-modelling loss.

    clf = GPTClassifier(gpt, n_classes=2, aux_lm_weight=0.5)
    logits, loss = clf.forward(idx, labels, pad)      # logits (B, n_classes)
    clf.backward()                                   # the head, then the GPT (gpt.backward(dh=...))

The GPT's parameters are the classifier's, named "gpt." + their GPT name; the head's are
head.weight and head.bias.
"""

from __future__ import annotations

import math

import numpy as np

from ..models.gpt import GPT
from ..nn import CrossEntropyLoss, Linear, Module
from ..nn.validate import check_array, check_ids
from .freeze import frozen_below


def last_token_index(pad, shape) -> np.ndarray:
    """The position of the last real token of each sequence: (B,) int64.

    pad: bool (B, T), True at padded positions, right padding only (every pad after every real
    token), or None for no padding (every row ends at T - 1). A row of all padding, or a real
    token after a pad, is an error that names the row.
    """
    B, T = shape
    if T < 1:
        raise ValueError(f"idx has shape {tuple(shape)}: expected at least one position per sequence")
    if pad is None:
        return np.full(B, T - 1, dtype=np.int64)
    check_array("pad", pad, shape=(B, T))
    if pad.dtype != np.bool_:
        raise TypeError(f"pad has dtype {pad.dtype}: expected bool (True at padded positions)")
    empty = np.flatnonzero(pad[:, 0])
    if empty.size:
        raise ValueError(f"pad row {int(empty[0])} is all padding: expected at least one real token "
                         f"per sequence (rows {empty[:8].tolist()})")
    left = np.argwhere(pad[:, :-1] & ~pad[:, 1:])              # a pad followed by a real token
    if left.size:
        b, t = left[0]
        raise ValueError(f"pad row {b} has a real token at position {t + 1} after padding at {t}: "
                         f"expected right padding (the real tokens first)")
    return (T - pad.sum(axis=1) - 1).astype(np.int64)


def next_token_targets(idx, pad=None, ignore_index: int = -100) -> np.ndarray:
    """The language-modelling targets of the text itself: targets[b, t] = idx[b, t + 1], ignored
    (ignore_index) at the last position and wherever the next token is padding."""
    targets = np.full(idx.shape, ignore_index, dtype=np.int64)
    targets[:, :-1] = idx[:, 1:]
    if pad is not None:
        targets[:, :-1][pad[:, 1:]] = ignore_index
    return targets


class GPTClassifier(Module):
    """A GPT with a classification head on the hidden state of each sequence's last real token.

        h      = gpt.forward_hidden(idx)               (B, T, C)   after ln_f
        f_b    = h[b, last_b]                          (B, C)      last_b: before the first pad
        logits = f @ W_cls + b_cls                     (B, K)
        loss   = CE(logits, labels) + aux_lm_weight * CE_lm(h @ W_te^T, next tokens)

    The causal mask means the last real token has seen the whole text and no padding, so padded
    rows need no attention mask. The auxiliary language-modelling loss on the same text (GPT-1
    used 0.5) keeps the model a language model while it learns the task; it ignores padding.
    The head (W_cls ~ N(0, 0.02^2), b_cls = 0, drawn from `seed`) is named head.weight, head.bias;
    the GPT's parameters are gpt.wte.weight, ...
    """

    def __init__(self, model: GPT, n_classes: int, aux_lm_weight: float = 0.0, seed: int = 0):
        super().__init__()
        if not isinstance(model, GPT):
            raise TypeError(f"GPTClassifier: model is a {type(model).__name__}: expected a GPT")
        if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 2:
            raise ValueError(f"GPTClassifier: n_classes={n_classes!r}: expected an int >= 2")
        if isinstance(aux_lm_weight, bool) or not isinstance(aux_lm_weight, (int, float, np.number)) \
                or not (math.isfinite(aux_lm_weight) and aux_lm_weight >= 0):
            raise ValueError(f"GPTClassifier: aux_lm_weight={aux_lm_weight!r}: expected a finite number >= 0")
        cfg = model.config
        self.gpt = model
        self.n_classes, self.aux_lm_weight = int(n_classes), float(aux_lm_weight)
        self.head = Linear(cfg.n_embd, self.n_classes, dtype=cfg.dtype, rng=np.random.default_rng(seed))
        self.loss_fn = CrossEntropyLoss()
        self.lm_loss_fn = CrossEntropyLoss()
        self.losses = {}          # the parts of the last forward's loss: {"cls": ..., "lm": ...}
        self._state = None        # (h.shape, last, aux used) of the last forward

    def forward(self, idx, labels=None, pad=None):
        """idx: int (B, T); labels: int (B,) in [0, n_classes) or None; pad: bool (B, T) or None.
        Returns (logits (B, n_classes), loss or None)."""
        idx = check_ids("idx", idx, self.gpt.config.vocab_size, ndim=2)
        B, T = idx.shape
        last = last_token_index(pad, (B, T))
        h = self.gpt.forward_hidden(idx)                                # (B, T, C)
        logits = self.head.forward(h[np.arange(B), last])               # (B, C) -> (B, K)
        aux = labels is not None and self.aux_lm_weight > 0
        self._state = (h.shape, last, aux)
        if labels is None:
            self.losses = {}
            return logits, None
        labels = _check_labels(labels, B, self.n_classes)
        loss = self.loss_fn.forward(logits, labels)
        self.losses = {"cls": loss}
        if aux:
            lm_logits = self.gpt.lm_head.forward(h)                     # (B, T, V), the LM head
            self.losses["lm"] = self.lm_loss_fn.forward(lm_logits, next_token_targets(idx, pad))
            loss = loss + self.aux_lm_weight * self.losses["lm"]
        return logits, loss

    def backward(self, dlogits=None):
        """The chain rule from the loss of the last forward (which must have had labels), or from
        an upstream gradient dlogits (B, n_classes) of the class logits alone. Returns None."""
        if self._state is None:
            raise RuntimeError("GPTClassifier.backward: no forward to differentiate")
        shape, last, aux = self._state
        if dlogits is None:
            if "cls" not in self.losses:
                raise RuntimeError("GPTClassifier.backward() without dlogits needs a forward with labels")
            dlogits = self.loss_fn.backward(1.0)                        # (B, K), mean over B
        else:
            check_array("dlogits", dlogits, dtype=self.head.weight.dtype, shape=(shape[0], self.n_classes))
            aux = False
        dfeat = self.head.backward(dlogits)                             # (B, C)
        dh = np.zeros(shape, dtype=dfeat.dtype)
        dh[np.arange(shape[0]), last] = dfeat         # forward: f_b = h[b, last_b], a gather
        dlm = self.lm_loss_fn.backward(self.aux_lm_weight) if aux else None   # d(w * CE_lm)/d lm_logits
        # the GPT from h down (and from the LM head, which h also fed); a frozen bottom is skipped
        self.gpt.backward(dlm, dh=dh, frozen_below=frozen_below(self.gpt))
        return None

    def predict(self, idx, pad=None) -> np.ndarray:
        """The most likely class of each sequence: int64 (B,)."""
        logits, _ = self.forward(idx, pad=pad)
        return logits.argmax(axis=-1)

    def extra_repr(self):
        return f"n_classes={self.n_classes}, aux_lm_weight={self.aux_lm_weight:g}"


def _check_labels(labels, B: int, n_classes: int) -> np.ndarray:
    if not isinstance(labels, np.ndarray) or not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"labels is a {type(labels).__name__} of dtype {getattr(labels, 'dtype', None)}: "
                        f"expected an integer array of class ids")
    if labels.shape != (B,):
        raise ValueError(f"labels has shape {labels.shape}: expected ({B},), one class id per sequence")
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        bad = int(labels.min()) if labels.min() < 0 else int(labels.max())
        raise ValueError(f"labels contains {bad}: expected class ids in [0, {n_classes})")
    return labels.astype(np.int64, copy=False)
