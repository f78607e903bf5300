"""The run folder's metric log (``metrics.jsonl``: one JSON object per method and round) and
the ``report.md`` written from it.

Each line holds ``method``, ``round``, ``seconds`` (wall time of the round), ``train_seconds``
(clients' own training time, summed), ``bytes_down`` / ``bytes_up`` (serialized messages),
``sampled``, ``succeeded``, ``aggregated``, ``failures`` ([{partition, reason}]), ``train``
(weighted client metrics, e.g. ``train_loss``), ``server`` (global model on the test split:
``top1``, ``macro_f1``, ``top1_with_audio``, ``top1_without_audio``...), ``clients`` (per-client
metrics keyed by partition id), ``select_round`` (how `final_metrics` picks the reported
round) and, when clients evaluate, ``client_eval``; with ``select_round: validation`` the last
round's line also holds ``validation`` (the final validate-only exchange: ``val_top1``,
``clients``, bytes). For a method whose late-fusion fill-in weight is chosen on validation
(`fedvida.training.local.chooses_fill_weight`), ``server`` also holds ``by_fill_weight``
(the test metrics at each candidate weight), a line's ``fill_scores`` holds its clients' pooled
validation scores of the model they received (the previous round's; ``validation`` has the
last round's), and every reader takes a round's metrics at the weight its validation chose
(`server_metrics_by_round`): the test split chooses nothing.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"
REPORT_FILE = "report.md"


class RunLog:
    """Append-only per-round log of a run folder (crash-safe: one flushed line per round)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / METRICS_FILE

    def append(self, line: dict[str, Any]) -> None:
        """Add one round's line and flush it to disk."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as fh:
            fh.write(json.dumps(line, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def read(self) -> list[dict[str, Any]]:
        """Every complete line (a torn last line from a crash is skipped)."""
        if not self.path.is_file():
            return []
        out = []
        for text in self.path.read_text().splitlines():
            try:
                out.append(json.loads(text))
            except json.JSONDecodeError:
                continue
        return out

    def truncate(self, method: str, after_round: int) -> None:
        """Drop ``method``'s lines after ``after_round`` (rounds a resume will redo)."""
        keep = [ln for ln in self.read()
                if not (ln.get("method") == method and int(ln.get("round", 0)) > after_round)]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(ln, sort_keys=True) + "\n" for ln in keep))
        os.replace(tmp, self.path)

    def rounds(self, method: str) -> list[dict[str, Any]]:
        """``method``'s lines in round order."""
        return sorted((ln for ln in self.read() if ln.get("method") == method),
                      key=lambda ln: int(ln["round"]))

    def methods(self) -> list[str]:
        """Methods in the order they first appear."""
        return list(dict.fromkeys(str(ln["method"]) for ln in self.read()))


