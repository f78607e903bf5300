"""Fixtures of every unit test."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def task_identity() -> None:
    """What a ServerApp process has: needed to build Flower Messages outside Flower (the
    federation tests' in-process grid, `fed_helpers.LocalGrid`)."""
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id = 7
    TaskIdentity.node_id = 0
    TaskIdentity.task_id = 1
