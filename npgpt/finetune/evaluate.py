"""Evaluation of a classifier: accuracy, per-class precision / recall / F1, the confusion matrix.

    report = evaluate(clf, idx, pad, labels, classes)     # a dict of plain JSON values
    print(format_report(report))
"""

from __future__ import annotations

import numpy as np

from .classifier import GPTClassifier, _check_labels
from .data import classification_batches


def classification_report(y_true, y_pred, classes) -> dict:
    """Accuracy, per-class precision / recall / F1 and the confusion matrix, as plain JSON values.

        precision_k = TP_k / (predicted k)     recall_k = TP_k / (truly k)
        F1_k = 2 precision_k recall_k / (precision_k + recall_k)      (0 where a denominator is 0)
        confusion[i][j] = how many examples of class i were predicted as class j

    y_true, y_pred: int (N,) class ids in [0, len(classes)); classes: the class names.
    """
    classes = [str(c) for c in classes]
    K = len(classes)
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"{name} has shape {y.shape} and dtype {y.dtype}: expected int class ids (N,)")
        if y.size and (y.min() < 0 or y.max() >= K):
            bad = int(y.min()) if y.min() < 0 else int(y.max())
            raise ValueError(f"{name} contains label id {bad}: expected ids in [0, {K}) of the "
                             f"classes {classes}")
    if y_true.shape != y_pred.shape or not y_true.size:
        raise ValueError(f"y_true has shape {y_true.shape} and y_pred {y_pred.shape}: expected one "
                         f"non-empty shape")
    confusion = np.zeros((K, K), dtype=np.int64)
    np.add.at(confusion, (y_true, y_pred), 1)
    tp = np.diag(confusion).astype(np.float64)
    predicted, actual = confusion.sum(axis=0), confusion.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros(K), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros(K), where=actual > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(K),
                   where=precision + recall > 0)
    return {
        "n": int(y_true.size),
        "accuracy": float(tp.sum() / y_true.size),
        "macro_f1": float(f1.mean()),
        "classes": classes,
        "per_class": {c: {"precision": float(precision[k]), "recall": float(recall[k]),
                          "f1": float(f1[k]), "support": int(actual[k])} for k, c in enumerate(classes)},
        "confusion": confusion.tolist(),
    }


def format_report(report: dict) -> str:
    """A classification_report as a small text table: per-class scores, then the confusion matrix."""
    classes = report["classes"]
    w = max(9, *(len(c) for c in classes))
    lines = [f"{'class':<{w}}  precision  recall     f1  support"]
    for c in classes:
        r = report["per_class"][c]
        lines.append(f"{c:<{w}}  {r['precision']:9.3f}  {r['recall']:6.3f}  {r['f1']:5.3f}  "
                     f"{r['support']:7d}")
    lines.append(f"{'accuracy':<{w}}  {report['accuracy']:9.3f}  (n={report['n']}, macro F1 "
                 f"{report['macro_f1']:.3f})")
    cw = max(6, *(len(c) for c in classes))
    lines += ["", "confusion (rows: true, columns: predicted)",
              f"{'':<{w}}  " + "  ".join(f"{c:>{cw}}" for c in classes)]
    for c, row in zip(classes, report["confusion"]):
        lines.append(f"{c:<{w}}  " + "  ".join(f"{v:>{cw}d}" for v in row))
    return "\n".join(lines)


def evaluate(clf: GPTClassifier, idx, pad, labels, classes, batch_size: int = 64) -> dict:
    """classification_report of clf's predictions on (idx, pad, labels), in eval mode (no dropout;
    the mode is restored), plus the mean classification loss as "loss"."""
    labels = _check_labels(np.asarray(labels), len(idx), len(classes))
    if clf.n_classes != len(classes):
        raise ValueError(f"classes has {len(classes)} names: expected the classifier's n_classes="
                         f"{clf.n_classes}")
    was_training = clf.training
    clf.eval()
    try:
        preds, total = [], 0.0
        for x, p, y in classification_batches(idx, pad, labels, batch_size):
            logits, _ = clf.forward(x, pad=p)
            preds.append(logits.argmax(axis=-1))
            total += clf.loss_fn.forward(logits, y) * len(y)
    finally:
        clf.train(was_training)
    report = classification_report(labels, np.concatenate(preds), classes)
    report["loss"] = total / len(labels)
    return report