def fill_scores_by_round(lines: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Clients' pooled fill-weight validation scores of each round's global model.

    `fedvida.training.metrics.pool_fill_scores` of the clients of round r + 1 (a line's
    ``fill_scores``: scored before they train) and of the final validate-only exchange (the last
    line's ``validation.fill_scores``). Empty for methods without a chosen fill-in weight.
    """
    out: dict[int, dict[str, Any]] = {}
    for ln in lines:
        rnd = int(ln["round"])
        if ln.get("fill_scores"):
            out[rnd - 1] = ln["fill_scores"]
        final = (ln.get("validation") or {}).get("fill_scores")
        if final:
            out[rnd] = final
    return out


def fill_weight_by_round(lines: list[dict[str, Any]]) -> dict[int, float]:
    """The fill-in weight each round's validation chose (`fill_scores_by_round`)."""
    return {r: float(s["fill_weight"]) for r, s in fill_scores_by_round(lines).items()
            if "fill_weight" in s}


def validation_by_round(lines: list[dict[str, Any]]) -> dict[int, float]:
    """Clients' validation top-1 of each round's global model, from a method's log lines.

    The clients of round r + 1 report ``val_top1`` of round r's global model (scored before they
    train), and the last round's model is scored in its line's ``validation`` entry
    (`fedvida.federation.server.validate`). Round 0 is the initial model. Where the round's
    fill-in weight was chosen on validation (`fill_weight_by_round`), the top-1 at that weight.
    """
    out: dict[int, float] = {}
    for ln in lines:
        rnd = int(ln["round"])
        val = ln.get("train", {}).get("val_top1")
        if val is not None and math.isfinite(float(val)):
            out[rnd - 1] = float(val)
        final = (ln.get("validation") or {}).get("val_top1")
        if final is not None and math.isfinite(float(final)):
            out[rnd] = float(final)
    for rnd, scores in fill_scores_by_round(lines).items():
        if "fill_weight" not in scores:
            continue
        val = scores.get(f"val_top1@{float(scores['fill_weight']):g}")
        if val is not None and math.isfinite(float(val)):
            out[rnd] = float(val)
    return out


def server_metrics(line: dict[str, Any], weight: float | None = None) -> dict[str, Any]:
    """A line's test metrics (``server``) at fill-in weight `weight` when it was evaluated at
    it (``server.by_fill_weight``), else as evaluated (weight 1); numbers only."""
    server = line.get("server") or {}
    at = (server.get("by_fill_weight") or {}).get(f"{weight:g}") if weight is not None else None
    chosen = at if at is not None else server
    return {k: v for k, v in chosen.items() if isinstance(v, int | float)}


def server_metrics_by_round(lines: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Each evaluated round's test metrics at the fill-in weight its validation chose
    (`fill_weight_by_round`; as evaluated where none was chosen)."""
    weights = fill_weight_by_round(lines)
    return {int(ln["round"]): server_metrics(ln, weights.get(int(ln["round"])))
            for ln in lines if ln.get("server")}


def selected_line(lines: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The evaluated round a run reports (``federation.select_round``), or ``None``.

    ``"validation"`` (written in every line by the server): of the rounds with server metrics
    and a validation score, the best validation top-1 (the later round on a tie); a run without
    any validation score (no validation clips, or an old run) falls back to the last evaluated
    round, as does ``"last"``.
    """
    evaluated = [ln for ln in lines if ln.get("server")]
    if not evaluated:
        return None
    if lines[-1].get("select_round") == "validation":
        val = validation_by_round(lines)
        scored = [ln for ln in evaluated if int(ln["round"]) in val]
        if scored:
            return max(scored, key=lambda ln: (val[int(ln["round"])], int(ln["round"])))
    return evaluated[-1]


def final_metrics(lines: list[dict[str, Any]], select: bool = True) -> dict[str, Any]:
    """Summary of one method: the reported round's server metrics, totals of time and bytes.

    The server metrics are those of `selected_line` (``selected_round``; its clients'
    ``val_top1`` as ``selected_val_top1`` when chosen on validation), at the fill-in weight its
    validation chose (``fill_weight``, `fill_weight_by_round`); ``rounds``, seconds, bytes
    and failures cover every round run. ``select=False``: the last evaluated round's metrics
    whatever ``select_round`` says (a sweep compares the models its checkpoints end with).
    """
    if not lines:
        return {}
    evaluated = [ln for ln in lines if ln.get("server")]
    chosen = selected_line(lines) if select else (evaluated[-1] if evaluated else None)
    last: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    if chosen is not None:
        rnd = int(chosen["round"])
        weight = fill_weight_by_round(lines).get(rnd)
        last = server_metrics(chosen, weight)
        extra["selected_round"] = rnd
        if weight is not None and f"{weight:g}" in chosen["server"].get("by_fill_weight", {}):
            extra["fill_weight"] = weight  # the test metrics are those at this weight
        val = validation_by_round(lines).get(rnd)
        if val is not None and lines[-1].get("select_round") == "validation":
            extra["selected_val_top1"] = val
    return {
        **last,
        **extra,
        "rounds": int(lines[-1]["round"]),
        "seconds": float(sum(ln.get("seconds", 0.0) for ln in lines)),
        # the final validation exchange (select_round) moves bytes too
        "bytes_down": int(sum(ln.get("bytes_down", 0)
                              + (ln.get("validation") or {}).get("bytes_down", 0)
                              for ln in lines)),
        "bytes_up": int(sum(ln.get("bytes_up", 0) + (ln.get("validation") or {}).get("bytes_up", 0)
                            for ln in lines)),
        "failures": int(sum(len(ln.get("failures", [])) for ln in lines)),
        # the reported round's training loss (the loss of the updates that made its model)
        "train_loss": float((chosen or lines[-1]).get("train", {}).get("train_loss",
                                                                       float("nan"))),
        **_privacy_summary(lines[-1].get("privacy")),
    }


def _privacy_summary(privacy: dict[str, Any] | None) -> dict[str, Any]:
    """``epsilon`` / ``delta`` / ``dp_mode`` of a run's last line (empty without DP)."""
    if not privacy:
        return {}
    return {"epsilon": float(privacy["epsilon"]), "delta": float(privacy["delta"]),
            "dp_mode": str(privacy["mode"])}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def markdown_table(header: list[str], rows: list[list[Any]]) -> list[str]:
    """Lines of a markdown table; floats with 3 decimals, anything else as ``str``."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return lines


def _mb(n: float) -> str:
    return f"{n / 1e6:.2f}"


def _communication_table(log: RunLog, methods: list[str]) -> list[str]:
    """Which model parts travelled and how they were encoded (lines' ``communication``)."""
    rows = []
    for m in methods:
        lines = log.rounds(m)
        comm = lines[-1].get("communication") if lines else None
        if not comm:
            continue
        uplink = str(comm["uplink"])
        if uplink == "topk":
            uplink += f" {float(comm['topk_fraction']):g}"
        if uplink != "none":
            uplink += " + error feedback" if comm.get("error_feedback") else ""
        n = len(lines)
        rows.append([m, ", ".join(comm["shared_prefixes"]), uplink, comm["downlink"],
                     _mb(sum(ln.get("bytes_down", 0) for ln in lines) / n),
                     _mb(sum(ln.get("bytes_up", 0) for ln in lines) / n)])
    if not rows:
        return []
    out = ["Communication: the model parts that travel (the others stay on each client) and "
           "the codecs; MB per round, averaged over the rounds.", "",
           *markdown_table(["method", "shared parts", "uplink", "downlink", "MB down / round",
                            "MB up / round"], rows), ""]
    partial = [r[0] for r in rows if "classifier" not in r[1].split(", ")]
    if partial:
        out += [f"Partial sharing ({', '.join(partial)}): the server never holds the parts "
                "kept on the clients and evaluates its global model with their *initial* "
                "values, so its top-1 there says little about the clients' own models; use "
                "federated evaluation (`federation.fraction_evaluate`, `client_eval` in "
                "metrics.jsonl) for those.", ""]
    return out


def _chosen_words(log: RunLog, methods: list[str]) -> str:
    """How the reported round was chosen, in words (from the runs' ``select_round``)."""
    rules = {str(log.rounds(m)[-1].get("select_round", "last")) for m in methods if log.rounds(m)}
    if rules == {"validation"}:
        return "global model of the round with the best clients' validation top-1"
    return "global model after the last round"


def write_report(run_dir: Path, title: str | None = None) -> Path:
    """Write ``report.md`` (final table, per-round tables, plots) from ``metrics.jsonl``."""
    from fedvida.reporting.plots import plot_run

    run_dir = Path(run_dir)
    log = RunLog(run_dir)
    methods = log.methods()
    plots = plot_run(run_dir, {m: log.rounds(m) for m in methods})
    from fedvida.reporting.missing import markdown as missing_markdown

    cols = ["top1", "macro_f1", "top1_with_audio", "top1_without_audio"]
    out = [f"# {title or run_dir.name}: federated run", ""]
    final = [final_metrics(log.rounds(m)) for m in methods]
    out += missing_markdown(dict(zip(methods, final, strict=True)), methods,
                            "Missing audio: the oracle gap, " + _chosen_words(log, methods))
    out += ["## All test clips", ""]
    out += [f"Global model on the test split ({_chosen_words(log, methods)}; `round` is the "
            "round reported, of `rounds` run); bytes are serialized messages summed over all "
            "rounds (down = server to clients).", ""]
    out += markdown_table(
        ["method", "round", "rounds", *cols, "fill weight", "train loss", "MB down", "MB up",
         "seconds", "failures"],
        [[m, f.get("selected_round", "-"), f["rounds"], *(f.get(c, "-") for c in cols),
          f.get("fill_weight", "-"), f["train_loss"], _mb(f["bytes_down"]),
          _mb(f["bytes_up"]), f"{f['seconds']:.1f}", f["failures"]]
         for m, f in zip(methods, final, strict=True)],
    )
    out += [""]
    if any("fill_weight" in f for f in final):
        out += ["fill weight: the late-fusion weight of the audio head on fill-ins, chosen on "
                "the clients' pooled validation clips without real audio (lowest "
                "cross-entropy); "
                "every test figure of such a method is at the weight its round's validation "
                "chose.", ""]
    private = [(m, log.rounds(m)[-1]["privacy"]) for m in methods
               if log.rounds(m)[-1].get("privacy")]
    if private:
        out += ["Differential privacy: cumulative client-level (epsilon, delta) after the last "
                f"round ({private[0][1]['accounting']}).", ""]
        out += markdown_table(
            ["method", "mode", "noise multiplier", "clipping norm", "releases", "epsilon",
             "delta"],
            [[m, p["mode"], float(p["noise_multiplier"]), float(p["clipping_norm"]),
              p["releases"], float(p["epsilon"]), f"{p['delta']:.0e}"] for m, p in private],
        )
        out.append("")
    out += _communication_table(log, methods)
    for name, path in plots.items():
        out += [f"![{name}]({path.relative_to(run_dir).as_posix()})", ""]
    for m in methods:
        out += [f"## {m}", ""]
        rows = []
        lines = log.rounds(m)
        with_dp = any(ln.get("privacy") for ln in lines)
        server, weights = server_metrics_by_round(lines), fill_weight_by_round(lines)
        with_fill = bool(weights)
        for ln in lines:
            s = server.get(int(ln["round"]), {})
            eps = [float(ln["privacy"]["epsilon"]) if ln.get("privacy") else "-"] if with_dp else []
            fill = [weights.get(int(ln["round"]), "-")] if with_fill else []
            rows.append([ln["round"], s.get("top1", "-"), s.get("macro_f1", "-"), *fill,
                         ln.get("train", {}).get("train_loss", "-"),
                         f"{ln.get('succeeded', 0)}/{ln.get('sampled', 0)}",
                         _mb(ln.get("bytes_down", 0)), _mb(ln.get("bytes_up", 0)),
                         f"{ln.get('seconds', 0.0):.2f}", *eps])
        out += markdown_table(["round", "top1", "macro_f1",
                               *(["fill weight"] if with_fill else []), "train loss",
                               "clients ok", "MB down", "MB up", "seconds",
                               *(["epsilon"] if with_dp else [])], rows)
        fails = [f for ln in log.rounds(m) for f in ln.get("failures", [])]
        if fails:
            out += ["", f"{len(fails)} client failure(s), e.g.: "
                    + "; ".join(f"client {f['partition']}: {f['reason']}" for f in fails[:3])]
        out.append("")
    path = run_dir / REPORT_FILE
    path.write_text("\n".join(out))
    return path
