"""Run the cells of a sweep that are not finished: resume interrupted ones, record failures."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from fedvida.errors import FedvidaError
from fedvida.sweep.evaluate import evaluate_cell
from fedvida.sweep.spec import EVALUATIONS_FILE, Cell, Sweep, cell_methods
from fedvida.sweep.state import align_checkpoints, cell_state

Runner = Callable[..., dict[str, dict[str, Any]]]


@dataclass
class CellResult:
    """What happened to one run of the sweep in this invocation."""

    status: Literal["done", "failed", "pending"]
    action: str = ""  # reused | ran | resumed | failed | pending
    error: str = ""
    seconds: float = 0.0


def one_line(exc: BaseException) -> str:
    """An exception as one line (FedvidaError text as is, others prefixed by their type)."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return first if isinstance(exc, FedvidaError) else f"{type(exc).__name__}: {first}"


def run_sweep(
    sweep: Sweep,
    runner: Runner | None = None,
    on_change: Callable[[dict[str, CellResult]], object] | None = None,
    say: Callable[[str], None] = print,
) -> dict[str, CellResult]:
    """Run every cell that is not finished; returns ``{run_name: CellResult}``.

    Parameters
    ----------
    sweep
        From `load_sweep` (and `prepare`).
    runner
        ``runner(cfg, methods, name, resume=...)``; default `run_federated`.
    on_change
        Called with the results so far before the first cell and after each cell (the command
        rewrites the report there).
    say
        Where progress lines go.
    """
    if runner is None:
        from fedvida.federation.runner import run_federated

        runner = run_federated
    results: dict[str, CellResult] = {}
    for cell in sweep.unique_cells():
        if cell_state(cell) == "done":
            results[cell.run_name] = _evaluated(cell, CellResult("done", "reused"))
        else:
            results[cell.run_name] = CellResult("pending", "pending")
    if on_change is not None:
        on_change(results)
    todo = [c for c in sweep.unique_cells() if results[c.run_name].status != "done"]
    for n, cell in enumerate(todo, start=1):
        resume = cell.run_dir if cell_state(cell) == "partial" else None
        if resume is not None:
            align_checkpoints(cell)
        (cell.run_dir / EVALUATIONS_FILE).unlink(missing_ok=True)
        verb = "resuming" if resume is not None else "running"
        say(f"sweep {sweep.name}: cell {n}/{len(todo)} {verb} {cell.run_name} "
            f"({cell.describe()})")
        start = time.perf_counter()
        try:
            runner(cell.config, cell_methods(cell), cell.run_name, resume=resume)
            if cell_state(cell) != "done":
                raise FedvidaError(f"run {cell.run_dir} ended without every round logged")
            result = CellResult("done", "resumed" if resume is not None else "ran")
        except Exception as exc:  # a failing cell is recorded and the sweep goes on
            result = CellResult("failed", "failed", one_line(exc))
        result.seconds = time.perf_counter() - start
        result = _evaluated(cell, result)
        if result.status == "failed":
            say(f"sweep {sweep.name}: cell {cell.run_name} failed: {result.error}")
        results[cell.run_name] = result
        if on_change is not None:
            on_change(results)
    return results


def _evaluated(cell: Cell, result: CellResult) -> CellResult:
    """Run the cell's evaluation points when it is done; a failure there fails the cell."""
    if result.status != "done" or not cell.eval_points:
        return result
    try:
        evaluate_cell(cell)
    except Exception as exc:
        return CellResult("failed", "failed", f"evaluation: {one_line(exc)}", result.seconds)
    return result
