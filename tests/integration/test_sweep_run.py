"""`fedvida sweep` end to end on the tiny fixture: real Flower runs, resume, report, byte counts.

One short sweep (2 cells x 1 method x 2 rounds, plus the evaluation points) is run through the
CLI, one cell is "interrupted" by truncating its log, and the rerun (through the library calls,
`fedvida.sweep`) must resume only that cell and reproduce its numbers. The centralised
alternatives are checked against the files on disk.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from fedvida.cli import main
from fedvida.config import Config
from fedvida.data.partition import Plan
from fedvida.features.cache import clip_path, load_features
from fedvida.features.store import clip_key
from fedvida.federation.checkpoints import checkpoint_dir, list_checkpoints
from fedvida.reporting.runlog import RunLog
from fedvida.reporting.sweep_report import centralised_costs, write_sweep_report
from fedvida.sweep import load_sweep, prepare, run_sweep

pytestmark = pytest.mark.slow


def test_centralised_costs_count_the_clips_and_feature_shards_on_disk(
    fed_pipeline: Config,
) -> None:
    cfg = fed_pipeline
    plan = Plan.load(cfg.partition.plan)
    costs = centralised_costs(cfg, plan)
    # every training clip of the tiny demo is in some client's partition
    training = sorted((Path(cfg.data.root) / "training").rglob("*.mp4"))
    assert costs["raw_clips"]["clips"] == len(training) == sum(map(len, plan.clients))
    assert costs["raw_clips"]["bytes"] == sum(f.stat().st_size for f in training)
    assert costs["raw_clips"]["missing"] == 0
    # the shard files (video + audio groups of the shared store) holding the clients' clips,
    # not those holding only the server's test partition
    cache = Path(cfg.extract.cache_dir)
    client_keys = {clip_key(clip_path(plan, c)) for part in plan.clients for c in part}

    def shard_files(clients: bool) -> list[Path]:
        out = []
        for d in cache.glob("store/*-*/shards/*"):
            keys = set(json.loads((d / "meta.json").read_text())["keys"])
            if bool(keys & client_keys) == clients:
                out += [f for f in d.iterdir() if f.is_file()]
        return out

    assert costs["features"]["files"] == len(shard_files(True))
    assert costs["features"]["bytes"] == sum(f.stat().st_size for f in shard_files(True))
    test_bytes = sum(f.stat().st_size for f in shard_files(False))
    assert test_bytes > 0
    # at least the float32 RGB + flow features of every client clip are in there
    video = sum(d.rgb.nbytes + d.flow.nbytes
                for d in (load_features(cfg, plan, k) for k in range(plan.num_clients)))
    assert video <= costs["features"]["bytes"] < 1.5 * video + costs["raw_clips"]["bytes"]


def test_sweep_runs_cells_resumes_only_the_interrupted_one_and_reports(
    fed_pipeline: Config, tmp_path: Path
) -> None:
    # Arrange: the fixture's config as the base; withholding 0 and 50% of training clips
    base = tmp_path / "base.yaml"
    base.write_text(fed_pipeline.to_yaml())
    sweep_file = tmp_path / "withheld.yaml"
    sweep_file.write_text(yaml.safe_dump({
        "base": str(base), "out": str(tmp_path / "sweep"),
        "methods": ["gt_audio"], "rounds": 2,
        "grid": {"partition.withhold.clip_rate": [0.0, 0.5]},
        "evaluate": {"partition.withhold.test_rate": [0.0, 0.5]},
        "report": {"kind": "missing_audio"},
    }))
    sweep = load_sweep(sweep_file)
    first, second = (c.run_dir for c in sweep.cells)

    # Act: the whole sweep (no stage may run: the fixture holds every input)
    assert main(["sweep", str(sweep_file), "--no-prepare"]) == 0

    # Assert: two real runs, report and summary read from their metrics
    out = tmp_path / "sweep"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"done": 2, "failed": 0, "pending": 0}
    report = (out / "report.md").read_text()
    for cell, run_dir, share in zip(summary["cells"], (first, second), (0.0, 0.5), strict=True):
        lines = RunLog(run_dir).rounds("gt_audio")
        assert [ln["round"] for ln in lines] == [1, 2]
        got = cell["methods"]["gt_audio"]
        server = lines[-1]["server"]
        assert got["top1"] == server["top1"] and got["macro_f1"] == server["macro_f1"]
        # (the bytes include the last round's validation exchange; a sweep reports the model
        # its checkpoints end with: final_metrics(select=False))
        assert got["bytes_up"] == sum(ln["bytes_up"] + ln.get("validation", {}).get("bytes_up", 0)
                                      for ln in lines) > 0
        assert cell["config"]["clip_rate"] == share and cell["action"] == "ran"
        # the plan of the cell withholds what it says (IID, 16 clips: 0 and about half)
        assert (cell["plan"]["train_withheld_share"] == 0.0) == (share == 0.0)
        assert cell["plan"]["test_withheld_share"] == 0.5
        assert (f"| - | clip_rate={share:g} | {cell['plan']['train_withheld_share']:.2f} | "
                f"0/4 | 0.50 | gt_audio | {server['top1']:.3f} | ") in report
        # the evaluation at the run's own test rate reproduces its last server evaluation
        at_own = cell["evaluations"]["test_rate=0.5"]["gt_audio"]
        assert at_own["top1"] == pytest.approx(server["top1"], abs=1e-12)
        assert at_own["macro_f1"] == pytest.approx(server["macro_f1"], abs=1e-12)
        assert set(cell["evaluations"]) == {"test_rate=0", "test_rate=0.5"}
    assert summary["nested"] == {"": True}
    assert len(list((out / "plans").glob("plan-*.json"))) == 4  # 2 cells x 2 test rates
    for png in ("accuracy_vs_withheld", "accuracy_vs_test_withheld", "metric_per_cell"):
        assert (out / "plots" / f"{png}.png").read_bytes()[:4] == b"\x89PNG"

    # Arrange: the second cell loses its last round (as if killed before logging it); the
    # first cell's files are remembered
    before = {p: p.stat().st_mtime_ns for p in first.rglob("*") if p.is_file()}
    full = RunLog(second).rounds("gt_audio")
    RunLog(second).truncate("gt_audio", 1)
    # Act: rerun the sweep through the library calls the command makes
    sweep = load_sweep(sweep_file)
    prepare(sweep, run_stages=False)
    results = run_sweep(sweep, on_change=lambda r: write_sweep_report(sweep, r))
    write_sweep_report(sweep, results)
    assert {r.status for r in results.values()} == {"done"}
    # Assert: only the second cell ran, from its checkpoint, and reproduced its numbers
    summary = json.loads((out / "summary.json").read_text())
    assert [c["action"] for c in summary["cells"]] == ["reused", "resumed"]
    assert before == {p: p.stat().st_mtime_ns for p in first.rglob("*") if p.is_file()}
    again = RunLog(second).rounds("gt_audio")
    assert [ln["round"] for ln in again] == [1, 2]
    assert again[1]["server"] == full[1]["server"]
    assert again[1]["bytes_up"] == full[1]["bytes_up"]
    assert again[1]["clients"].keys() == full[1]["clients"].keys()
    assert [p.name for p in list_checkpoints(checkpoint_dir(second, "gt_audio"))] == [
        "round_0001.safetensors", "round_0002.safetensors"]
    assert summary["cells"][1]["evaluations"]["test_rate=0.5"]["gt_audio"]["top1"] == \
        pytest.approx(full[1]["server"]["top1"], abs=1e-12)
