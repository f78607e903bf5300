"""A linear-probe video baseline: logistic regression on time-pooled video features.

Reported beside ``video_only`` so that a weak LSTM baseline cannot inflate a fill-in method's
gain (a linear probe on frozen features is the standard yardstick of a representation, e.g.
Radford et al., CLIP, 2021). Fitted with scikit-learn's ``LogisticRegression`` on the same
training clips the methods use; its inverse regularisation strength ``C`` is chosen on the
validation split (never the test split).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fedvida.training.metrics import macro_f1, topk_accuracy

if TYPE_CHECKING:
    from fedvida.features.cache import FeatureSet

C_GRID = (0.001, 0.01, 0.1, 1.0)


def pooled_video(fs: FeatureSet) -> np.ndarray:
    """(N, 2D) float64: the time-mean of the RGB and the flow features, concatenated."""
    rgb = np.asarray(fs.rgb, dtype=np.float64).mean(axis=1)
    flow = np.asarray(fs.flow, dtype=np.float64).mean(axis=1)
    return np.concatenate([rgb, flow], axis=1)


@dataclass
class ProbeResult:
    """Test metrics of the probe and its per-clip correctness on the missing-audio clips."""

    metrics: dict[str, float]
    correct: np.ndarray  # (N_test,) int8: 1/0 on missing-audio clips, -1 elsewhere
    c: float  # the chosen inverse regularisation strength
    preds: np.ndarray  # (N_test,) predicted classes


def linear_probe(
    train: FeatureSet, val: FeatureSet | None, test: FeatureSet, num_classes: int, seed: int = 0
) -> ProbeResult:
    """Fit the probe on `train` (C chosen on `val`, or C = 0.01 without it), score on `test`.

    Returns
    -------
    ProbeResult
        ``top1``, ``macro_f1``, ``top1_missing``, ``f1_missing`` (clips whose audio is withheld;
        the probe never uses audio, so it equals its accuracy there) and ``n_missing``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = pooled_video(train), np.asarray(train.labels)

    def fit(c: float) -> object:
        model = make_pipeline(StandardScaler(),
                              LogisticRegression(C=c, max_iter=2000, random_state=seed))
        return model.fit(x, y)

    best_c = 0.01
    if val is not None and len(val.relpaths) > 0:
        xv, yv = pooled_video(val), np.asarray(val.labels)
        scores = [(float((fit(c).predict(xv) == yv).mean()), -c) for c in C_GRID]  # type: ignore[attr-defined]
        best_c = -max(scores)[1]
    model = fit(best_c)
    xt, yt = pooled_video(test), np.asarray(test.labels)
    proba = np.zeros((len(yt), num_classes))
    proba[:, model.classes_] = model.predict_proba(xt)  # type: ignore[attr-defined]
    preds = proba.argmax(axis=1)
    metrics = {"top1": topk_accuracy(proba, yt, 1), "macro_f1": macro_f1(yt, preds, num_classes)}
    missing = np.asarray(test.audio_reason, dtype=object) == "withheld"
    correct = np.full(len(yt), -1, dtype=np.int8)
    if missing.any():
        metrics["top1_missing"] = topk_accuracy(proba[missing], yt[missing], 1)
        metrics["f1_missing"] = macro_f1(yt[missing], preds[missing], num_classes)
        metrics["n_missing"] = float(missing.sum())
        correct[missing] = (preds[missing] == yt[missing]).astype(np.int8)
    return ProbeResult(metrics=metrics, correct=correct, c=best_c, preds=preds)
