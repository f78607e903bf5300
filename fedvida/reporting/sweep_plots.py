"""PNG plots of a sweep (matplotlib, Agg backend), drawn from its ``summary.json`` document.

The helpers every plot shares and the plot every sweep has (the metric per cell and method); the
plots of a report kind (accuracy vs epsilon, vs bytes, vs audio withheld) live in its module of
`fedvida.reporting.sweep_kinds`. See `fedvida.reporting.sweep_report` for the document.
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


def plot_sweep(doc: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write every plot the sweep's kind calls for into ``out_dir``; returns name -> path."""
    out_dir = Path(out_dir)
    from fedvida.reporting.sweep_kinds import report_kind

    made: dict[str, Path | None] = {}
    if not any(c["methods"] for c in doc["cells"]):
        return {}
    kind = report_kind(doc["kind"])
    if kind.plots is not None:
        made.update(kind.plots(doc, out_dir))
    made[f"{doc['metric']} per cell"] = plot_metric_per_cell(doc, out_dir / "metric_per_cell.png")
    return {k: v for k, v in made.items() if v is not None}
