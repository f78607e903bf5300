"""Fixture of the federation tests: the tiny demo, partitioned, extracted, with a dictionary.

Built once per session with the real pipeline (plan -> EfficientNet-Lite0 / YAMNet features ->
MiniLM dictionary); extraction dominates its cost, so every federated test shares it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from small_config import make_small_config

from fedvida.config import Config, DemoConfig

FED_CLIENTS = 4


def fed_config(data_root: Path, work: Path, *overrides: str) -> Config:
    """The small config (configs/smoke.yaml) on ``data_root`` with `FED_CLIENTS` clients, every
    file under ``work``."""
    return make_small_config(work, f"data.root={data_root}",
                             f"partition.num_clients={FED_CLIENTS}",
                             "federation.ray_num_cpus=2", *overrides)


def _prepare(cfg: Config) -> Config:
    """Plan, features (every client and the test split) and dictionary of ``cfg``: the stage
    functions of the main job."""
    from fedvida import stages

    stages.plan(cfg)
    stages.extract(cfg)
    stages.dictionary(cfg)
    return cfg


@pytest.fixture(scope="session")
def fed_pipeline(tiny_demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Config:
    """A config whose plan, feature cache and dictionary exist (treat them as read-only)."""
    work = tmp_path_factory.mktemp("fed-work")
    return _prepare(fed_config(tiny_demo, work))


# Learnable, still small: 4 classes (two visual pairs that only audio tells apart) x 8 training
# clips, 4 test clips per class, every clip with a clean audio track; a quarter of the training
# clips' audio withheld, half of the test clips'. The tiny demo (4 training clips per class,
# 8 test clips) is too small to learn anything that generalises.
LEARNABLE_DEMO = DemoConfig(classes=4, clips_per_class=8, val_clips_per_class=4, seed=0,
                            no_stream_rate=0.0, silent_rate=0.0, weak_audio_rate=0.0,
                            ambiguous_video_rate=0.0, visual_identity="pair", workers=1)


@pytest.fixture(scope="session")
def learnable_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Config:
    """Like `fed_pipeline`, on `LEARNABLE_DEMO` with 2 clients (treat it as read-only)."""
    from fedvida.data.demo import write_demo_dataset

    work = tmp_path_factory.mktemp("learn-work")
    write_demo_dataset(LEARNABLE_DEMO, work / "demo")
    return _prepare(fed_config(work / "demo", work, "partition.num_clients=2",
                               "partition.withhold.clip_rate=0.25"))
