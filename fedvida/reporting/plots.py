"""PNG plots of a federated run: accuracy per round per method, and bytes per round."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_run(run_dir: Path, rounds: dict[str, list[dict[str, Any]]]) -> dict[str, Path]:
    """Write ``plots/missing_audio.png``, ``plots/gap_closed.png`` (when measured),
    ``plots/accuracy.png`` and ``plots/bytes.png``; returns name -> path.

    Parameters
    ----------
    run_dir
        The run folder.
    rounds
        Per method, its metric lines in round order (see `fedvida.reporting.runlog`).
    """
    from fedvida.reporting.missing import plot_missing_rounds
    from fedvida.reporting.runlog import server_metrics_by_round

    out_dir = Path(run_dir) / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = dict(plot_missing_rounds(rounds, out_dir))  # the first plots

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for method, lines in rounds.items():
        pts = [(r, m["top1"]) for r, m in server_metrics_by_round(lines).items() if "top1" in m]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o", label=method)
    paths["accuracy"] = save_figure(fig, ax, out_dir / "accuracy.png", "round",
                                    "test top-1 (global model)", "Accuracy per round", 8)

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for method, lines in rounds.items():
        r = [ln["round"] for ln in lines]
        ax.plot(r, [ln.get("bytes_down", 0) / 1e6 for ln in lines], marker="v",
                label=f"{method} down")
        ax.plot(r, [ln.get("bytes_up", 0) / 1e6 for ln in lines], marker="^", linestyle="--",
                label=f"{method} up")
    paths["bytes"] = save_figure(fig, ax, out_dir / "bytes.png", "round",
                                 "MB per round (serialized messages)", "Communication per round")
    return paths


def save_figure(fig: Any, ax: Any, path: Path, xlabel: str, ylabel: str, title: str,
                legend_size: int = 7) -> Path:
    """Label, grid and legend (when anything is labelled) a per-round plot; write and close it."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=legend_size)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
