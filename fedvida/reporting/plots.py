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

    out_dir = Path(run_dir) / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = dict(plot_missing_rounds(rounds, out_dir))  # the first plots

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for method, lines in rounds.items():
        pts = [(ln["round"], ln["server"]["top1"]) for ln in lines
               if ln.get("server") and "top1" in ln["server"]]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o", label=method)
    ax.set_xlabel("round")
    ax.set_ylabel("test top-1 (global model)")
    ax.set_title("Accuracy per round")
    ax.grid(alpha=0.3)
    if rounds:
        ax.legend(fontsize=8)
    fig.tight_layout()
    paths["accuracy"] = out_dir / "accuracy.png"
    fig.savefig(paths["accuracy"], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for method, lines in rounds.items():
        r = [ln["round"] for ln in lines]
        ax.plot(r, [ln.get("bytes_down", 0) / 1e6 for ln in lines], marker="v",
                label=f"{method} down")
        ax.plot(r, [ln.get("bytes_up", 0) / 1e6 for ln in lines], marker="^", linestyle="--",
                label=f"{method} up")
    ax.set_xlabel("round")
    ax.set_ylabel("MB per round (serialized messages)")
    ax.set_title("Communication per round")
    ax.grid(alpha=0.3)
    if rounds:
        ax.legend(fontsize=7)
    fig.tight_layout()
    paths["bytes"] = out_dir / "bytes.png"
    fig.savefig(paths["bytes"], dpi=100)
    plt.close(fig)
    return paths
