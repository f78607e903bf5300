"""Report kind ``missing_audio``: accuracy against the share of training clips whose audio is
withheld (per clip / per client groups, with the actual share read from each plan and a check
that the plans are nested), and against the test-time share (the cells' evaluation points)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedvida.reporting.runlog import markdown_table
from fedvida.reporting.sweep_kinds import ReportKind
from fedvida.reporting.sweep_report import _f, _values, nested_withholding, plan_stats

if TYPE_CHECKING:
    from fedvida.sweep import Sweep


def summarize(sweep: Sweep) -> dict[str, Any]:
    """Per group: whether its plans are nested."""
    return {"nested": _nesting(sweep)}


def _nesting(sweep: Sweep) -> dict[str, bool | None]:
    """Per group: are its plans nested when ordered by the cell's withheld share?"""
    from fedvida.data.partition import Plan

    out: dict[str, bool | None] = {}
    for group in dict.fromkeys(c.group for c in sweep.cells):
        paths = list(dict.fromkeys(c.plan_path for c in sweep.cells if c.group == group))
        if not all(p.is_file() for p in paths):
            out[group] = None
            continue
        plans = [Plan.load(p) for p in paths]
        plans.sort(key=lambda p: plan_stats(p)["train_withheld_share"])
        out[group] = nested_withholding(plans)
    return out


def _missing_audio_section(doc: dict[str, Any]) -> list[str]:
    metric = doc["metric"]
    rows = []
    for c in doc["cells"]:
        plan = c["plan"] or {}
        for m, r in c["methods"].items():
            rows.append([c["group"] or "-", _values(c),
                         _f(plan.get("train_withheld_share"), 2),
                         f"{plan.get('clients_without_audio', '-')}/{plan.get('clients', '-')}",
                         _f(plan.get("test_withheld_share"), 2), m, _f(r.get(metric)),
                         _f(r.get("top1_with_audio")), _f(r.get("top1_without_audio"))])
    out = ["## Accuracy vs audio withheld at training time", "",
           "train held = share of training clips whose audio the plan withholds (actual, from "
           "the cell's plan); no-audio clients = clients all of whose clips are withheld; "
           "test held = share withheld on the server's test split.", ""]
    out += markdown_table(["group", "values", "train held", "no-audio clients", "test held",
                           "method", metric, "top1 w/ audio", "top1 w/o audio"], rows)
    nested = doc.get("nested") or {}
    if nested:
        out += ["", "Plans nested (same clips per client; every clip withheld at a lower share "
                "is withheld at every higher one): " + "; ".join(
                    f"{g or 'all'}: {'-' if v is None else 'yes' if v else 'NO'}"
                    for g, v in nested.items())]
    labels = list(dict.fromkeys(label for c in doc["cells"] for label in c["evaluations"]))
    if labels:
        out += ["", "## Accuracy vs audio withheld at test time", "",
                f"{metric} of each cell's final global model re-evaluated on the test split "
                "with that share of clips withheld (same model, no retraining).", ""]
        methods = list(dict.fromkeys(m for c in doc["cells"] for m in c["methods"]))
        for m in methods:
            rows = [[c["group"] or "-", _values(c),
                     *(_f((c["evaluations"].get(label) or {}).get(m, {}).get(metric))
                       for label in labels)]
                    for c in doc["cells"] if c["evaluations"] and m in c["methods"]]
            out += [f"### {m}", ""] + markdown_table(["group", "train values", *labels], rows)
            out.append("")
    return out


def plots(doc: dict[str, Any], out_dir: Path) -> dict[str, Path | None]:
    """Accuracy vs the share withheld at training time and at test time."""
    return {
        "accuracy vs audio withheld (training)": plot_accuracy_vs_withheld(
            doc, out_dir / "accuracy_vs_withheld.png"),
        "accuracy vs audio withheld (test)": plot_test_time(
            doc, out_dir / "accuracy_vs_test_withheld.png"),
    }


def plot_accuracy_vs_withheld(doc: dict[str, Any], path: Path) -> Path:
    """Final metric against the share of training clips withheld, per method and group."""
    import matplotlib.pyplot as plt

    from fedvida.reporting.sweep_plots import _MARKERS, _STYLES, _colors, _methods, _save

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
    import matplotlib.pyplot as plt

    from fedvida.reporting.sweep_plots import _cell_label, _colors, _methods

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


KIND = ReportKind("missing_audio", summarize=summarize, section=_missing_audio_section,
                  plots=plots)
