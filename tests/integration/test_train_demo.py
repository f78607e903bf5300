"""The centralised job end to end on real demo clips: partition -> extract -> dictionary -> train.

Uses the session's tiny demo dataset (real mp4 files with audio), the real encoders
(EfficientNet-Lite0, YAMNet), the real sentence model, the stage functions (`fedvida.stages`) and
the `fedvida train` command.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from small_config import SMOKE_CONFIG, SmallConfig, work_paths

from fedvida import stages
from fedvida.cli import main
from fedvida.config import METHODS


@pytest.mark.slow
def test_train_all_methods_on_real_demo_features(
    tiny_demo: Path, tmp_path: Path, small_config: SmallConfig,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Arrange: the small config on the tiny demo, every file under tmp_path/work; the stages
    # before training as library calls
    sets = [f"data.root={tiny_demo}", "train.epochs=3"]
    cfg = small_config(*sets)
    stages.plan(cfg)
    stages.extract(cfg)
    stages.dictionary(cfg)
    capsys.readouterr()
    # Act: the command (its table is part of what is tested)
    args = ["--config", str(SMOKE_CONFIG)]
    for s in [*work_paths(tmp_path / "work"), *sets]:
        args += ["--set", s]
    assert main(["train", "--all-methods", *args]) == 0
    out = capsys.readouterr().out
    # Assert: every method in the table, a complete run folder
    assert all(m in out for m in METHODS)
    runs = tmp_path / "work" / "runs"
    (folder,) = runs.iterdir()
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
    second = stages.train(cfg, ["svdmap"]).folder
    again = json.loads((second / "metrics.json").read_text())["methods"]["svdmap"]["test"]
    assert again == metrics["methods"]["svdmap"]["test"]
