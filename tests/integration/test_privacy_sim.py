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
    fed_pipeline: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Arrange: a clipping norm far below the clients' update norms, little noise; the noise
    # the server adds (in this process: the ServerApp runs here) is recorded as it is added
    from fedvida.federation.flower_compat import dp_noise_modules

    flower_fixed = dp_noise_modules()["fixed"]

    added: list[tuple[list[np.ndarray], list[np.ndarray]]] = []  # (noise, noisy result)
    real_noise = flower_fixed.add_gaussian_noise_inplace

    def record_noise(arrays: list[np.ndarray], std: float) -> None:
        before = [a.astype(np.float64) for a in arrays]
        real_noise(arrays, std)
        added.append(([a.astype(np.float64) - b for a, b in zip(arrays, before, strict=True)],
                      [a.copy() for a in arrays]))

    monkeypatch.setattr(flower_fixed, "add_gaussian_noise_inplace", record_noise)
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
    # Assert: the clients clipped. Round 2 moved the global model by the mean of 4 clipped
    # updates (norm <= C) plus the noise actually added: without that noise the move is
    # within C (a client that did not clip moves it by ~10x C), and not trivially zero
    one, two = (load_checkpoint(checkpoint_dir(folder, "gt_audio") / f"round_000{r}.safetensors")
                for r in (1, 2))
    assert len(added) == 2  # one noisy release per round
    noise_by_key: dict[str, np.ndarray] = {}
    for noise, noisy in zip(*added[1], strict=True):  # which model array each one is
        (key,) = [k for k, v in two.model.items()
                  if v.shape == noisy.shape and np.array_equal(v, noisy) and k not in noise_by_key]
        noise_by_key[key] = noise
    assert set(noise_by_key) == set(two.model)
    entries = sum(a.size for a in one.model.values())
    noise_norm = float(np.sqrt(sum(np.sum(n**2) for n in noise_by_key.values())))
    assert noise_norm == pytest.approx(z * clip / 4 * np.sqrt(entries), rel=0.05)  # z C / m
    clean = float(np.sqrt(sum(np.sum((two.model[k].astype(np.float64) - one.model[k]
                                      - noise_by_key[k]) ** 2) for k in one.model)))
    assert 0.2 * clip < clean <= clip * (1 + 1e-4)
    report = (folder / "report.md").read_text()
    assert "Differential privacy" in report and "| gt_audio | client-fixed |" in report


def test_poisson_sampling_with_central_dp_in_the_simulation(
    fed_pipeline: Config, tmp_path: Path
) -> None:
    # Arrange: 4 clients, each joins a round with probability 0.5; server-side clipping
    from fedvida.federation.strategy import sample_partitions

    cfg = fed_pipeline.model_copy(deep=True)
    cfg.train.runs_dir = tmp_path / "runs"
    cfg.federation.sampling = "poisson"
    cfg.federation.fraction_train = 0.5
    z = 0.5
    cfg.privacy.dp.mode = "server-fixed"
    cfg.privacy.dp.clipping_norm = 0.05
    cfg.privacy.dp.noise_multiplier = z
    # Act
    run_federated(cfg, ["gt_audio"], "poisson")
    # Assert: the clients of each round are the seeded Poisson sample, every round is a noisy
    # release (also an empty one), accounted with amplification at q = 0.5
    lines = RunLog(tmp_path / "runs" / "poisson").read()
    assert len(lines) == cfg.federation.rounds
    assert cfg.train.seed == 0 and lines[0]["sampled"] == 0  # seed 0: round 1 samples nobody
    for rnd, line in enumerate(lines, start=1):
        expected = sample_partitions(range(4), 0.5, 0, cfg.train.seed, rnd, "poisson")
        assert line["sampled"] == len(expected) and line["aggregated"]
        privacy = line["privacy"]
        assert privacy["releases"] == rnd and privacy["sampling_rate"] == 0.5
        assert "Poisson-subsampled Gaussian" in privacy["accounting"]
        assert privacy["epsilon"] == pytest.approx(
            gaussian_epsilon([(z, rnd)], 1e-5, 4, sampling_rate=0.5))
