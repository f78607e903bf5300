"""Sweeps without Flower: grid expansion, validation, cell state, failure handling, report maths.

The real sweep (Flower runs, resume, report from real metrics, centralised byte counts on real
files) is tested in tests/integration/test_sweep_run.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from fedvida.config import PartitionConfig, WithholdConfig
from fedvida.data.mit import ClipRef, DatasetIndex
from fedvida.data.partition import make_plan
from fedvida.errors import ConfigError, FedvidaError, ProblemLog
from fedvida.federation.checkpoints import checkpoint_dir, list_checkpoints, save_checkpoint
from fedvida.reporting.sweep_report import (
    bytes_to_target,
    method_curve,
    nested_withholding,
    rounds_to_exceed,
    write_sweep_report,
)
from fedvida.sweep import (
    CellResult,
    align_checkpoints,
    cell_state,
    load_sweep,
    run_sweep,
)

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "configs" / "smoke.yaml"


def write_sweep(tmp_path: Path, doc: dict[str, Any], name: str = "s") -> Path:
    doc = {"base": str(SMOKE), "out": str(tmp_path / "out"), **doc}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_grid_groups_and_cells_expand_in_order_with_shared_runs(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, {
        "methods": ["generated"], "rounds": 2,
        "set": {"federation.local_epochs": 1},
        "grid": {"partition.withhold.clip_rate": [0.0, 0.5],
                 "federation.shared_prefixes": [["generator"], ["generator", "classifier"]]},
        "groups": [
            {"label": "per client", "set": {"partition.withhold.clip_rate": 0.0,
                                            "federation.shared_prefixes": ["generator"]},
             "grid": {"partition.withhold.no_audio_client_share": [0.0, 0.5]}},
            {"label": "ref", "methods": ["video_only"], "cells": [{"train.epochs": 3}]},
        ],
        "evaluate": {"partition.withhold.test_rate": [0.0, 0.25]},
    })
    sweep = load_sweep(path)
    cells = sweep.cells
    # grid product (first axis slowest), then each group's cells
    assert [(c.group, c.values) for c in cells[:4]] == [
        ("", {"partition.withhold.clip_rate": 0.0, "federation.shared_prefixes": ["generator"]}),
        ("", {"partition.withhold.clip_rate": 0.0,
              "federation.shared_prefixes": ["generator", "classifier"]}),
        ("", {"partition.withhold.clip_rate": 0.5, "federation.shared_prefixes": ["generator"]}),
        ("", {"partition.withhold.clip_rate": 0.5,
              "federation.shared_prefixes": ["generator", "classifier"]}),
    ]
    assert [c.group for c in cells[4:]] == ["per client", "per client", "ref"]
    for c in cells[:6]:
        assert c.config.train.methods == ["generated"]
        assert c.config.federation.rounds == 2 and c.config.federation.local_epochs == 1
    assert cells[2].config.partition.withhold.clip_rate == 0.5
    assert cells[1].config.federation.shared_prefixes == ["generator", "classifier"]
    assert cells[5].config.partition.withhold.no_audio_client_share == 0.5
    assert cells[6].config.train.methods == ["video_only"]
    assert cells[6].config.train.epochs == 3
    assert sweep.methods == ["generated", "video_only"] and sweep.rounds == [2]
    # the per-client cell with share 0 resolves to grid cell 1's config: one run for both
    assert cells[4].run_name == cells[0].run_name and cells[4].key == cells[0].key
    assert len(sweep.unique_cells()) == 6
    assert len({c.run_name for c in cells}) == 6
    assert all(c.run_dir.parent == tmp_path / "out" / "cells" for c in cells)
    assert cells[2].run_name.startswith("clip_rate=0.5_shared_prefixes=generator-")
    # one plan per partition config: withholding changes it, sharing does not
    assert cells[0].plan_path == cells[1].plan_path != cells[2].plan_path
    assert cells[0].plan_path.parent == tmp_path / "out" / "plans"
    # evaluation points: the test rates, with their own plans
    assert [label for label, _ in cells[0].eval_points] == ["test_rate=0", "test_rate=0.25"]
    ecfg = cells[0].eval_points[1][1]
    assert ecfg.partition.withhold.test_rate == 0.25 and ecfg.partition.plan != cells[0].plan_path
    assert ecfg.federation == cells[0].config.federation


def test_extra_overrides_change_every_cell_and_its_run(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, {"grid": {"train.lr": [0.001, 0.01]}})
    plain = load_sweep(path)
    quick = load_sweep(path, ["federation.rounds=1"], out=tmp_path / "other")
    assert [c.config.federation.rounds for c in quick.cells] == [1, 1]
    assert {c.run_name for c in plain.cells}.isdisjoint({c.run_name for c in quick.cells})
    assert quick.out == tmp_path / "other"
    # no grid at all: one cell, the base config
    single = load_sweep(write_sweep(tmp_path, {}, name="single"))
    assert len(single.cells) == 1 and single.cells[0].values == {}
    assert single.name == "single"


@pytest.mark.parametrize(("doc", "message"), [
    ({"grid": {"train.lr": [0.1, -1.0]}},
     r"sweep .*bad\.yaml: cell 2 \(train\.lr=-1\): invalid config .*smoke\.yaml: train\.lr: "),
    ({"groups": [{"label": "g", "cells": [{"federation.rounds": 2},
                                          {"federation.nope": 1}]}]},
     r"cell 2 \(g: federation\.nope=1\): .*federation\.nope: unknown field"),
    ({"grid": {"privacy.secagg.num_shares": [3, 4]}},
     r"cell 2 \(privacy\.secagg\.num_shares=4\): .*num_shares must be odd"),
    ({"grid": {"train.lr": []}},
     r"invalid sweep file .*bad\.yaml: grid: Value error, axis 'train\.lr' has no values"),
    ({"gird": {"train.lr": [1]}}, r"invalid sweep file .*bad\.yaml: gird: unknown field"),
    ({"methods": ["telepathy"]}, r"invalid sweep file .*: methods\.0: Input should be"),
    ({"set": {"partition.plan": "x.json"}}, r"'partition\.plan' cannot be set in a sweep"),
    ({"grid": {"name": ["a", "b"]}}, r"grid/cells: 'name' cannot be set"),
    ({"evaluate": {"train.lr": [0.1]}}, r"evaluate: 'train\.lr' changes training"),
    ({"evaluate": {"partition.withhold.test_rate": [2.0]}},
     r"cell 1 \(base\), evaluate partition\.withhold\.test_rate=2: .*test_rate: Input "),
    ({"base": "configs/nope.yaml"}, r"base config not found: configs/nope\.yaml"),
    ({"report": {"kind": "nope"}}, r"report\.kind: Value error, unknown report kind 'nope' "
                                   r"\(known: generic, privacy, communication, missing_audio\)"),
    ({"set": {"train.methods": ["gt_audio"]}}, r"'train\.methods' cannot be set in a sweep"),
])
def test_a_bad_cell_or_file_is_one_line_naming_file_and_cell(
    tmp_path: Path, doc: dict[str, Any], message: str
) -> None:
    path = write_sweep(tmp_path, doc, name="bad")
    with pytest.raises(ConfigError, match=message) as err:
        load_sweep(path)
    assert "\n" not in str(err.value)


def test_missing_or_broken_sweep_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="sweep file not found"):
        load_sweep(tmp_path / "none.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("grid: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_sweep(broken)


def test_report_only_with_no_finished_run_says_so_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fedvida.cli import main

    path = write_sweep(tmp_path, {"methods": ["generated"], "rounds": 1,
                                  "grid": {"federation.local_epochs": [1, 2]}})
    assert main(["sweep", str(path), "--report-only"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("none of its 2 runs has finished, nothing to report (run it without "
                        "--report-only)") and len(err.splitlines()) == 1
    assert not (tmp_path / "out" / "report.md").exists()


@pytest.mark.parametrize("name", ["privacy", "communication", "missing_audio"])
def test_shipped_sweep_files_validate_with_their_knobs(name: str) -> None:
    sweep = load_sweep(ROOT / "configs" / "sweeps" / f"{name}.yaml")
    assert sweep.spec.report.kind == name
    assert sweep.out == Path("runs/sweeps") / name
    cfgs = [c.config for c in sweep.cells]
    if name == "privacy":
        modes = {c.privacy.dp.mode for c in cfgs}
        assert "off" in modes and modes - {"off"}
        assert len({c.privacy.dp.noise_multiplier for c in cfgs if c.privacy.dp.mode != "off"}) > 1
        assert len({c.privacy.dp.clipping_norm for c in cfgs if c.privacy.dp.mode != "off"}) > 1
    elif name == "communication":
        assert {c.communication.uplink for c in cfgs} == {"none", "float16", "int8", "topk"}
        assert len({tuple(c.federation.shared_prefixes or ()) for c in cfgs}) >= 3
    else:
        assert {c.partition.withhold.clip_rate for c in cfgs} >= {0.0, 0.25, 0.5, 0.75, 0.9}
        assert {c.partition.withhold.no_audio_client_share for c in cfgs} >= {
            0.0, 0.25, 0.5, 0.75, 0.9}
        assert all(c.eval_points for c in sweep.cells)
    assert len(sweep.unique_cells()) <= 12  # small by default (a few minutes on 2 cores)


def _index(classes: int = 4, per_class: int = 10) -> DatasetIndex:
    names = [f"class{c}" for c in range(classes)]
    train = [ClipRef(f"training/{n}/c{i:03d}.mp4", n, c, "training")
             for c, n in enumerate(names) for i in range(per_class)]
    test = [ClipRef(f"validation/{n}/v{i:03d}.mp4", n, c, "validation")
            for c, n in enumerate(names) for i in range(4)]
    return DatasetIndex(Path("data"), "v1", names, train, test, ProblemLog())


def test_withholding_plans_are_nested_and_the_check_catches_a_violation() -> None:
    index = _index()

    def plan(**w: Any) -> Any:
        return make_plan(index, PartitionConfig(num_clients=4, scheme="dirichlet", alpha=0.5,
                                                withhold=WithholdConfig(**w)))

    per_clip = [plan(clip_rate=r, test_rate=t) for r, t in
                [(0.0, 0.0), (0.25, 0.25), (0.5, 0.5), (0.75, 0.75), (0.9, 0.9)]]
    per_client = [plan(clip_rate=0.0, no_audio_client_share=s) for s in (0.0, 0.25, 0.5, 0.75)]
    assert nested_withholding(per_clip) and nested_withholding(per_client)
    assert not nested_withholding(list(reversed(per_clip)))
    other_split = make_plan(index, PartitionConfig(num_clients=4, seed=1,
                                                   withhold=WithholdConfig(clip_rate=0.9)))
    assert not nested_withholding([per_clip[0], other_split])


def test_curve_target_and_break_even_rounds() -> None:
    lines = [{"round": r, "bytes_down": 100, "bytes_up": 50, "server": {"top1": acc},
              **({"privacy": {"epsilon": 0.5 * r, "delta": 1e-3}} if r > 1 else {})}
             for r, acc in [(1, 0.2), (2, 0.55), (3, 0.5), (4, 0.7)]]
    curve = method_curve(lines, "top1")
    assert [(p["round"], p["bytes_down"], p["bytes_up"], p["top1"], p["epsilon"])
            for p in curve] == [(1, 100, 50, 0.2, None), (2, 200, 100, 0.55, 1.0),
                                (3, 300, 150, 0.5, 1.5), (4, 400, 200, 0.7, 2.0)]
    assert bytes_to_target(curve, "top1", 0.5) == (2, 300)
    assert bytes_to_target(curve, "top1", 0.7) == (4, 600)
    assert bytes_to_target(curve, "top1", 0.9) is None
    assert rounds_to_exceed(curve, 299) == (2, True)   # 300 > 299 after round 2
    assert rounds_to_exceed(curve, 300) == (3, True)   # equal is not more
    assert rounds_to_exceed(curve, 1000) == (7, False)  # 150 per round: 1050 after round 7
    assert rounds_to_exceed([], 10) is None


def _metrics_line(method: str, rnd: int, top1: float, privacy: dict[str, Any] | None = None,
                  ) -> dict[str, Any]:
    line = {"method": method, "round": rnd, "seconds": 1.0, "bytes_down": 1_000_000,
            "bytes_up": 500_000, "failures": [], "train": {"train_loss": 1.0},
            "server": {"top1": top1, "macro_f1": top1 / 2, "top1_with_audio": top1,
                       "top1_without_audio": float("nan")}}
    if privacy is not None:
        line["privacy"] = privacy
    return line


def _finish(cell: Any, lines: list[dict[str, Any]]) -> None:
    """Give a cell the files a finished run leaves: config.yaml and metrics.jsonl."""
    cell.run_dir.mkdir(parents=True, exist_ok=True)
    (cell.run_dir / "config.yaml").write_text(cell.config.to_yaml())
    (cell.run_dir / "metrics.jsonl").write_text("".join(json.dumps(ln) + "\n" for ln in lines))


def test_cell_state_and_checkpoint_alignment(tmp_path: Path) -> None:
    sweep = load_sweep(write_sweep(tmp_path, {"methods": ["video_only", "generated"],
                                              "rounds": 3}))
    cell = sweep.cells[0]
    assert cell_state(cell) == "new"
    lines = [_metrics_line(m, r, 0.5) for m in ("video_only", "generated") for r in (1, 2, 3)]
    _finish(cell, lines)
    assert cell_state(cell) == "done"
    arrays = {"w": np.zeros(3, dtype=np.float32)}
    for method in ("video_only", "generated"):
        for rnd in (1, 2, 3):
            save_checkpoint(checkpoint_dir(cell.run_dir, method), rnd, method, "fedavg", arrays,
                            {}, keep=3)
    # an interruption lost generated's rounds 2-3 from the log (round 3 also left a gap)
    _finish(cell, lines[:3] + lines[3:4])
    assert cell_state(cell) == "partial"
    removed = align_checkpoints(cell)
    assert sorted(p.name for p in removed) == ["round_0002.safetensors", "round_0003.safetensors"]
    assert [p.name for p in list_checkpoints(checkpoint_dir(cell.run_dir, "generated"))] == [
        "round_0001.safetensors"]
    assert len(list_checkpoints(checkpoint_dir(cell.run_dir, "video_only"))) == 3


def test_a_failing_cell_is_one_line_and_the_sweep_goes_on(tmp_path: Path) -> None:
    sweep = load_sweep(write_sweep(tmp_path, {
        "methods": ["video_only"], "rounds": 1, "grid": {"train.lr": [0.001, 0.002, 0.003]}}))
    done = sweep.cells[0]
    _finish(done, [_metrics_line("video_only", 1, 0.4)])
    calls: list[tuple[str, Any]] = []
    reports: list[dict[str, str]] = []

    def runner(cfg: Any, methods: list[str], name: str, resume: Path | None = None) -> dict:
        calls.append((name, resume))
        if cfg.train.lr == 0.002:
            raise RuntimeError("ray exploded\nTraceback (most recent call last): ...")
        raise FedvidaError("federation ended early for ['video_only']")

    results = run_sweep(sweep, runner=runner, say=lambda s: None,
                        on_change=lambda r: reports.append({k: v.status for k, v in r.items()}))
    # the finished cell is not run again, both others are tried in order
    assert [name for name, _ in calls] == [sweep.cells[1].run_name, sweep.cells[2].run_name]
    assert results[done.run_name] == CellResult("done", "reused")
    assert results[sweep.cells[1].run_name].error == "RuntimeError: ray exploded"
    assert results[sweep.cells[2].run_name].error == "federation ended early for ['video_only']"
    assert reports[0] == {done.run_name: "done", sweep.cells[1].run_name: "pending",
                          sweep.cells[2].run_name: "pending"}
    assert reports[-1][sweep.cells[2].run_name] == "failed" and len(reports) == 3
    report = write_sweep_report(sweep, results).read_text()
    assert f"- {sweep.cells[1].run_name}: RuntimeError: ray exploded\n" in report
    summary = json.loads((sweep.out / "summary.json").read_text())
    assert summary["counts"] == {"done": 1, "failed": 2, "pending": 0}
    assert len(summary["failures"]) == 2
    assert summary["cells"][0]["methods"]["video_only"]["top1"] == 0.4
    # NaN metrics are written as null (strict JSON)
    assert summary["cells"][0]["methods"]["video_only"]["top1_without_audio"] is None


def test_privacy_report_pairs_accuracy_with_epsilon_and_shows_no_dp(tmp_path: Path) -> None:
    sweep = load_sweep(write_sweep(tmp_path, {
        "methods": ["generated"], "rounds": 2, "report": {"kind": "privacy"},
        "groups": [{"label": "no DP", "cells": [{"privacy.dp.mode": "off"}]},
                   {"label": "dp", "set": {"privacy.dp.mode": "server-fixed"},
                    "grid": {"privacy.dp.noise_multiplier": [2.0, 0.5, 0.0]}}]}))
    accounting = "RDP, add/remove one client"
    # the run's privacy record; the adaptive-style final clipping norm differs in one cell
    for cell, (top1, eps, clip) in zip(
        sweep.cells, [(0.6, None, None), (0.2, 1.5, 1.0), (0.4, 9.0, 0.73),
                      (0.5, float("inf"), 1.0)], strict=True):
        priv = None if eps is None else {"epsilon": eps, "delta": 1e-3, "mode": "server-fixed",
                                         "accounting": accounting, "clipping_norm": clip}
        _finish(cell, [_metrics_line("generated", r, top1 - 0.1 * (2 - r),
                                     None if priv is None else {**priv, "epsilon": eps * r / 2})
                       for r in (1, 2)])
    results = {c.run_name: CellResult("done", "reused") for c in sweep.cells}
    report = write_sweep_report(sweep, results).read_text()
    rows = [ln for ln in report.splitlines() if ln.startswith("| generated |")]
    assert rows == [
        "| generated | no DP | - | - | inf (no DP) | - | 0.600 | 0.300 |",
        "| generated | server-fixed | 0.00 | 1.00 | inf | 0.001000 | 0.500 | 0.250 |",
        "| generated | server-fixed | 0.50 | 1.00 (final 0.73) | 9.00 | 0.001000 | 0.400 | 0.200 |",
        "| generated | server-fixed | 2.00 | 1.00 | 1.50 | 0.001000 | 0.200 | 0.100 |",
    ]
    assert f"Accounting: {accounting}." in report
    text = (sweep.out / "summary.json").read_text()
    assert "Infinity" not in text and "NaN" not in text  # strict JSON
    summary = json.loads(text)
    assert [c["methods"]["generated"]["epsilon"] for c in summary["cells"]] == [
        None, 1.5, 9.0, None]
    assert summary["cells"][3]["methods"]["generated"]["privacy"]["epsilon"] == "inf"
    assert summary["cells"][0]["config"]["dp_mode"] == "off"
    png = sweep.out / "plots" / "accuracy_vs_epsilon.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![accuracy vs epsilon](plots/accuracy_vs_epsilon.png)" in report


def test_communication_report_bytes_to_target_and_centralised_break_even(tmp_path: Path) -> None:
    clips = tmp_path / "data"
    sweep = load_sweep(write_sweep(tmp_path, {
        "methods": ["generated"], "rounds": 3,
        "set": {"data.root": str(clips), "extract.cache_dir": str(tmp_path / "cache")},
        "report": {"kind": "communication", "target": 0.5},
        "grid": {"communication.uplink": ["none", "int8"]}}))
    # the plan's 40 training clips exist as 1000-byte files but one; no features are cached
    plan = make_plan(_index(), PartitionConfig(num_clients=2, scheme="iid"))
    plan.dataset_root = str(clips)
    plan.save(sweep.cells[0].plan_path)
    for part in plan.clients:
        for clip in part[1:]:
            (clips / clip.relpath).parent.mkdir(parents=True, exist_ok=True)
            (clips / clip.relpath).write_bytes(b"x" * 1000)
    for cell, accs, up in zip(sweep.cells, [(0.3, 0.5, 0.6), (0.3, 0.4, 0.45)],
                              [500_000, 125_000], strict=True):
        lines = [_metrics_line("generated", r, a) for r, a in enumerate(accs, start=1)]
        for ln in lines:
            ln["bytes_up"] = up
        _finish(cell, lines)
    results = {c.run_name: CellResult("done", "reused") for c in sweep.cells}
    report = write_sweep_report(sweep, results).read_text()
    # 1.5 MB per round without compression, reaching 0.5 in round 2 after 3 MB
    shared = "audio_proj+generator+classifier+tagger"  # what `generated` trains (the default)
    assert f"| 1 | generated | none | none | {shared} | 0.600 | " \
           "1.50 | 4.50 | 2 | 3.00 |" in report
    assert f"| 2 | generated | int8 | none | {shared} | 0.450 | " \
           "1.12 | 3.38 | - | not reached |" in report
    # raw clips: 38 files of 1000 bytes (2 missing) -> exceeded in round 1; features: 0 bytes
    assert "| upload raw clips | 0.04 | 40 training clips under " in report
    assert "(2 missing)" in report
    assert f"| 1 | generated | none | {shared} | 1 | 1 |" in report
    summary = json.loads((sweep.out / "summary.json").read_text())
    assert summary["centralised"]["raw_clips"]["bytes"] == 38_000
    assert summary["centralised"]["features"] == {
        "bytes": 0, "files": 0, "partitions": 2, "cache_dir": str(tmp_path / "cache")}
    assert (sweep.out / "plots" / "accuracy_vs_bytes.png").is_file()


def test_population_privacy_sweep_is_poisson_over_1000_clients_with_epsilon_1_to_10() -> None:
    from fedvida.federation.privacy import gaussian_epsilon

    sweep = load_sweep(ROOT / "configs" / "sweeps" / "privacy_population.yaml")
    assert sweep.spec.report.kind == "privacy"
    assert set(sweep.methods) == {"video_only", "generated"}
    cfgs = [c.config for c in sweep.cells]
    assert {c.privacy.dp.mode for c in cfgs} == {"off", "server-fixed"}
    for c in cfgs:
        fed = c.federation
        assert c.partition.num_clients == 1000 and fed.sampling == "poisson"
        assert 0.01 <= fed.fraction_train <= 0.05
        # enough training clips for 1000 clients of at least min_clips_per_client each
        assert c.demo.classes * c.demo.clips_per_class >= 1000 * c.partition.min_clips_per_client
    eps = sorted(gaussian_epsilon([(c.privacy.dp.noise_multiplier, c.federation.rounds)],
                                  c.privacy.dp.target_delta, 1000, c.federation.fraction_train)
                 for c in cfgs if c.privacy.dp.mode != "off")
    assert len(eps) >= 3 and 0.8 <= eps[0] < 2 and 8 <= eps[-1] <= 11
