"""The main job (`fedvida run`) end to end on a tiny demo, and its reuse of current stages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedvida.cli import main
from fedvida.config import load_config
from fedvida.pipeline import demo_is_current, dictionary_is_current


def test_run_writes_comparison_and_reuses_current_stages(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Arrange: every path under tmp_path, a tiny demo, one method, one round
    work = tmp_path / "work"
    sets = [
        "name=pipe",
        f"demo.out={work / 'demo'}",
        f"data.root={work / 'demo'}",
        "demo.classes=4",
        "demo.clips_per_class=4",
        "demo.val_clips_per_class=2",
        f"partition.plan={work / 'plan.json'}",
        "partition.num_clients=2",
        "partition.scheme=iid",
        f"extract.cache_dir={work / 'cache'}",
        f"dictionary.out={work / 'dictionary'}",
        f"train.runs_dir={tmp_path / 'runs'}",
        "train.epochs=1",
        "train.batch_size=8",
        "model.hidden=32",
        "model.visual_dim=32",
        "federation.rounds=1",
        "federation.local_epochs=1",
        "federation.ray_num_cpus=2",
    ]
    argv = ["run", "--method", "gt_audio"]
    for s in sets:
        argv += ["--set", s]
    cfg = load_config(None, sets)
    assert not demo_is_current(cfg) and not dictionary_is_current(cfg)

    # Act: a first run, then a second one over the same work folder
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert main(argv) == 0
    second = capsys.readouterr().out

    # Assert: the first run made every stage, the second reused the demo and the dictionary
    assert demo_is_current(cfg) and dictionary_is_current(cfg)
    assert "is current, reused" not in first
    assert "demo data: " in second and "is current, reused" in second
    assert "dictionary: " in second and "is current and verified, reused" in second
    comparisons = sorted((tmp_path / "runs").glob("pipe-*/comparison.json"))
    assert len(comparisons) == 2
    tables = [json.loads(p.read_text()) for p in comparisons]
    assert tables[0]["rows"] == tables[1]["rows"]  # same seed, same numbers
    row = tables[0]["rows"][0]
    assert row[0] == "gt_audio" and len(row) == len(tables[0]["header"])
    assert all(0.0 <= v <= 1.0 for v in row[1:9])  # fed and central metrics, all present
    assert (comparisons[0].parent / "comparison.md").read_text().startswith("# Federated")

    # A changed generator setting makes the demo stale again
    assert not demo_is_current(load_config(None, [*sets, "demo.seed=1"]))
