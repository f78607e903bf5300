"""Fixtures of every unit test."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def task_identity() -> None:
    """What a ServerApp process has: needed to build Flower Messages outside Flower (the
    federation tests' in-process grid, `fed_helpers.LocalGrid`)."""
    from fedvida.federation.flower_compat import set_task_identity

    set_task_identity(run_id=7, node_id=0, task_id=1)
