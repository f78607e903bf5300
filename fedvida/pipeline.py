"""The main job: demo data -> partition -> extraction -> dictionary -> federated + central training.

Each stage is one function of `fedvida.stages`, the same its own command calls (`fedvida data
demo`, `partition`, `extract --all`, `dictionary build`, `simulate`, `train`), called with the
one config `fedvida run` loaded; this module only decides what can be reused from an earlier run
and prints each stage's summary and the final comparison. Stages whose inputs have not changed
are skipped, so a second run costs only the training.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedvida.config import Config
from fedvida.reporting.console import console, print_table

COMPARE_COLUMNS = ("top1", "macro_f1", "top1_with_audio", "top1_without_audio")
SHORT_NAMES = {"top1": "top1", "macro_f1": "F1", "top1_with_audio": "top1 w/ audio",
               "top1_without_audio": "top1 w/o audio"}


@dataclass
class StageTimer:
    """Wall time per stage, printed at the end."""

    seconds: dict[str, float] = field(default_factory=dict)

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        console.rule(f"[bold]{name}")
        start = time.perf_counter()
        try:
            return fn()
        finally:
            self.seconds[name] = time.perf_counter() - start


def demo_is_current(cfg: Config) -> bool:
    """True when `demo.out` holds a complete demo written with the same generator settings."""
    from fedvida.data.demo import MARKER

    marker = Path(cfg.demo.out) / MARKER
    if not marker.is_file():
        return False
    try:
        info = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    ignore = {"out", "workers"}
    saved = {k: v for k, v in (info.get("config") or {}).items() if k not in ignore}
    wanted = {k: v for k, v in cfg.demo.model_dump(mode="json").items() if k not in ignore}
    return bool(info.get("complete")) and saved == wanted


def dictionary_is_current(cfg: Config) -> bool:
    """True when `dictionary.out` verifies and was built from the same labels and settings."""
    from fedvida.errors import FedvidaError
    from fedvida.semantics import SemanticDictionary, resolve_actions

    out = Path(cfg.dictionary.out)
    if not (out / "manifest.json").is_file():
        return False
    try:
        d = SemanticDictionary.load(out)
        actions, _ = resolve_actions(cfg)
    except FedvidaError:
        return False
    m = d.manifest
    return (
        list(d.actions) == actions
        and m.get("templates", {}).get("action") == cfg.dictionary.action_template
        and m.get("templates", {}).get("audio") == cfg.dictionary.audio_template
        and int(m.get("top_k", -1)) == cfg.dictionary.top_k
        and m.get("model", {}).get("name") == cfg.dictionary.model
    )


def comparison_rows(
    federated: dict[str, dict[str, Any]],
    central: dict[str, dict[str, float]],
    methods: Sequence[str],
) -> list[list[Any]]:
    """One row per method: federated metrics, the centralised reference beside each, bytes."""
    rows: list[list[Any]] = []
    for m in methods:
        fed, cen = federated.get(m, {}), central.get(m, {})
        row: list[Any] = [m]
        for col in COMPARE_COLUMNS:
            row += [float(fed.get(col, float("nan"))), float(cen.get(col, float("nan")))]
        row += [float(fed.get("bytes_down", 0) + fed.get("bytes_up", 0)) / 1e6]
        rows.append(row)
    return rows


def write_comparison(
    folder: Path, rows: list[list[Any]], header: list[str], stage_seconds: dict[str, float],
    missing: Sequence[str] = (),
) -> Path:
    """Write the comparison as markdown + JSON beside the federated run's report; the
    missing-audio tables (`missing`, markdown lines) lead it."""
    from fedvida.reporting.runlog import markdown_table

    folder.mkdir(parents=True, exist_ok=True)
    lines = markdown_table(header, rows)
    stages = "\n".join(f"- {k}: {v:.1f} s" for k, v in stage_seconds.items())
    path = folder / "comparison.md"
    path.write_text(
        "# Federated vs centralised, per method\n\n"
        + "".join(line + "\n" for line in missing)
        + "## All test clips\n\n"
        + "\n".join(lines)
        + "\n\nfed = federated global model, cen = centralised reference (same data, split, "
        "seed); test split of the plan.\n\n## Stage wall times\n\n"
        + stages
        + "\n"
    )
    (folder / "comparison.json").write_text(json.dumps({"header": header, "rows": rows}, indent=2))
    return path


def run_pipeline(cfg: Config, methods: Sequence[str], *, force: bool = False) -> Path:
    """Run every stage of the main job with one config; returns the path of the comparison table.

    Parameters
    ----------
    cfg
        The validated config (`fedvida run` loads it once); every stage gets this object.
    methods
        Methods to train federated and centrally.
    force
        Redo the demo data and the dictionary even when they are current.
    """
    from fedvida import stages
    from fedvida.reporting.stages import (
        print_demo,
        print_dictionary,
        print_extraction,
        print_plan_result,
    )

    timer = StageTimer()
    if force or not demo_is_current(cfg):
        timer.run("demo data", lambda: print_demo(stages.demo(cfg, progress=True), cfg))
    else:
        console.print(f"demo data: {cfg.demo.out} is current, reused", markup=False,
                      soft_wrap=True)
    timer.run("partition", lambda: print_plan_result(stages.plan(cfg), cfg.partition.scheme))
    timer.run("extraction", lambda: print_extraction(stages.extract(cfg, progress=True)))
    if force or not dictionary_is_current(cfg):
        timer.run("dictionary", lambda: print_dictionary(stages.dictionary(cfg), cfg))
    else:
        console.print(f"dictionary: {cfg.dictionary.out} is current and verified, reused",
                      markup=False, soft_wrap=True)

    name = f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    federated = timer.run(
        "federated training", lambda: stages.simulate(cfg, methods, name).results
    )
    trained = timer.run("centralised reference", lambda: stages.train(cfg, methods))
    central = trained.test

    from fedvida.reporting.missing import markdown as missing_markdown
    from fedvida.reporting.missing import print_missing

    chosen = ("round chosen on the clients' validation top-1"
              if cfg.federation.select_round == "validation" else "after the last round")
    print_missing(federated, f"Missing audio, federated global model ({chosen})", list(methods))
    print_missing(central, "Missing audio, centralised reference")
    missing_md = (missing_markdown(federated, list(methods), "Missing audio, federated")
                  + missing_markdown(central, None, "Missing audio, centralised reference"))
    header = ["method"]
    for col in COMPARE_COLUMNS:
        header += [f"{SHORT_NAMES[col]} fed", f"{SHORT_NAMES[col]} cen"]
    header.append("MB moved (fed)")
    rows = comparison_rows(federated, central, methods)
    print_table("Federated (fed) vs centralised reference (cen), test split", header, rows)
    out = write_comparison(Path(cfg.train.runs_dir) / name, rows, header, timer.seconds,
                           missing_md)
    print_table("stage wall times", ["stage", "seconds"], list(timer.seconds.items()))
    console.print(f"comparison: {out}; federated report: {out.parent / 'report.md'}",
                  markup=False)
    return out
