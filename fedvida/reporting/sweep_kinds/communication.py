"""Report kind ``communication``: accuracy against cumulative bytes (down + up), the bytes and
round at which a target accuracy was first reached, per uplink codec and shared prefixes; beside
it the one-off cost of the centralised alternatives measured on the actual files
(`fedvida.reporting.sweep_report.centralised_costs`: the plan's training clips, the clients'
cached feature shards) and the round at which the federated traffic exceeds each."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedvida.reporting.runlog import markdown_table
from fedvida.reporting.sweep_kinds import ReportKind
from fedvida.reporting.sweep_report import (
    _f,
    _mb,
    bytes_to_target,
    centralised_costs,
    rounds_to_exceed,
)

if TYPE_CHECKING:
    from fedvida.sweep import Sweep


def summarize(sweep: Sweep) -> dict[str, Any]:
    """The target of the 'bytes to target' columns and the centralised alternatives' costs."""
    return {"target": sweep.spec.report.target, "centralised": _centralised(sweep)}


def _centralised(sweep: Sweep) -> dict[str, Any] | None:
    from fedvida.data.partition import Plan
    from fedvida.errors import FedvidaError

    cell = sweep.cells[0]
    if not cell.plan_path.is_file():
        return None
    try:
        return {**centralised_costs(cell.config, Plan.load(cell.plan_path)),
                "plan": str(cell.plan_path)}
    except (FedvidaError, OSError):
        return None


def _communication_section(doc: dict[str, Any]) -> list[str]:
    metric, target = doc["metric"], doc["target"]
    rows, exceed = [], []
    central = doc.get("centralised") or {}
    refs = [(name, central[name]["bytes"]) for name in ("raw_clips", "features")
            if name in central]
    for c in doc["cells"]:
        cf = c["config"]
        for m, r in c["methods"].items():
            curve = r["curve"]
            last = curve[-1]
            total = last["bytes_down"] + last["bytes_up"]
            hit = bytes_to_target(curve, metric, target)
            rows.append([c["index"], m, cf["uplink"], cf["downlink"],
                         "+".join(cf["shared_prefixes"]), _f(r.get(metric)),
                         _mb(total / max(1, last["round"])), _mb(total),
                         "-" if hit is None else hit[0], "not reached" if hit is None
                         else _mb(hit[1])])
            cells = []
            for _, amount in refs:
                got = rounds_to_exceed(curve, amount)
                cells.append("-" if got is None else f"{got[0]}" if got[1] else f"~{got[0]}")
            exceed.append([c["index"], m, cf["uplink"], "+".join(cf["shared_prefixes"]),
                           *cells])
    out = ["## Accuracy vs bytes", "",
           f"Bytes are the serialized messages of every round, down + up, cumulative. "
           f"'to target' = the first round whose {metric} >= {target:g} and the bytes moved "
           "until then.", ""]
    out += markdown_table(["#", "method", "uplink", "downlink", "shared", metric,
                           "MB / round", "MB total", f"round to {target:g}",
                           f"MB to {target:g}"], rows)
    from fedvida.training.methods import get_method

    # partial sharing: a cell's list leaves out a part one of its methods trains (parts a method
    # never trains are at their seeded initial values on every node and the server alike)
    if any(set(get_method(m).trains) - set(c["config"]["shared_prefixes"])
           for c in doc["cells"] for m in c["methods"]):
        out += ["", "Partial sharing: the server evaluates the global model with the parts that "
                "are not shared at their seeded initial values (they live only on the clients), "
                f"so its {metric} is not what the clients' own models reach."]
    if central:
        raw, feat = central["raw_clips"], central["features"]
        out += ["", "## Centralised alternatives (one-off upload)", "",
                f"Measured on the files of plan `{central.get('plan', '')}`.", ""]
        out += markdown_table(["alternative", "MB", "what was counted"], [
            ["upload raw clips", _mb(raw["bytes"]),
             f"{raw['clips']} training clips under {raw['root']}"
             + (f" ({raw['missing']} missing)" if raw["missing"] else "")],
            ["upload features", _mb(feat["bytes"]),
             f"{feat['files']} shard files of {feat['partitions']} client partitions under "
             f"{feat['cache_dir']}"],
        ])
        out += ["", "Round after which the federation has moved more bytes (down + up) than "
                "each alternative ('~': extrapolated at the run's mean bytes per round).", ""]
        out += markdown_table(["#", "method", "uplink", "shared",
                               *(f"> {n.replace('_', ' ')}" for n, _ in refs)], exceed)
    return out


def plots(doc: dict[str, Any], out_dir: Path) -> dict[str, Path | None]:
    """The accuracy vs bytes plot."""
    return {"accuracy vs bytes": plot_accuracy_vs_bytes(doc, out_dir / "accuracy_vs_bytes.png")}


def plot_accuracy_vs_bytes(doc: dict[str, Any], path: Path) -> Path:
    """Metric per round against cumulative MB (down + up), one line per cell and method, with
    the centralised alternatives' one-off upload as vertical lines."""
    import matplotlib.pyplot as plt

    from fedvida.reporting.sweep_plots import _colors, _save

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


KIND = ReportKind("communication", summarize=summarize, section=_communication_section,
                  plots=plots)
