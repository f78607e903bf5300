"""The oracle-gap evaluation: how much of the accuracy that missing audio costs a method recovers.

On the test clips whose real audio exists but is withheld (``FeatureSet.audio_reason ==
"withheld"``), three levels are compared (docs/evaluation.md):

* the method's own fill-in: ``top1_missing`` of the method;
* video only: ``top1_missing`` of the ``video_only`` method on the same clips;
* the real audio (the oracle ceiling): ``top1_missing_oracle`` of ``gt_audio``, i.e. the
  ``gt_audio`` classifier given the withheld audio back;

and ``gap_closed = (method - video_only) / (real - video_only)`` (the share of the gap that the
method closes; 1 = as good as the real audio, 0 = no better than video only, negative = worse).
Same for macro-F1. Over several seeds, the mean +- std, and a paired bootstrap 95% CI of
(method - video_only) on those clips (clips resampled with replacement, the same resample for
both methods and every seed; Efron & Tibshirani, "An Introduction to the Bootstrap", 1993).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

VIDEO_REFERENCE = "video_only"
REAL_REFERENCE = "gt_audio"
PROBE = "linear_probe"
GAP_COLUMNS = ("top1 missing", "video only", "real audio", "gap closed", "F1 missing",
               "F1 video", "F1 real", "F1 gap", "d top1 w/ audio")  # the headers of `gap_table`


def gap_closed(method: float, video: float, real: float) -> float:
    """``(method - video) / (real - video)``; NaN when the gap is (numerically) zero or unknown."""
    if any(not np.isfinite(x) for x in (method, video, real)) or abs(real - video) < 1e-9:
        return float("nan")
    return (method - video) / (real - video)


def _get(metrics: Mapping[str, Any] | None, key: str) -> float:
    if not metrics or key not in metrics:
        return float("nan")
    return float(metrics[key])


def gap_row(method: str, results: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """The missing-audio row of one method, given every method's test metrics of one run.

    Returns
    -------
    dict
        ``top1_missing``, ``top1_video``, ``top1_real``, ``gap_closed`` and the same with
        ``f1_`` for macro-F1, and ``delta_with_audio`` (the method's top-1 on clips that keep
        their real audio minus gt_audio's); NaN where a reference method is not in the run.
    """
    own = results.get(method, {})
    video = results.get(VIDEO_REFERENCE)
    real = results.get(REAL_REFERENCE)
    row = {
        "top1_missing": _get(own, "top1_missing"),
        "top1_video": _get(video, "top1_missing"),
        "top1_real": _get(real, "top1_missing_oracle"),
        "f1_missing": _get(own, "f1_missing"),
        "f1_video": _get(video, "f1_missing"),
        "f1_real": _get(real, "f1_missing_oracle"),
        "delta_with_audio": _get(own, "top1_with_audio") - _get(real, "top1_with_audio"),
    }
    row["gap_closed"] = gap_closed(row["top1_missing"], row["top1_video"], row["top1_real"])
    row["f1_gap_closed"] = gap_closed(row["f1_missing"], row["f1_video"], row["f1_real"])
    return row


def gap_table(results: Mapping[str, Mapping[str, Any]],
              methods: Sequence[str] | None = None) -> list[list[Any]]:
    """Rows ``[method, *GAP_COLUMNS]`` for a run's methods (see `gap_row`)."""
    rows = []
    for m in methods or list(results):
        r = gap_row(m, results)
        rows.append([m, r["top1_missing"], r["top1_video"], r["top1_real"], r["gap_closed"],
                     r["f1_missing"], r["f1_video"], r["f1_real"], r["f1_gap_closed"],
                     r["delta_with_audio"]])
    return rows


def paired_bootstrap(
    method: np.ndarray, reference: np.ndarray, n_boot: int = 10_000, seed: int = 0
) -> tuple[float, float, float]:
    """Mean difference and 95% percentile CI of per-clip accuracy, method minus reference.

    Parameters
    ----------
    method, reference
        (S, N) 0/1 correctness of S seeds on the same N clips (paired by clip and seed).
    n_boot
        Bootstrap resamples of the N clips (the same resample for both and for every seed).
    seed
        Seed of the resampling.

    Returns
    -------
    tuple
        (mean difference, 2.5% quantile, 97.5% quantile).

    Raises
    ------
    ValueError
        When the shapes differ or there is no clip.
    """
    a = np.atleast_2d(np.asarray(method, dtype=np.float64))
    b = np.atleast_2d(np.asarray(reference, dtype=np.float64))
    if a.shape != b.shape or a.shape[1] == 0:
        raise ValueError(f"paired bootstrap needs equal non-empty shapes: {a.shape} / {b.shape}")
    diff = (a - b).mean(axis=0)  # (N,) per-clip difference averaged over seeds
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, diff.shape[0], size=(n_boot, diff.shape[0]))
    boots = diff[idx].mean(axis=1)
    lo, hi = np.quantile(boots, [0.025, 0.975])
    return float(diff.mean()), float(lo), float(hi)


