"""Test-time knobs without retraining: a finished cell's final models at its evaluation points."""

from __future__ import annotations

import json
from typing import Any

from fedvida.errors import FedvidaError
from fedvida.sweep.spec import EVALUATIONS_FILE, Cell, cell_methods


def evaluate_cell(cell: Cell) -> dict[str, Any]:
    """Evaluate the cell's final global models at its evaluation points (cached in the folder).

    The final checkpoint of each method is evaluated by the server's own evaluator
    (`fedvida.federation.server.ServerEvaluator`) on the test split of each point's plan; at the
    cell's own test rate this reproduces the last logged server metrics exactly.
    """
    from fedvida.federation.checkpoints import checkpoint_dir, latest_checkpoint
    from fedvida.federation.server import ServerEvaluator, dictionary_digest

    path = cell.run_dir / EVALUATIONS_FILE
    try:
        saved = json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError:
        saved = {}
    final_round = cell.config.federation.rounds
    points: dict[str, Any] = saved.get("points", {}) if saved.get("round") == final_round else {}
    todo = [(label, ecfg) for label, ecfg in cell.eval_points if label not in points]
    if not todo:
        return points
    models = {}
    for method in cell_methods(cell):
        ckpt = latest_checkpoint(checkpoint_dir(cell.run_dir, method))
        if ckpt is None or ckpt.server_round != cell.config.federation.rounds:
            raise FedvidaError(f"cell {cell.run_name}: no final checkpoint of {method}")
        models[method] = ckpt.model
    for label, ecfg in todo:
        evaluator = ServerEvaluator(ecfg, dictionary_digest(ecfg))
        res = {}
        for method, arrays in models.items():
            res[method] = evaluator(ecfg, arrays, method)
        points[label] = res
    path.write_text(json.dumps({"round": cell.config.federation.rounds, "points": points},
                               indent=1, default=_json_safe))
    return points


def _json_safe(value: Any) -> Any:
    return str(value)

