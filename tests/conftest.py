"""Shared fixtures: the small config (configs/smoke.yaml) and a tiny real demo dataset (mp4 files
with audio, MiT layout)."""

from __future__ import annotations

from pathlib import Path

import pytest
from small_config import SmallConfig, make_small_config

from fedvida.config import DemoConfig
from fedvida.data.demo import write_demo_dataset


@pytest.fixture
def small_config(tmp_path: Path) -> SmallConfig:
    """``small_config(*overrides)``: `make_small_config` under this test's ``tmp_path/work``."""
    return lambda *overrides: make_small_config(tmp_path / "work", *overrides)

# 4 classes (two visual pairs sharing one picture: `visual_identity="pair"`, so that only the
# audio tells the classes of a pair apart) x (4 training + 2 validation) clips = 24 clips.
# The missing-audio quotas are exact per split, round(rate * clips): with rates of 1/8 the
# training split (16 clips) gets 2 clips with no audio stream and 2 with a silent track, and
# the validation split (8 clips) 1 of each, so every test sees both kinds in both splits.
TINY_DEMO = DemoConfig(
    classes=4,
    clips_per_class=4,
    val_clips_per_class=2,
    seed=0,
    no_stream_rate=0.125,
    silent_rate=0.125,
    weak_audio_rate=0.125,
    ambiguous_video_rate=0.125,
    visual_identity="pair",
    workers=1,
)


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Write the tiny demo once per test session and return its root (treat it as read-only)."""
    root = tmp_path_factory.mktemp("tiny-demo") / "demo-mit"
    write_demo_dataset(TINY_DEMO, root)
    return root
