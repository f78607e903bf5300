"""Central DP with client-side clipping in the real simulation: Flower's fixedclipping_mod runs in
the ClientApp (Ray actors), the server adds noise and accounts; epsilon lands in metrics.jsonl
and report.md.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedvida.config import Config
from fedvida.federation.checkpoints import checkpoint_dir, load_checkpoint
from fedvida.federation.privacy import gaussian_epsilon
from fedvida.federation.runner import run_federated
from fedvida.reporting.runlog import RunLog

pytestmark = pytest.mark.slow


def test_client_side_clipping_and_central_noise_are_accounted_per_round(
    fed_pipeline: Config, tmp_path: Path
) -> None:
    # Arrange: a clipping norm far below the clients' update norms, little noise
    cfg = fed_pipeline.model_copy(deep=True)
    cfg.train.runs_dir = tmp_path / "runs"
    clip, z = 0.05, 0.01
    cfg.privacy.dp.mode = "client-fixed"
    cfg.privacy.dp.clipping_norm = clip
    cfg.privacy.dp.noise_multiplier = z
    # Act
    results = run_federated(cfg, ["gt_audio"], "dp")
    # Assert: one noisy release per round, accounted with Flower's RDP accountant
    folder = tmp_path / "runs" / "dp"
    lines = RunLog(folder).read()
    for rnd, line in enumerate(lines, start=1):
        privacy = line["privacy"]
        assert privacy["mode"] == "client-fixed" and privacy["releases"] == rnd
        assert privacy["epsilon"] == pytest.approx(gaussian_epsilon([(z, rnd)], 1e-5, 4))
        assert line["succeeded"] == 4 and line["aggregated"]
    assert results["gt_audio"]["epsilon"] == lines[-1]["privacy"]["epsilon"]
    # Assert: the clients clipped: the global model moved by at most C (+ the noise) in round 2
    one, two = (load_checkpoint(checkpoint_dir(folder, "gt_audio") / f"round_000{r}.safetensors")
                for r in (1, 2))
    moved = float(np.sqrt(sum(np.sum((two.model[k] - one.model[k]) ** 2) for k in one.model)))
    entries = sum(a.size for a in one.model.values())
    noise = z * clip / 4 * np.sqrt(entries)
    assert 0.0 < moved <= clip + 3 * noise
    report = (folder / "report.md").read_text()
    assert "Differential privacy" in report and "| gt_audio | client-fixed |" in report
