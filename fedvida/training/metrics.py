"""Classification metrics from predictions: top-k accuracy, macro-F1, confusion matrix; and the
validation scores that choose the late-fusion fill-in weight (pure numpy, also read by reports)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

FILL_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
"""Candidate late-fusion weights of the audio head on fill-ins (generated, prototype audio)."""


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts; row = true class, column = predicted class."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (labels.astype(np.int64), preds.astype(np.int64)), 1)
    return cm


def macro_f1(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> float:
    """Unweighted mean of the per-class F1 over the classes present in labels or predictions."""
    cm = confusion_matrix(labels, preds, num_classes)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    active = (support + predicted) > 0
    if not active.any():
        return 0.0
    f1 = np.where(active, 2 * tp / np.maximum(support + predicted, 1), 0.0)
    return float(f1[active].mean())


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Share of rows whose label is among the k largest logits (k capped at the class count)."""
    if len(labels) == 0:
        return float("nan")
    k = min(k, logits.shape[1])
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]  # (N, k)
    return float((top == labels[:, None]).any(axis=1).mean())


def best_fill_weight(scores: Mapping[str, float]) -> float | None:
    """The weight of `FILL_WEIGHTS` with the lowest fill-in cross-entropy on validation clips.

    `scores` holds ``val_fill_ce@w`` per weight (`fedvida.training.local.fill_weight_scores`,
    or clients' scores pooled by `pool_fill_scores`). Ties go to the smaller weight. Choosing
    a scale of logits by validation cross-entropy is temperature scaling's rule (Guo et al.,
    "On calibration of modern neural networks", ICML 2017). None when no weight has a finite
    score (no validation clip without real audio).
    """
    ces = [(float(scores.get(f"val_fill_ce@{w:g}", float("nan"))), w) for w in FILL_WEIGHTS]
    finite = [(c, w) for c, w in ces if np.isfinite(c)]
    return min(finite)[1] if finite else None


def pool_fill_scores(per_client: Iterable[Mapping[str, float]]) -> dict[str, float] | None:
    """Clients' fill-weight validation scores pooled as if their clips were one split.

    Each client's mapping holds ``val_top1@w`` and ``val_fill_ce@w`` per weight,
    ``val-examples`` and ``val-missing`` (its validation clips, and those without real audio).
    ``val_top1@w`` is pooled weighted by ``val-examples``, ``val_fill_ce@w`` by ``val-missing``
    (clients with none are skipped). Returns the same keys (counts summed) plus
    ``fill_weight``, the `best_fill_weight` of the pooled scores (absent when undefined), or
    None when no client reported fill-weight scores.
    """
    rows = [m for m in per_client if f"val_top1@{FILL_WEIGHTS[0]:g}" in m]
    if not rows:
        return None
    examples = [float(m.get("val-examples", 0.0)) for m in rows]
    missing = [float(m.get("val-missing", 0.0)) for m in rows]
    out: dict[str, float] = {"val-examples": float(sum(examples)),
                             "val-missing": float(sum(missing))}
    for w in FILL_WEIGHTS:
        top = [(float(m[f"val_top1@{w:g}"]), n) for m, n in zip(rows, examples, strict=True)
               if n > 0 and np.isfinite(float(m[f"val_top1@{w:g}"]))]
        ce = [(float(m.get(f"val_fill_ce@{w:g}", float("nan"))), n)
              for m, n in zip(rows, missing, strict=True)]
        ce = [(c, n) for c, n in ce if n > 0 and np.isfinite(c)]
        out[f"val_top1@{w:g}"] = (sum(v * n for v, n in top) / sum(n for _, n in top)
                                  if top else float("nan"))
        out[f"val_fill_ce@{w:g}"] = (sum(c * n for c, n in ce) / sum(n for _, n in ce)
                                     if ce else float("nan"))
    best = best_fill_weight(out)
    if best is not None:
        out["fill_weight"] = best
    return out
