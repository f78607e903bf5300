"""Sweeps: a grid of federated runs from one YAML file, resumable, with one report.

A *sweep file* (``configs/sweeps/<name>.yaml``) names a base config, fixed overrides, the methods
and rounds, and the cells: the cartesian product of ``grid`` axes and/or an explicit ``cells``
list, optionally in several labelled ``groups`` (e.g. audio withheld "per clip" and "per
client"). Every cell is one federated run (`fedvida.federation.runner.run_federated`: all methods
of the cell in one Ray start) in its own run folder under ``<out>/cells/``.

Why the design:

* **Validated before anything runs.** Every cell's config (and every evaluation point) is
  resolved and validated up front, so a typo in the last cell does not surface after an hour;
  a bad cell is one line naming the sweep file and the cell.
* **Resumable by construction.** A cell's folder is named after a hash of its resolved config,
  so a rerun finds the folders of finished cells (their ``metrics.jsonl`` holds every round of
  every method) and skips them, continues an interrupted cell from its checkpoints (the
  ``--resume`` path of `run_federated`), and an edited sweep file simply makes new cells. Two
  cells that resolve to the same config share one run.
* **A failing cell does not stop the sweep**: it is recorded as one line and the next cell runs;
  rerunning the sweep retries it.
* **Withholding needs plans, not features.** Each cell gets the plan of its own partition config
  (``<out>/plans/``); features are extracted without looking at withholding and are reused from
  the cache (docs/data.md, docs/features.md). Missing inputs are prepared with the same stage
  functions as the main job (`fedvida.stages`), or named in a one-line error.
* **Test-time knobs need no training.** ``evaluate`` axes (only ``partition.withhold.test_rate``)
  re-evaluate a finished cell's final global model on differently withheld test sets, with the
  server's own evaluator, instead of retraining the same model once per test rate.

Modules: `spec` (the sweep file, its cells and their configs), `state` (a cell's rounds on
disk), `prepare` (plans, features, dictionary), `run` (the cells, resumed or retried),
`evaluate` (test-time evaluation points). `fedvida.reporting.sweep_report` writes
``report.md``, ``summary.json`` and the plots, with one module per report kind
(`fedvida.reporting.sweep_kinds`).
"""

from fedvida.sweep.evaluate import evaluate_cell
from fedvida.sweep.prepare import missing_feature_partitions, prepare
from fedvida.sweep.run import CellResult, Runner, one_line, run_sweep
from fedvida.sweep.spec import (
    CELLS_DIR,
    DEFAULT_BASE,
    EVAL_ONLY_KEYS,
    EVALUATIONS_FILE,
    MANAGED_KEYS,
    PLANS_DIR,
    SWEEPS_DIR,
    Cell,
    GroupSpec,
    ReportSpec,
    Sweep,
    SweepSpec,
    cell_methods,
    config_key,
    expand,
    format_value,
    load_spec,
    load_sweep,
    override_text,
    placed,
    plan_key,
    short_key,
    slug,
)
from fedvida.sweep.state import align_checkpoints, cell_state, logged_rounds

__all__ = [
    "CELLS_DIR", "DEFAULT_BASE", "EVALUATIONS_FILE", "EVAL_ONLY_KEYS", "MANAGED_KEYS",
    "PLANS_DIR", "SWEEPS_DIR", "Cell", "CellResult", "GroupSpec", "ReportSpec", "Runner",
    "Sweep", "SweepSpec", "align_checkpoints", "cell_methods", "cell_state", "config_key",
    "evaluate_cell", "expand", "format_value", "load_spec", "load_sweep", "logged_rounds",
    "missing_feature_partitions", "one_line", "override_text", "placed", "plan_key", "prepare",
    "run_sweep", "short_key", "slug",
]
