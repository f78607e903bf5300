"""Report kind ``privacy``: accuracy against the cumulative (epsilon, delta) after the last
round, per method, noise multiplier and clipping norm; cells without DP are the "no DP" rows
(epsilon infinite)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedvida.reporting.runlog import markdown_table
from fedvida.reporting.sweep_kinds import ReportKind
from fedvida.reporting.sweep_report import _f, _num


def _privacy_section(doc: dict[str, Any]) -> list[str]:
    metric = doc["metric"]
    rows = []
    for c in doc["cells"]:
        cf = c["config"]
        for m, r in c["methods"].items():
            off = cf["dp_mode"] == "off"
            priv = r.get("privacy") or {}
            eps = ("inf (no DP)" if off else "inf" if priv.get("epsilon") == "inf"
                   else _f(r.get("epsilon"), 2))
            clip = _f(cf["clipping_norm"], 2)
            final_clip = _num(priv.get("clipping_norm"))
            if final_clip is not None and abs(final_clip - cf["clipping_norm"]) > 1e-9:
                clip += f" (final {final_clip:.2f})"  # adaptive clipping moved it
            rows.append((m, off, cf["clipping_norm"], cf["noise_multiplier"],
                         [m, "no DP" if off else cf["dp_mode"],
                          "-" if off else _f(cf["noise_multiplier"], 2),
                          "-" if off else clip, eps,
                          "-" if off else _f(r.get("delta"), 6), _f(r.get(metric)),
                          _f(r.get("macro_f1"))]))
    rows.sort(key=lambda t: (t[0], not t[1], t[2], t[3]))
    notes = sorted({str(r["privacy"].get("accounting", "")) for c in doc["cells"]
                    for r in c["methods"].values() if r.get("privacy")} - {""})
    out = ["## Accuracy vs epsilon", "",
           f"{metric} of the global model after the last round against the cumulative "
           "(epsilon, delta) of client-level DP reported by the run's accountant after that "
           "round (`privacy` in metrics.jsonl). Rows without DP are the reference.", ""]
    out += markdown_table(["method", "DP", "noise multiplier", "clipping norm", "epsilon",
                           "delta", metric, "macro_f1"], [t[4] for t in rows])
    if notes:
        out += ["", "Accounting: " + "; ".join(notes) + "."]
    if any(c["config"]["dp_mode"] != "off" and r.get("epsilon") is None
           for c in doc["cells"] for r in c["methods"].values()):
        out += ["", "epsilon '-': the run logged no `privacy` record (its DP mode was not "
                "accounted)."]
    return out


def plots(doc: dict[str, Any], out_dir: Path) -> dict[str, Path | None]:
    """The accuracy vs epsilon plot."""
    return {"accuracy vs epsilon": plot_accuracy_vs_epsilon(
        doc, out_dir / "accuracy_vs_epsilon.png")}


def plot_accuracy_vs_epsilon(doc: dict[str, Any], path: Path) -> Path:
    """Final metric against epsilon, per method (colour) and clipping norm (line); no-DP cells
    as dashed horizontal lines."""
    import matplotlib.pyplot as plt

    from fedvida.reporting.sweep_plots import _MARKERS, _STYLES, _colors, _methods, _save

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


KIND = ReportKind("privacy", section=_privacy_section, plots=plots)
