"""The small config every test builds on: configs/smoke.yaml with its files under one folder.

The `small_config` fixture (tests/conftest.py) gives each test its own folder; session fixtures
call `make_small_config` with theirs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fedvida.config import Config, load_config

SMOKE_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"
SmallConfig = Callable[..., Config]


def work_paths(work: Path) -> list[str]:
    """Overrides that put every file a config reads or writes under ``work``."""
    return [
        f"demo.out={work / 'demo'}",
        f"data.root={work / 'demo'}",
        f"partition.plan={work / 'plan.json'}",
        f"extract.cache_dir={work / 'cache'}",
        f"dictionary.out={work / 'dictionary'}",
        f"train.runs_dir={work / 'runs'}",
    ]


def make_small_config(work: Path, *overrides: str) -> Config:
    """``configs/smoke.yaml`` (tiny demo, 2 clients, small model, 2 rounds) with every path
    under ``work`` and then ``overrides`` (``a.b=value``)."""
    return load_config(SMOKE_CONFIG, [*work_paths(work), *overrides])
