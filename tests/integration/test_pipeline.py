"""The main job (`fedvida run`) end to end on a tiny demo, and its reuse of current stages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from small_config import SMOKE_CONFIG, SmallConfig, work_paths

import fedvida.config
from fedvida.cli import main
from fedvida.pipeline import demo_is_current, dictionary_is_current, run_pipeline

pytestmark = pytest.mark.slow

# on top of configs/smoke.yaml: a smaller demo, one epoch and one round
SETS = ["name=pipe", "demo.clips_per_class=4", "demo.val_clips_per_class=2", "train.epochs=1",
        "federation.rounds=1", "federation.ray_num_cpus=2"]


def test_run_reads_its_config_once_writes_comparison_and_reuses_current_stages(
    tmp_path: Path, small_config: SmallConfig, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Arrange: every path under tmp_path/work, one method; count the reads of the config file
    cfg = small_config(*SETS)
    assert not demo_is_current(cfg) and not dictionary_is_current(cfg)
    reads: list[Path] = []
    read = fedvida.config.read_yaml_mapping

    def counted(path: Path, what: str = "config") -> dict[str, object]:
        reads.append(Path(path))
        return read(path, what)

    monkeypatch.setattr(fedvida.config, "read_yaml_mapping", counted)
    argv = ["run", "--method", "gt_audio", "--config", str(SMOKE_CONFIG)]
    for s in [*work_paths(tmp_path / "work"), *SETS]:
        argv += ["--set", s]

    # Act: a first run through the CLI, then a second one over the same work folder through
    # the library call
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert reads.count(SMOKE_CONFIG) == 1  # parsed and validated once for every stage
    run_pipeline(cfg, ["gt_audio"])
    second = capsys.readouterr().out

    # Assert: the first run made every stage, the second reused the demo and the dictionary
    assert demo_is_current(cfg) and dictionary_is_current(cfg)
    assert "is current, reused" not in first
    assert "demo dataset" in first and "semantic dictionary built" in first
    assert "demo data: " in second and "is current, reused" in second
    assert "dictionary: " in second and "is current and verified, reused" in second
    comparisons = sorted((tmp_path / "work" / "runs").glob("pipe-*/comparison.json"))
    assert len(comparisons) == 2
    tables = [json.loads(p.read_text()) for p in comparisons]
    assert tables[0]["rows"] == tables[1]["rows"]  # same seed, same numbers
    row = tables[0]["rows"][0]
    assert row[0] == "gt_audio" and len(row) == len(tables[0]["header"])
    assert all(0.0 <= v <= 1.0 for v in row[1:9])  # fed and central metrics, all present
    assert (comparisons[0].parent / "comparison.md").read_text().startswith("# Federated")

    # A changed generator setting makes the demo stale again
    assert not demo_is_current(small_config(*SETS, "demo.seed=1"))
