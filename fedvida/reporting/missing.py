"""The missing-audio table (oracle gap) and its plots, shared by every report.

Every report of fedvida leads with this table: for each method, top-1 on the test clips whose
real audio is withheld, video only and the real audio on the same clips, the share of that gap
the method closes, the same for macro-F1, and the change on clips that keep their real audio
(against gt_audio). See `fedvida.training.evaluation` and docs/evaluation.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedvida.training.evaluation import (
    GAP_COLUMNS,
    PROBE,
    REAL_REFERENCE,
    VIDEO_REFERENCE,
    gap_closed,
    gap_table,
)

HEADER = ["method", *GAP_COLUMNS]
CAPTION = ("On the test clips whose real audio is withheld: the method's fill-in, video_only "
           "and gt_audio given the real audio back on the same clips; gap closed = (method - "
           "video) / (real - video); d top1 w/ audio = top-1 on clips that keep their real "
           "audio minus gt_audio's.")


def missing_rows(results: Mapping[str, Mapping[str, Any]],
                 methods: Sequence[str] | None = None) -> list[list[Any]]:
    """Rows of `HEADER` (NaN shown as '-'); the linear probe, when present, as its own row."""
    names = [m for m in (methods or list(results)) if m in results and m != PROBE]
    rows = [[_cell(v) for v in row] for row in gap_table(results, names)]
    if PROBE in results:
        probe = gap_table(results, [PROBE])[0]
        probe[-1] = float("nan")  # the probe has no audio: no "with audio" change
        rows.append([_cell(v) for v in probe])
    return rows


def _cell(value: Any) -> Any:
    if isinstance(value, float) and not np.isfinite(value):
        return "-"
    return value


def _n_missing(results: Mapping[str, Mapping[str, Any]]) -> int | None:
    """Missing-audio clips of a run's evaluation (None when nothing was measured on them)."""
    if not any("top1_missing" in r for r in results.values()):
        return None
    return next((int(r["n_missing"]) for r in results.values() if "n_missing" in r), 0)


def markdown(results: Mapping[str, Mapping[str, Any]], methods: Sequence[str] | None = None,
             title: str = "Missing audio: the oracle gap") -> list[str]:
    """Markdown lines: a heading, the caption, the table (empty when nothing was measured)."""
    from fedvida.reporting.runlog import markdown_table

    n = _n_missing(results)
    if n is None:
        return []
    return [f"## {title} ({n} test clips)", "", CAPTION, "",
            *markdown_table(HEADER, missing_rows(results, methods)), ""]


def print_missing(results: Mapping[str, Mapping[str, Any]], title: str,
                  methods: Sequence[str] | None = None) -> None:
    """Print the table on the terminal (nothing when no missing-audio metric exists)."""
    from fedvida.reporting.console import print_table

    n = _n_missing(results)
    if n is None:
        return
    print_table(f"{title}: {n} test clips whose real audio is withheld", HEADER,
                missing_rows(results, methods), caption=CAPTION)


