"""The report of a sweep: ``summary.json``, ``report.md`` and PNG plots, read from the cells.

Everything is read back from the cells' ``metrics.jsonl`` (server metrics, bytes, the
``privacy`` record of each round), their plans and their ``evaluations.json``, so the report can
be rewritten at any time (after every cell, or with ``fedvida sweep --report-only``) and always
shows what is on disk. Every sweep has the oracle-gap and per-cell tables and the metric per cell
plot; ``report.kind`` names one entry of `fedvida.reporting.sweep_kinds.REPORT_KINDS`, one module
per kind, which adds its own summary fields, report section and plots (``privacy``,
``communication``, ``missing_audio``; ``generic`` adds nothing).

JSON has no infinity: ``epsilon`` is ``null`` with ``dp_mode: "off"`` for cells without DP, and
non-finite metrics are written as ``null``.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedvida.reporting.runlog import (
    RunLog,
    final_metrics,
    markdown_table,
    server_metrics_by_round,
)

if TYPE_CHECKING:
    from fedvida.config import Config
    from fedvida.data.partition import Plan
    from fedvida.sweep import Cell, CellResult, Sweep

SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.md"
SERVER_COLUMNS = ("top1", "macro_f1", "top1_with_audio", "top1_without_audio")


# ---------------------------------------------------------------------------- numbers
def _num(value: Any) -> float | None:
    """A finite float, or None (JSON-safe)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def method_curve(lines: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """Per round: cumulative bytes down/up, the server metric (None when not evaluated) and the
    cumulative (epsilon, delta) when the round reports one."""
    curve, down, up = [], 0, 0
    server = server_metrics_by_round(lines)  # at the fill-in weight validation chose
    for ln in lines:
        down += int(ln.get("bytes_down", 0))
        up += int(ln.get("bytes_up", 0))
        privacy = ln.get("privacy") or {}
        curve.append({
            "round": int(ln["round"]), "bytes_down": down, "bytes_up": up,
            metric: _num(server.get(int(ln["round"]), {}).get(metric)),
            "epsilon": _num(privacy.get("epsilon")), "delta": _num(privacy.get("delta")),
        })
    return curve


def bytes_to_target(curve: list[dict[str, Any]], metric: str,
                    target: float) -> tuple[int, int] | None:
    """``(round, cumulative bytes down + up)`` of the first round whose metric >= target."""
    for point in curve:
        value = point.get(metric)
        if value is not None and value >= target:
            return int(point["round"]), int(point["bytes_down"] + point["bytes_up"])
    return None


def rounds_to_exceed(curve: list[dict[str, Any]], amount: int) -> tuple[int, bool] | None:
    """The first round after which cumulative bytes (down + up) exceed ``amount``.

    Returns ``(round, True)`` when it happened within the run, ``(round, False)`` when it is
    extrapolated from the mean bytes per round, None for an empty curve.
    """
    if not curve:
        return None
    for point in curve:
        if point["bytes_down"] + point["bytes_up"] > amount:
            return int(point["round"]), True
    last = curve[-1]
    per_round = (last["bytes_down"] + last["bytes_up"]) / max(1, int(last["round"]))
    if per_round <= 0:
        return None
    return int(math.floor(amount / per_round)) + 1, False


def centralised_costs(cfg: Config, plan: Plan) -> dict[str, Any]:
    """One-off bytes of the centralised alternatives to the federation, from the actual files.

    * ``raw_clips``: the plan's training clips (every client's) as stored under the dataset
      root: what uploading the videos to a server would move.
    * ``features``: the cached feature shards (video and audio groups of the current extract
      config; every file of each shard holding one of the client's clips) under
      ``extract.cache_dir`` for the clients' partitions: what uploading the extracted features
      would move. The test split is the server's own and counted in neither.
    """
    from fedvida.features.cache import clip_path, open_stores
    from fedvida.features.store import SHARDS, clip_key

    raw = missing = clips = 0
    for part in plan.clients:
        for clip in part:
            clips += 1
            path = clip_path(plan, clip)
            if path.is_file():
                raw += path.stat().st_size
            else:
                missing += 1
    feat = files = 0
    keys = [clip_key(clip_path(plan, c)) for part in plan.clients for c in part]
    for store in open_stores(cfg.extract):  # shared by all partitions: each shard counted once
        index = store.index()
        for shard in sorted({index[key].shard for key in keys if key in index}):
            for f in (store.root / SHARDS / shard).iterdir():
                if f.is_file():
                    feat += f.stat().st_size
                    files += 1
    return {"raw_clips": {"bytes": raw, "clips": clips, "missing": missing,
                          "root": str(plan.dataset_root)},
            "features": {"bytes": feat, "files": files, "partitions": plan.num_clients,
                         "cache_dir": str(cfg.extract.cache_dir)}}


def plan_stats(plan: Plan) -> dict[str, Any]:
    """Withholding a plan actually applies: shares of training and test clips, silent clients."""
    train = [c for part in plan.clients for c in part]
    return {
        "train_clips": len(train),
        "train_withheld_share": sum(c.withheld for c in train) / max(1, len(train)),
        "clients_without_audio": sum(bool(p) and all(c.withheld for c in p)
                                     for p in plan.clients),
        "clients": plan.num_clients,
        "test_withheld_share": sum(c.withheld for c in plan.test) / max(1, len(plan.test)),
    }


def nested_withholding(plans: list[Plan]) -> bool:
    """True when the plans hold the same clips per client and, in the given order, each one's
    withheld training and test clips contain the previous one's (rates compare like with like)."""
    def held(plan: Plan) -> tuple[set[str], set[str]]:
        return ({c.relpath for p in plan.clients for c in p if c.withheld},
                {c.relpath for c in plan.test if c.withheld})

    for a, b in zip(plans, plans[1:], strict=False):
        if [[c.relpath for c in p] for p in a.clients] != [[c.relpath for c in p]
                                                            for p in b.clients]:
            return False
        (ta, sa), (tb, sb) = held(a), held(b)
        if not (ta <= tb and sa <= sb):
            return False
    return True


# ---------------------------------------------------------------------------- summary
def shared_facts(cfg: Config) -> list[str]:
    """The model parts a cell sends: ``federation.shared_prefixes`` if listed, else the parts
    its methods train (`fedvida.training.methods.shared_parts`; for several methods, their
    union in container order)."""
    from fedvida.models.container import PREFIXES
    from fedvida.training.methods import shared_parts

    sent = {p for m in cfg.train.methods for p in shared_parts(cfg, m)}
    return [p for p in PREFIXES if p in sent] if cfg.federation.shared_prefixes is None \
        else list(cfg.federation.shared_prefixes)


def _config_facts(cfg: Config) -> dict[str, Any]:
    w, dp = cfg.partition.withhold, cfg.privacy.dp
    return {
        "dp_mode": dp.mode, "noise_multiplier": dp.noise_multiplier,
        "clipping_norm": dp.clipping_norm, "secagg": cfg.privacy.secagg.enabled,
        "uplink": cfg.communication.uplink, "downlink": cfg.communication.downlink,
        "shared_prefixes": shared_facts(cfg),
        "clip_rate": w.clip_rate, "client_dist": w.client_dist,
        "no_audio_client_share": w.no_audio_client_share, "test_rate": w.test_rate,
        "rounds": cfg.federation.rounds, "local_epochs": cfg.federation.local_epochs,
        "sampling": cfg.federation.sampling, "fraction_train": cfg.federation.fraction_train,
    }


def cell_summary(cell: Cell, result: CellResult | None, metric: str) -> dict[str, Any]:
    """Everything the report shows about one cell (read from its run folder)."""
    from fedvida.data.partition import Plan
    from fedvida.errors import FedvidaError
    from fedvida.sweep import EVALUATIONS_FILE, cell_methods

    out: dict[str, Any] = {
        "index": cell.index, "group": cell.group, "run": cell.run_name,
        "values": {k: v for k, v in cell.values.items()},
        "status": result.status if result else "pending",
        "action": result.action if result else "pending",
        "error": result.error if result else "",
        "config": _config_facts(cell.config), "methods": {}, "evaluations": {}, "plan": None,
    }
    if cell.plan_path.is_file():
        try:
            out["plan"] = plan_stats(Plan.load(cell.plan_path))
        except FedvidaError:
            out["plan"] = None
    log = RunLog(cell.run_dir)
    for method in cell_methods(cell):
        lines = log.rounds(method)
        if not lines:
            continue
        final = {k: _num(v) if isinstance(v, float) else v
                 for k, v in final_metrics(lines, select=False).items()}
        privacy = lines[-1].get("privacy") or {}
        if cell.config.privacy.dp.mode == "off":
            eps, delta = None, None
        else:
            eps, delta = _num(privacy.get("epsilon")), _num(privacy.get("delta"))
        out["methods"][method] = {
            **final, "epsilon": eps, "delta": delta,
            "privacy": {k: (v if _num(v) is not None or not isinstance(v, float) else str(v))
                        for k, v in privacy.items() if isinstance(v, str | int | float)},
            "curve": method_curve(lines, metric),
        }
    evals = cell.run_dir / EVALUATIONS_FILE
    if evals.is_file():
        try:
            points = json.loads(evals.read_text()).get("points", {})
            out["evaluations"] = {label: {m: {k: _num(v) for k, v in res.items()}
                                          for m, res in per.items()}
                                  for label, per in points.items()}
        except (json.JSONDecodeError, AttributeError):
            out["evaluations"] = {}
    return out


def collect(sweep: Sweep, results: dict[str, CellResult]) -> dict[str, Any]:
    """The whole ``summary.json`` document."""
    spec = sweep.spec
    cells = [cell_summary(c, results.get(c.run_name), spec.report.metric) for c in sweep.cells]
    doc: dict[str, Any] = {
        "sweep": sweep.name, "file": str(sweep.path), "base": str(spec.base),
        "description": spec.description, "kind": spec.report.kind,
        "metric": spec.report.metric, "methods": sweep.methods, "rounds": sweep.rounds,
        "extra_overrides": sweep.extra, "updated_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "counts": {s: sum(1 for r in {c["run"]: c["status"] for c in cells}.values() if r == s)
                   for s in ("done", "failed", "pending")},
        "cells": cells,
        "failures": list(dict.fromkeys(f"{c['run']}: {c['error']}" for c in cells
                                       if c["status"] == "failed")),
    }
    from fedvida.reporting.sweep_kinds import report_kind  # its kinds use this module

    kind = report_kind(spec.report.kind)
    if kind.summarize is not None:
        doc.update(kind.summarize(sweep))
    return doc


