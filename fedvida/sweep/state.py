"""A cell's state on disk: which rounds of which method its run folder has logged."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from fedvida.sweep.spec import Cell, cell_methods


def logged_rounds(run_dir: Path, method: str) -> int:
    """Rounds 1..r of ``method`` present in the cell's ``metrics.jsonl`` (contiguous from 1)."""
    from fedvida.reporting.runlog import RunLog

    have = {int(ln["round"]) for ln in RunLog(run_dir).rounds(method)}
    r = 0
    while r + 1 in have:
        r += 1
    return r


def cell_state(cell: Cell) -> Literal["done", "partial", "new"]:
    """``done``: every method logged every round; ``partial``: a run folder exists; else new."""
    folder = cell.run_dir
    if not (folder / "config.yaml").is_file():
        return "new"
    rounds = cell.config.federation.rounds
    if all(logged_rounds(folder, m) >= rounds for m in cell_methods(cell)):
        return "done"
    return "partial"


def align_checkpoints(cell: Cell) -> list[Path]:
    """Delete checkpoints newer than the last round logged for their method; return them.

    A resume starts after the newest checkpoint; a round whose checkpoint was written but whose
    log line was lost (or a truncated ``metrics.jsonl``) would otherwise never be logged again.
    """
    from fedvida.federation.checkpoints import checkpoint_dir, list_checkpoints

    removed = []
    for method in cell_methods(cell):
        last = logged_rounds(cell.run_dir, method)
        for path in list_checkpoints(checkpoint_dir(cell.run_dir, method)):
            if int(re.findall(r"\d+", path.name)[-1]) > last:
                path.unlink()
                removed.append(path)
    return removed