def plot_missing_bars(results: Mapping[str, Mapping[str, Any]], path: Path) -> None:
    """Bars of top-1 on the missing-audio clips per method, video-only and real-audio lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [m for m in results if "top1_missing" in results[m]]
    fig, ax = plt.subplots(figsize=(1.3 * len(methods) + 2.5, 3.8))
    ax.bar(np.arange(len(methods)), [results[m]["top1_missing"] for m in methods],
           color="tab:blue")
    _levels(ax, results.get(VIDEO_REFERENCE, {}).get("top1_missing"),
            results.get(REAL_REFERENCE, {}).get("top1_missing_oracle"))
    ax.set_xticks(np.arange(len(methods)), methods, fontsize=8)
    ax.set_ylabel("top-1 on clips whose audio is missing")
    ax.set_ylim(0, 1)
    ax.set_title("Missing audio: each method vs video only and the real audio")
    if ax.get_legend_handles_labels()[0]:  # the reference lines, when their runs are here
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _levels(ax: Any, video: float | None, real: float | None) -> None:
    if video is not None:
        ax.axhline(video, color="tab:red", linestyle="--", label=f"video only {video:.3f}")
    if real is not None:
        ax.axhline(real, color="tab:green", linestyle="--", label=f"real audio {real:.3f}")


def plot_missing_rounds(rounds: Mapping[str, list[dict[str, Any]]], out_dir: Path) -> dict[
        str, Path]:
    """Per round: top-1 on missing-audio clips per method (video-only and real-audio levels of
    the same round as lines), and gap closed per method. Returns name -> path (none written when
    the run has no missing-audio metric)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fedvida.reporting.plots import save_figure
    from fedvida.reporting.runlog import server_metrics_by_round

    def series(method: str, key: str) -> dict[int, float]:
        by_round = server_metrics_by_round(rounds.get(method, []))  # at the chosen fill weight
        return {r: float(m[key]) for r, m in by_round.items() if key in m}

    if not any(series(m, "top1_missing") for m in rounds):
        return {}
    video, real = series(VIDEO_REFERENCE, "top1_missing"), \
        series(REAL_REFERENCE, "top1_missing_oracle")
    paths: dict[str, Path] = {}
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for method in rounds:
        pts = series(method, "top1_missing")
        if pts and method != VIDEO_REFERENCE:
            ax.plot(list(pts), list(pts.values()), marker="o", label=method)
    if video:
        ax.plot(list(video), list(video.values()), "r--", label="video only")
    if real:
        ax.plot(list(real), list(real.values()), "g--", label="real audio (gt_audio oracle)")
    paths["missing_audio"] = save_figure(fig, ax, out_dir / "missing_audio.png", "round",
                                         "top-1 on clips whose audio is missing",
                                         "Missing audio per round")
    if video and real:
        fig, ax = plt.subplots(figsize=(6.4, 4.0))
        for method in rounds:
            pts = series(method, "top1_missing")
            gaps = {r: gap_closed(v, video[r], real[r]) for r, v in pts.items()
                    if r in video and r in real}
            if gaps and method not in (VIDEO_REFERENCE,):
                ax.plot(list(gaps), list(gaps.values()), marker="o", label=method)
        ax.axhline(0.0, color="tab:red", linestyle="--", linewidth=0.8)
        ax.axhline(1.0, color="tab:green", linestyle="--", linewidth=0.8)
        paths["gap_closed"] = save_figure(fig, ax, out_dir / "gap_closed.png", "round",
                                          "gap closed",
                                          "Share of the video-only -> real-audio gap closed")
    return paths


SEED_HEADER = ["method", "top1 missing", "video only", "real audio", "gap closed",
               "vs video_only [95% CI]", "F1 missing", "F1 gap", "d top1 w/ audio"]
SEED_CAPTION = ("mean +- std over seeds on the test clips whose real audio is withheld; CI: "
                "paired bootstrap over clips (seeds averaged per clip) of (method - video_only); "
                "d top1 w/ audio: top-1 on clips that keep real audio minus gt_audio's.")


def seed_rows(summary: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    """Rows of `SEED_HEADER` from `fedvida.training.evaluation.seed_summary`."""

    def pm(e: Mapping[str, Any], key: str) -> str:
        mean, std = e[f"{key}_mean"], e[f"{key}_std"]
        if not np.isfinite(mean):
            return "-"
        return f"{mean:.3f}" + (f" +- {std:.3f}" if np.isfinite(std) else "")

    rows = []
    for e in summary:
        ci = "-" if not np.isfinite(e["diff"]) else \
            f"{e['diff']:+.3f} [{e['ci_low']:+.3f}, {e['ci_high']:+.3f}]"
        rows.append([str(e["method"]), pm(e, "top1_missing"), pm(e, "top1_video"),
                     pm(e, "top1_real"), pm(e, "gap_closed"), ci, pm(e, "f1_missing"),
                     pm(e, "f1_gap_closed"), pm(e, "delta_with_audio")])
    return rows