def seed_summary(
    per_seed: Sequence[Mapping[str, Mapping[str, Any]]],
    correct: Sequence[Mapping[str, np.ndarray]],
    methods: Sequence[str],
) -> list[dict[str, Any]]:
    """Mean +- std over seeds of each method's gap row, and the paired bootstrap CI.

    Parameters
    ----------
    per_seed
        One ``{method: test metrics}`` per seed.
    correct
        One ``{method: (N_test,) int8}`` per seed: 1/0 on missing-audio clips, -1 elsewhere
        (`fedvida.training.central.correct_missing`).
    methods
        Methods to summarise, in order.

    Returns
    -------
    list[dict]
        Per method: ``method``, ``<key>_mean`` / ``<key>_std`` for every `gap_row` key, and
        ``diff`` / ``ci_low`` / ``ci_high`` (method - video_only on the missing clips; NaN when
        video_only is absent or for video_only itself).
    """
    out = []
    for m in methods:
        rows = [gap_row(m, results) for results in per_seed]
        entry: dict[str, Any] = {"method": m, "seeds": len(rows)}
        for key in rows[0]:
            vals = np.array([r[key] for r in rows], dtype=np.float64)
            finite = vals[np.isfinite(vals)]
            entry[f"{key}_mean"] = float(finite.mean()) if finite.size else float("nan")
            entry[f"{key}_std"] = float(finite.std(ddof=1)) if finite.size > 1 else float("nan")
        entry["diff"] = entry["ci_low"] = entry["ci_high"] = float("nan")
        if m != VIDEO_REFERENCE and all(m in c and VIDEO_REFERENCE in c for c in correct):
            mask = correct[0][m] >= 0
            a = np.stack([c[m][mask] for c in correct])
            b = np.stack([c[VIDEO_REFERENCE][mask] for c in correct])
            if a.size:
                entry["diff"], entry["ci_low"], entry["ci_high"] = paired_bootstrap(a, b)
        out.append(entry)
    return out


def caption_label_agreement(
    captions: Sequence[str], labels: np.ndarray, class_names: Sequence[str], dictionary: Any,
    model_name: str, k: int = 3,
) -> dict[str, float]:
    """How often CAFMap's condition names a sound of the clip's true class.

    A clip *agrees* when one of its caption's top-`k` AudioSet labels (the labels CAFMap
    conditions on) is among the dictionary's top labels of the clip's true action. ``chance``
    is the same rate against a uniformly random other class: an informative condition agrees
    far more often with the true class than with a random one.

    Returns
    -------
    dict
        ``agreement``, ``chance`` and ``clips`` (clips with a non-empty caption).
    """
    from fedvida.training.data import caption_condition

    cond = caption_condition(list(captions), dictionary, model_name, k=k)  # (N, 527)
    rows = np.asarray(dictionary.indices(list(class_names)))
    top = np.asarray(dictionary.topk_indices)[rows]  # (C, k_dict)
    named = cond > 0
    has = named.any(axis=1)
    if not has.any():
        return {"agreement": float("nan"), "chance": float("nan"), "clips": 0.0}
    hits = np.array([named[i, top[y]].any() for i, y in enumerate(labels)])
    c = len(class_names)
    others = np.array([np.mean([named[i, top[o]].any() for o in range(c) if o != y])
                       for i, y in enumerate(labels)]) if c > 1 else np.zeros(len(labels))
    return {"agreement": float(hits[has].mean()), "chance": float(others[has].mean()),
            "clips": float(has.sum())}
