"""The centralised job end to end on real demo clips: partition -> extract -> dictionary -> train.

Uses the session's tiny demo dataset (real mp4 files with audio), the real encoders
(EfficientNet-Lite0, YAMNet), the real sentence model, and the `fedvida` CLI.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from fedvida.cli import main
from fedvida.config import METHODS


@pytest.mark.slow
def test_train_all_methods_on_real_demo_features(
    tiny_demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Arrange: a config pointing every stage at tmp_path, small and quick
    work = tmp_path / "work"
    sets = [
        f"data.root={tiny_demo}",
        f"partition.plan={work / 'plan.json'}",
        f"extract.cache_dir={work / 'cache'}",
        f"dictionary.out={work / 'dictionary'}",
        f"train.runs_dir={tmp_path / 'runs'}",
        "partition.num_clients=2",
        "partition.scheme=iid",
        "train.epochs=3",
        "train.batch_size=8",
        "model.hidden=32",
        "model.visual_dim=32",
    ]
    args = [arg for s in sets for arg in ("--set", s)]
    for command in (["partition"], ["extract", "--all"], ["dictionary", "build"]):
        assert main([*command, *args]) == 0, command
    capsys.readouterr()
    # Act
    assert main(["train", "--all-methods", *args]) == 0
    out = capsys.readouterr().out
    # Assert: every method in the table, a complete run folder
    assert all(m in out for m in METHODS)
    (folder,) = (tmp_path / "runs").iterdir()
    metrics = json.loads((folder / "metrics.json").read_text())
    assert list(metrics["methods"]) == [*METHODS, "linear_probe"]  # the probe beside them
    n_test = metrics["methods"]["video_only"]["test"]["num-examples"]
    for method, entry in metrics["methods"].items():
        test = entry["test"]
        assert 0.0 <= test["top1"] <= 1.0, method
        assert sum(map(sum, entry["confusion"])) == n_test, method
        # the missing-audio metrics, on the clips whose real audio is withheld
        assert test["n_missing"] >= 1 and 0.0 <= test["top1_missing"] <= 1.0, method
    for method in METHODS:
        assert 0.0 <= metrics["methods"][method]["test"]["top1_missing_oracle"] <= 1.0
    assert "Missing audio" in out and "gap closed" in out
    assert (folder / "missing_audio.md").read_text().startswith("## Missing audio")
    assert "gen_cos" in metrics["methods"]["generated"]["test"]
    assert "svdmap_retention" in metrics["methods"]["svdmap"]["test"]
    with (folder / "metrics.csv").open() as fh:
        assert [row["method"] for row in csv.DictReader(fh)] == [*METHODS, "linear_probe"]
    for name in ("config.yaml", "comparison.png", "confusion.png", "svdmap_sweep.png"):
        assert (folder / name).stat().st_size > 0, name
    assert len(list(folder.glob("model-*.safetensors"))) == len(METHODS)
    # Same seed, same numbers: a second run of one method reproduces its metrics
    assert main(["train", "--method", "svdmap", *args]) == 0
    second = max((tmp_path / "runs").iterdir(), key=lambda p: p.stat().st_mtime_ns)
    again = json.loads((second / "metrics.json").read_text())["methods"]["svdmap"]["test"]
    assert again == metrics["methods"]["svdmap"]["test"]
