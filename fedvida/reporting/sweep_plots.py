"""PNG plots of a sweep (matplotlib, Agg backend), drawn from its ``summary.json`` document.

One figure per question: the metric per cell and method (every sweep), accuracy vs epsilon
(privacy), accuracy vs cumulative bytes with the centralised alternatives as reference lines
(communication), accuracy vs the share of audio withheld at training and at test time
(missing_audio). See `fedvida.reporting.sweep_report` for the document.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

_STYLES = ("-", "--", ":", "-.")
_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*")


def _colors(names: list[str]) -> dict[str, Any]:
    size = 10 if len(names) <= 10 else 20
    cmap = plt.get_cmap(f"tab{size}")
    return {n: cmap(i % size) for i, n in enumerate(names)}


def _methods(doc: dict[str, Any]) -> list[str]:
    return list(dict.fromkeys(m for c in doc["cells"] for m in c["methods"]))


def _cell_label(cell: dict[str, Any]) -> str:
    from fedvida.sweep import format_value, short_key

    vals = ", ".join(f"{short_key(k)}={format_value(v)}" for k, v in cell["values"].items())
    if cell["group"]:
        return f"{cell['group']}: {vals}" if vals else cell["group"]
    return vals or "base"


def _save(fig: Any, ax: Any, path: Path, outside: bool = False) -> Path:
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        if outside:  # many long labels: beside the axes, not over the lines
            ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        else:
            ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_metric_per_cell(doc: dict[str, Any], path: Path) -> Path | None:
    """Grouped bars: the final metric of every cell (x) and method (bars)."""
    metric, methods = doc["metric"], _methods(doc)
    cells = [c for c in doc["cells"] if c["methods"]]
    if not cells:
        return None
    fig, ax = plt.subplots(figsize=(max(6.4, 0.55 * len(cells) * max(1, len(methods)) + 2), 4))
    width = 0.8 / max(1, len(methods))
    colors = _colors(methods)
    for j, m in enumerate(methods):
        xs = [i + (j - (len(methods) - 1) / 2) * width for i in range(len(cells))]
        ys = [c["methods"].get(m, {}).get(metric) for c in cells]
        ax.bar(xs, [y if y is not None else 0.0 for y in ys], width, label=m, color=colors[m])
    ax.set_xticks(range(len(cells)), [str(c["index"]) for c in cells])
    ax.set_xlabel("cell (see the table in report.md)")
    ax.set_ylabel(f"test {metric} after the last round")
    ax.set_ylim(0, 1)
    ax.set_title(f"Sweep {doc['sweep']}: {metric} per cell")
    return _save(fig, ax, path)


def plot_accuracy_vs_epsilon(doc: dict[str, Any], path: Path) -> Path:
    """Final metric against epsilon, per method (colour) and clipping norm (line); no-DP cells
    as dashed horizontal lines."""
    metric, methods = doc["metric"], _methods(doc)
    colors = _colors(methods)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    any_eps = False
    for m in methods:
        series: dict[float, list[tuple[float, float]]] = {}
        for c in doc["cells"]:
            r, cf = c["methods"].get(m), c["config"]
            if not r or r.get(metric) is None:
                continue
            if cf["dp_mode"] == "off":
                ax.axhline(r[metric], color=colors[m], linestyle="--", linewidth=1,
                           label=f"{m}, no DP")
            elif r.get("epsilon") is not None:
                series.setdefault(cf["clipping_norm"], []).append((r["epsilon"], r[metric]))
        for i, (clip, pts) in enumerate(sorted(series.items())):
            pts.sort()
            ax.plot(*zip(*pts, strict=True), marker=_MARKERS[i % len(_MARKERS)],
                    linestyle=_STYLES[i % len(_STYLES)], color=colors[m],
                    label=f"{m}, clip {clip:g}")
            any_eps = True
    if any_eps:
        ax.set_xscale("log")
    ax.set_xlabel("epsilon after the last round (client-level, cumulative)")
    ax.set_ylabel(f"test {metric}")
    ax.set_title("Accuracy vs privacy budget")
    return _save(fig, ax, path)


def plot_accuracy_vs_bytes(doc: dict[str, Any], path: Path) -> Path:
    """Metric per round against cumulative MB (down + up), one line per cell and method, with
    the centralised alternatives' one-off upload as vertical lines."""
    metric = doc["metric"]
    fig, ax = plt.subplots(figsize=(10.0, 4.4))
    runs = [(c, m) for c in doc["cells"] for m in c["methods"]]
    colors = _colors([f"{c['index']}:{m}" for c, m in runs])
    for c, m in runs:
        pts = [((p["bytes_down"] + p["bytes_up"]) / 1e6, p[metric])
               for p in c["methods"][m]["curve"] if p.get(metric) is not None]
        if pts:
            cf = c["config"]
            ax.plot(*zip(*pts, strict=True), marker="o", markersize=3,
                    color=colors[f"{c['index']}:{m}"],
                    label=f"#{c['index']} {m} {cf['uplink']} [{'+'.join(cf['shared_prefixes'])}]")
    central = doc.get("centralised") or {}
    for (name, text), style in zip((("raw_clips", "raw clips"), ("features", "features")),
                                   (":", "-."), strict=True):
        if name in central:
            ax.axvline(central[name]["bytes"] / 1e6, color="black", linestyle=style,
                       linewidth=1, label=f"centralised: upload {text}")
    ax.set_xscale("log")
    ax.set_xlabel("cumulative MB moved (down + up)")
    ax.set_ylabel(f"test {metric}")
    ax.set_title("Accuracy vs communication")
    return _save(fig, ax, path, outside=True)