# ---------------------------------------------------------------------------- report.md
def _f(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _mb(n: Any) -> str:
    return "-" if n is None else f"{n / 1e6:.2f}"


def _values(cell: dict[str, Any]) -> str:
    from fedvida.sweep import format_value, short_key

    return ", ".join(f"{short_key(k)}={format_value(v)}" for k, v in cell["values"].items()) or "-"


def _cells_table(doc: dict[str, Any]) -> list[str]:
    metric = doc["metric"]
    cols = list(dict.fromkeys([metric, *SERVER_COLUMNS]))
    rows = []
    for c in doc["cells"]:
        if not c["methods"]:
            rows.append([c["index"], c["group"] or "-", _values(c), c["status"], "-", "-",
                         *("-" for _ in cols), "-", "-", "-"])
            continue
        for m, r in c["methods"].items():
            rows.append([c["index"], c["group"] or "-", _values(c), c["status"], m,
                         r.get("rounds", "-"), *(_f(r.get(k)) for k in cols),
                         _mb(r.get("bytes_down")), _mb(r.get("bytes_up")),
                         _f(r.get("seconds"), 1)])
    return markdown_table(["#", "group", "values", "status", "method", "rounds", *cols,
                           "MB down", "MB up", "seconds"], rows)


def _oracle_gap_section(doc: dict[str, Any]) -> list[str]:
    """The missing-audio table of every cell (docs/evaluation.md), first in every report.

    The video-only and real-audio levels come from the sweep's own ``video_only`` and
    ``gt_audio`` runs (the first cell that trains each); without them the gap is '-'.
    """
    from fedvida.reporting.missing import HEADER
    from fedvida.training.evaluation import REAL_REFERENCE, VIDEO_REFERENCE, gap_table

    refs: dict[str, dict[str, Any]] = {}
    for c in doc["cells"]:
        for ref in (VIDEO_REFERENCE, REAL_REFERENCE):
            if ref in c["methods"] and ref not in refs:
                refs[ref] = {k: v for k, v in c["methods"][ref].items() if v is not None}
    rows = []
    for c in doc["cells"]:
        for m, r in c["methods"].items():
            if r.get("top1_missing") is None:
                continue
            own = {k: v for k, v in r.items() if v is not None}
            row = gap_table({**refs, m: own}, [m])[0]
            rows.append([c["index"], c["group"] or "-", _values(c), *(_f(v) for v in row)])
    if not rows:
        return []
    return ["## Missing audio: the oracle gap", "",
            "Per cell, on the test clips whose real audio is withheld: the global model's "
            "fill-in, the sweep's video_only and gt_audio-with-real-audio levels on the same "
            "clips (from the first cell that trains each; '-' when the sweep has none), gap "
            "closed = (method - video) / (real - video); d top1 w/ audio vs gt_audio.", "",
            *markdown_table(["#", "group", "values", *HEADER], rows), ""]


def render(doc: dict[str, Any], plots: dict[str, Path], out_dir: Path) -> str:
    """The report.md text of a summary document."""
    counts = doc["counts"]
    lines = [f"# Sweep {doc['sweep']}", ""]
    if doc["description"]:
        lines += [doc["description"].strip(), ""]
    lines += [f"File `{doc['file']}` on base config `{doc['base']}`; methods "
              f"{', '.join(doc['methods'])}; {'/'.join(map(str, doc['rounds']))} rounds per "
              f"run. Runs: "
              f"{counts['done']} done, {counts['failed']} failed, {counts['pending']} pending "
              f"(updated {doc['updated_at']}).", "",
              f"Command: `fedvida sweep {doc['file']}"
              + "".join(f" --set {o}" for o in doc["extra_overrides"]) + "`", ""]
    lines += _oracle_gap_section(doc)
    from fedvida.reporting.sweep_kinds import report_kind

    kind = report_kind(doc["kind"])
    if kind.section is not None:
        lines += kind.section(doc) + [""]
    for name, path in plots.items():
        lines += [f"![{name}]({path.relative_to(out_dir).as_posix()})", ""]
    lines += ["## Cells", "", "Global model on the test split after the last round; bytes "
              "summed over all rounds (down = server to clients). Cells with the same resolved "
              "config share one run.", ""]
    lines += _cells_table(doc)
    if doc["failures"]:
        lines += ["", "## Failed cells", "", *(f"- {f}" for f in doc["failures"]), "",
                  "Rerun the sweep to retry them (finished cells are kept)."]
    lines.append("")
    return "\n".join(lines)


def write_sweep_report(sweep: Sweep, results: dict[str, CellResult]) -> Path:
    """Write ``summary.json``, the plots and ``report.md`` into the sweep's out folder."""
    from fedvida.reporting.sweep_plots import plot_sweep

    out = Path(sweep.out)
    out.mkdir(parents=True, exist_ok=True)
    doc = collect(sweep, results)
    plots = plot_sweep(doc, out / "plots")
    tmp = out / (SUMMARY_FILE + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(out / SUMMARY_FILE)
    path = out / REPORT_FILE
    path.write_text(render(doc, plots, out))
    return path
