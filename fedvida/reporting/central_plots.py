"""Figures of the centralised comparison (matplotlib, Agg backend, PNG files)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_comparison(metrics: dict[str, dict[str, float]], path: Path) -> None:
    """Grouped bars: top-1 overall, on clips with and without real audio, per method.

    Parameters
    ----------
    metrics
        method -> test metrics (as returned by `evaluate`).
    path
        PNG file to write.
    """
    plt = _pyplot()
    keys = [("top1", "all clips"), ("top1_with_audio", "with audio"),
            ("top1_without_audio", "without audio"), ("macro_f1", "macro-F1")]
    methods = list(metrics)
    x = np.arange(len(methods))
    width = 0.8 / len(keys)
    fig, ax = plt.subplots(figsize=(1.8 * len(methods) + 2, 4))
    for i, (key, label) in enumerate(keys):
        vals = [metrics[m].get(key, np.nan) for m in methods]
        ax.bar(x + (i - (len(keys) - 1) / 2) * width, vals, width, label=label)
    ax.set_xticks(x, methods)
    ax.set_ylabel("test score")
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("Five methods, same data and split")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusions(
    confusions: dict[str, np.ndarray], classes: Sequence[str], path: Path
) -> None:
    """One row-normalised confusion matrix per method, side by side."""
    plt = _pyplot()
    n = len(confusions)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.8), squeeze=False)
    for ax, (method, cm) in zip(axes[0], confusions.items(), strict=True):
        rows = cm.sum(axis=1, keepdims=True)
        norm = cm / np.maximum(rows, 1)
        ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
        ax.set_title(method, fontsize=9)
        ticks = np.arange(len(classes))
        ax.set_xticks(ticks, [c[:10] for c in classes], rotation=90, fontsize=6)
        ax.set_yticks(ticks, [c[:10] for c in classes], fontsize=6)
        ax.set_xlabel("predicted", fontsize=7)
    axes[0][0].set_ylabel("true", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_svdmap_sweep(metrics: dict[str, float], path: Path) -> None:
    """SVDMap top-1 and retention against the threshold."""
    plt = _pyplot()
    thr = sorted(float(k.split("@")[1]) for k in metrics if k.startswith("svdmap_top1@"))
    if not thr:
        return
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(thr, [metrics[f"svdmap_top1@{t:g}"] for t in thr], "o-", label="top-1")
    ax.plot(thr, [metrics[f"svdmap_retention@{t:g}"] for t in thr], "s--", label="retention")
    ax.set_xlabel("SVDMap threshold")
    ax.set_ylim(0, 1)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