def plot_accuracy_vs_withheld(doc: dict[str, Any], path: Path) -> Path:
    """Final metric against the share of training clips withheld, per method and group."""
    metric, methods = doc["metric"], _methods(doc)
    colors = _colors(methods)
    groups = list(dict.fromkeys(c["group"] for c in doc["cells"]))
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    runs = {m: {c["run"] for c in doc["cells"] if m in c["methods"]} for m in methods}
    for gi, g in enumerate(groups):
        for m in methods:
            pts = sorted((c["plan"]["train_withheld_share"], c["methods"][m][metric])
                         for c in doc["cells"] if c["group"] == g and c["plan"]
                         and m in c["methods"] and c["methods"][m].get(metric) is not None)
            label = f"{m}, {g}" if g else m
            if len(runs[m]) == 1 and pts:  # a reference run (e.g. a method without audio)
                ax.axhline(pts[0][1], color=colors[m], linestyle="--", linewidth=1, label=label)
            elif pts:
                ax.plot(*zip(*pts, strict=True), marker=_MARKERS[gi % len(_MARKERS)],
                        linestyle=_STYLES[gi % len(_STYLES)], color=colors[m], label=label)
    ax.set_xlabel("share of training clips with audio withheld")
    ax.set_ylabel(f"test {metric}")
    ax.set_xlim(-0.03, 1.03)
    ax.set_title("Accuracy vs missing audio at training time")
    return _save(fig, ax, path)


def _point_value(label: str) -> float | None:
    try:
        return float(label.rpartition("=")[2])
    except ValueError:
        return None


def plot_test_time(doc: dict[str, Any], path: Path) -> Path | None:
    """One panel per method: metric against the test-time share withheld, a line per cell."""
    metric, methods = doc["metric"], _methods(doc)
    runs: dict[str, list[dict[str, Any]]] = {}  # cells sharing a run are one line
    for c in doc["cells"]:
        if c["evaluations"]:
            runs.setdefault(c["run"], []).append(c)
    if not runs or not methods:
        return None
    fig, axes = plt.subplots(1, len(methods), figsize=(4.2 * len(methods) + 3.2, 4.2),
                             squeeze=False, sharey=True)
    colors = _colors(list(runs))
    for ax, m in zip(axes[0], methods, strict=True):
        for run, cells in runs.items():
            pts = sorted((x, res[m][metric]) for label, res in cells[0]["evaluations"].items()
                         if (x := _point_value(label)) is not None and m in res
                         and res[m].get(metric) is not None)
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", markersize=3, color=colors[run],
                        label=" = ".join(_cell_label(c) for c in cells))
        ax.set_title(m, fontsize=9)
        ax.set_xlabel("share of test clips with audio withheld")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"test {metric}")
    legend: dict[str, Any] = {}
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    if legend:
        axes[0][-1].legend(list(legend.values()), list(legend), fontsize=6, title="trained on",
                           title_fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle("Accuracy vs missing audio at test time (same trained models)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_sweep(doc: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write every plot the sweep's kind calls for into ``out_dir``; returns name -> path."""
    out_dir = Path(out_dir)
    made: dict[str, Path | None] = {}
    kind = doc["kind"]
    if not any(c["methods"] for c in doc["cells"]):
        return {}
    if kind == "privacy":
        made["accuracy vs epsilon"] = plot_accuracy_vs_epsilon(
            doc, out_dir / "accuracy_vs_epsilon.png")
    elif kind == "communication":
        made["accuracy vs bytes"] = plot_accuracy_vs_bytes(doc, out_dir / "accuracy_vs_bytes.png")
    elif kind == "missing_audio":
        made["accuracy vs audio withheld (training)"] = plot_accuracy_vs_withheld(
            doc, out_dir / "accuracy_vs_withheld.png")
        made["accuracy vs audio withheld (test)"] = plot_test_time(
            doc, out_dir / "accuracy_vs_test_withheld.png")
    made[f"{doc['metric']} per cell"] = plot_metric_per_cell(doc, out_dir / "metric_per_cell.png")
    return {k: v for k, v in made.items() if v is not None}
