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
  commands as the main job (`fedvida.pipeline`), or named in a one-line error.
* **Test-time knobs need no training.** ``evaluate`` axes (only ``partition.withhold.test_rate``)
  re-evaluate a finished cell's final global model on differently withheld test sets, with the
  server's own evaluator, instead of retraining the same model once per test rate.

`fedvida.reporting.sweep_report` writes ``report.md``, ``summary.json`` and the plots.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from fedvida.config import (
    Config,
    Method,
    format_validation_error,
    load_config,
    read_yaml_mapping,
)
from fedvida.errors import ConfigError, FedvidaError

SWEEPS_DIR = Path("runs/sweeps")
DEFAULT_BASE = Path("configs/default.yaml")
CELLS_DIR = "cells"
PLANS_DIR = "plans"
EVALUATIONS_FILE = "evaluations.json"
# Knobs that change only the server's evaluation, not training: an `evaluate` axis re-evaluates
# the finished model instead of training it again.
EVAL_ONLY_KEYS = ("partition.withhold.test_rate",)
# Set by the sweep for every cell; a sweep file must not set them.
MANAGED_KEYS = {
    "name": "the cell's run folder is named by the sweep",
    "train.runs_dir": "cells live under the sweep's out folder",
    "partition.plan": "each cell gets the plan of its partition config under <out>/plans",
    "federation.methods": "use the sweep's 'methods' list",
}
ReportKind = Literal["generic", "privacy", "communication", "missing_audio"]
Runner = Callable[..., dict[str, dict[str, Any]]]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


Overrides = dict[str, Any]


def _check_axes(grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
    for key, values in grid.items():
        if not values:
            raise ValueError(f"axis '{key}' has no values")
    return grid


class GroupSpec(_Spec):
    """One labelled part of a sweep: fixed overrides plus a grid and/or explicit cells."""

    label: str = Field("", description="Shown in the report, e.g. 'per clip'.")
    set: Overrides = Field(default_factory=dict, description="Overrides of every cell here.")
    grid: dict[str, list[Any]] = Field(
        default_factory=dict, description="Axes: dotted key -> values; cells = their product."
    )
    cells: list[Overrides] = Field(
        default_factory=list, description="Explicit cells (mappings of dotted keys to values)."
    )
    evaluate: dict[str, list[Any]] | None = Field(
        None, description="Evaluation-only axes for this group (None: the sweep's)."
    )
    methods: list[Method] | None = Field(
        None, description="Methods of this group's cells (None: the sweep's), e.g. one "
        "reference cell for a method that does not depend on the swept knob."
    )

    _grid = field_validator("grid")(_check_axes)


class ReportSpec(_Spec):
    """What the report shows beside the generic tables."""

    kind: ReportKind = "generic"
    metric: str = Field("top1", description="Server metric on the y axes and in the tables.")
    target: float = Field(
        0.5, ge=0.0, le=1.0, description="communication: bytes to reach this value of `metric`."
    )


class SweepSpec(_Spec):
    """A sweep file (see configs/sweeps/ and docs)."""

    name: str | None = Field(None, description="Default: the file name without .yaml.")
    description: str = ""
    base: Path = DEFAULT_BASE
    out: Path | None = Field(None, description="Default: runs/sweeps/<name>.")
    methods: list[Method] = Field(
        default_factory=list, description="Trained in every cell; empty: the base config's."
    )
    rounds: int | None = Field(None, ge=1, description="federation.rounds of every cell.")
    set: Overrides = Field(default_factory=dict, description="Overrides of every cell.")
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    cells: list[Overrides] = Field(default_factory=list)
    groups: list[GroupSpec] = Field(default_factory=list)
    evaluate: dict[str, list[Any]] = Field(default_factory=dict)
    report: ReportSpec = Field(default_factory=ReportSpec)

    _grid = field_validator("grid")(_check_axes)

    @model_validator(mode="after")
    def _names(self) -> SweepSpec:
        if self.name is not None and not re.fullmatch(r"[A-Za-z0-9_.\-]+", self.name):
            raise ValueError(f"name '{self.name}' must be a plain folder name")
        return self

    def all_groups(self) -> list[GroupSpec]:
        """The top-level grid/cells as one unlabelled group, then the listed groups."""
        out = list(self.groups)
        if self.grid or self.cells or not self.groups:
            out.insert(0, GroupSpec(grid=self.grid, cells=self.cells))
        return out


@dataclass
class Cell:
    """One run of the sweep (cells resolving to the same config share ``run_name``)."""

    index: int
    group: str
    values: dict[str, Any]  # the axis values / explicit overrides that define the cell
    overrides: list[str]  # every override applied to the base config, in order
    config: Config  # resolved, with name / runs_dir / plan set by the sweep
    key: str  # hash of the resolved config (what makes two cells the same run)
    run_name: str
    plan_path: Path
    evaluate: dict[str, list[Any]] = field(default_factory=dict)
    eval_points: list[tuple[str, Config]] = field(default_factory=list)  # (label, config)

    @property
    def run_dir(self) -> Path:
        return Path(self.config.train.runs_dir) / self.run_name

    def values_text(self) -> str:
        """``a=1, b=2`` with short keys (empty when the cell has no values of its own)."""
        return ", ".join(f"{short_key(k)}={format_value(v)}" for k, v in self.values.items())

    def describe(self) -> str:
        """``group: a=1, b=2`` (short keys), for messages and tables."""
        text = self.values_text()
        if self.group:
            return f"{self.group}: {text}" if text else self.group
        return text or "base config"


@dataclass
class Sweep:
    """A loaded, expanded and validated sweep."""

    path: Path
    spec: SweepSpec
    name: str
    out: Path
    methods: list[str]  # every method of some cell, in order
    rounds: list[int]  # the distinct round counts of the cells
    cells: list[Cell]
    extra: list[str] = field(default_factory=list)  # --set overrides from the command line

    def unique_cells(self) -> list[Cell]:
        """One cell per run (the first of cells that resolve to the same config)."""
        seen: dict[str, Cell] = {}
        for cell in self.cells:
            seen.setdefault(cell.run_name, cell)
        return list(seen.values())


# ---------------------------------------------------------------------------- loading
def format_value(value: Any) -> str:
    """A compact text form of an override value (lists joined with '+')."""
    if isinstance(value, list | tuple):
        return "+".join(format_value(v) for v in value)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return "none" if value is None else str(value)


def short_key(key: str) -> str:
    """The last part of a dotted key (``privacy.dp.noise_multiplier`` -> ``noise_multiplier``)."""
    return key.rsplit(".", 1)[-1]


def override_text(key: str, value: Any) -> str:
    """``key=value`` in the form `fedvida.config.apply_override` parses back (JSON is YAML)."""
    return f"{key}={json.dumps(value, default=str)}"


def load_spec(path: Path) -> SweepSpec:
    """Read and validate a sweep file; errors are one `ConfigError` line naming the file."""
    path = Path(path)
    doc = read_yaml_mapping(path, "sweep")
    try:
        return SweepSpec.model_validate(doc)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, str(path), "sweep file")) from None


def expand(spec: SweepSpec) -> list[tuple[str, dict[str, Any], dict[str, Any],
                                          dict[str, list[Any]]]]:
    """The cells of a spec in order: ``(group label, defining values, group set, evaluate)``.

    The group set starts with ``federation.methods`` when the group lists its own methods.

    A group's cells are the product of its grid axes (first axis slowest), then its explicit
    cells; a group with neither is one cell (its fixed overrides alone).
    """
    out = []
    for group in spec.all_groups():
        evaluate = spec.evaluate if group.evaluate is None else group.evaluate
        combos: list[dict[str, Any]] = []
        if group.grid:
            keys = list(group.grid)
            combos += [dict(zip(keys, vals, strict=True))
                       for vals in itertools.product(*(group.grid[k] for k in keys))]
        combos += [dict(c) for c in group.cells]
        if not combos:
            combos = [{}]
        fixed = {} if group.methods is None else {"federation.methods": list(group.methods)}
        fixed.update(group.set)
        out += [(group.label, combo, fixed, evaluate) for combo in combos]
    return out


def _check_keys(path: Path, where: str, keys: Sequence[str]) -> None:
    for key in keys:
        if key in MANAGED_KEYS:
            raise ConfigError(f"sweep {path}: {where}: '{key}' cannot be set in a sweep "
                              f"({MANAGED_KEYS[key]})")


def config_key(cfg: Config) -> str:
    """Hash of a resolved config without the fields the sweep sets per cell.

    Only values that differ from the defaults count, so a fedvida version that adds a config
    field (with a default) keeps the keys, and with them the finished cells, of a sweep.
    """
    dump = cfg.model_dump(mode="json", exclude_defaults=True)
    dump.pop("name", None)
    dump.get("train", {}).pop("runs_dir", None)
    dump.get("partition", {}).pop("plan", None)
    return hashlib.sha256(json.dumps(dump, sort_keys=True).encode()).hexdigest()


def plan_key(cfg: Config) -> str:
    """Hash of what a plan depends on: the data and partition sections (not the plan path)."""
    dump = cfg.model_dump(mode="json", exclude_defaults=True)
    part = {k: v for k, v in dump.get("partition", {}).items() if k != "plan"}
    payload = json.dumps({"data": dump.get("data", {}), "partition": part}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def slug(group: str, values: dict[str, Any]) -> str:
    """A readable folder-name stem of a cell (``per-clip_clip_rate=0.25``)."""
    shorts = [short_key(k) for k in values]
    dup = {s for s in shorts if shorts.count(s) > 1}
    parts = [group] if group else []
    parts += [f"{k if short_key(k) in dup else short_key(k)}={format_value(v)}"
              for k, v in values.items()]
    text = re.sub(r"[^A-Za-z0-9._=+\-]+", "-", "_".join(parts) or "base").strip("-")
    return text[:80]


def _resolve(path: Path, where: str, base: Path, overrides: list[str]) -> Config:
    try:
        return load_config(base, overrides)
    except ConfigError as exc:
        raise ConfigError(f"sweep {path}: {where}: {exc}") from None


def load_sweep(path: Path, extra: Sequence[str] = (), out: Path | None = None) -> Sweep:
    """Load a sweep file, expand its cells and validate every cell's config.

    Parameters
    ----------
    path
        The sweep file.
    extra
        ``a.b=value`` overrides applied last to every cell (``fedvida sweep --set``).
    out
        Output folder (default: the file's ``out`` or ``runs/sweeps/<name>``).

    Raises
    ------
    ConfigError
        One line naming the file and the first bad cell (or field of the file).
    """
    path = Path(path)
    spec = load_spec(path)
    name = spec.name or path.stem
    out = Path(out or spec.out or SWEEPS_DIR / name)
    _check_keys(path, "set", list(spec.set))
    for gspec in spec.all_groups():
        where = f"group '{gspec.label}'" if gspec.label else "grid/cells"
        _check_keys(path, where, [*gspec.set, *gspec.grid, *(k for c in gspec.cells for k in c)])
    if not spec.base.is_file():
        raise ConfigError(f"sweep {path}: base config not found: {spec.base}")
    head: list[str] = []
    if spec.methods:
        head.append(override_text("federation.methods", list(spec.methods)))
    if spec.rounds is not None:
        head.append(override_text("federation.rounds", spec.rounds))
    head += [override_text(k, v) for k, v in spec.set.items()]
    for extra_item in extra:
        key = extra_item.partition("=")[0].strip()
        _check_keys(path, "--set", [key])
    cells: list[Cell] = []
    keys_seen: dict[str, str] = {}
    for i, (group, values, group_set, evaluate) in enumerate(expand(spec), start=1):
        overrides = [*head, *(override_text(k, v) for k, v in group_set.items()),
                     *(override_text(k, v) for k, v in values.items()), *extra]
        label = f"cell {i} ({group + ': ' if group else ''}" + (
            ", ".join(f"{k}={format_value(v)}" for k, v in values.items()) or "base") + ")"
        cfg = _resolve(path, label, spec.base, overrides)
        for key in evaluate:
            if key not in EVAL_ONLY_KEYS:
                raise ConfigError(f"sweep {path}: evaluate: '{key}' changes training; only "
                                  f"{', '.join(EVAL_ONLY_KEYS)} can be varied without retraining")
        key = config_key(cfg)
        run_name = keys_seen.setdefault(key, f"{slug(group, values)}-{key[:8]}")
        plan_path = out / PLANS_DIR / f"plan-{plan_key(cfg)}.json"
        cfg.name = run_name
        cfg.train.runs_dir = out / CELLS_DIR
        cfg.partition.plan = plan_path
        cell = Cell(i, group, values, overrides, cfg, key, run_name, plan_path, dict(evaluate))
        for ekey, evalues in evaluate.items():
            for value in evalues:
                text = override_text(ekey, value)
                ecfg = _resolve(path, f"{label}, evaluate {ekey}={format_value(value)}",
                                spec.base, [*overrides, text])
                ecfg.name, ecfg.train.runs_dir = run_name, cfg.train.runs_dir
                ecfg.partition.plan = out / PLANS_DIR / f"plan-{plan_key(ecfg)}.json"
                cell.eval_points.append((f"{short_key(ekey)}={format_value(value)}", ecfg))
        cells.append(cell)
    methods = list(dict.fromkeys(m for c in cells for m in cell_methods(c)))
    rounds = sorted({c.config.federation.rounds for c in cells})
    return Sweep(path=path, spec=spec, name=name, out=out, methods=methods, rounds=rounds,
                 cells=cells, extra=list(extra))


# ---------------------------------------------------------------------------- cell state
def logged_rounds(run_dir: Path, method: str) -> int:
    """Rounds 1..r of ``method`` present in the cell's ``metrics.jsonl`` (contiguous from 1)."""
    from fedvida.reporting.runlog import RunLog

    have = {int(ln["round"]) for ln in RunLog(run_dir).rounds(method)}
    r = 0
    while r + 1 in have:
        r += 1
    return r


def cell_methods(cell: Cell) -> list[str]:
    return cell.config.federation.method_list(cell.config.train.method)


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


# ---------------------------------------------------------------------------- preparation
def _stage_command(argv: list[str], cfg_base: Path, overrides: Sequence[str]) -> list[str]:
    args = [*argv, "--config", str(cfg_base)]
    for o in overrides:
        args += ["--set", o]
    return args


def _run_stage(argv: list[str]) -> None:
    """One stage of the main job, through the same CLI entry point `fedvida.pipeline` uses."""
    from fedvida.cli import main as cli_main

    code = cli_main(argv)
    if code != 0:
        raise FedvidaError(f"stage 'fedvida {' '.join(argv[:2])}' failed (exit code {code})")


def _shell(argv: list[str]) -> str:
    import shlex

    return "fedvida " + " ".join(shlex.quote(a) for a in argv)


def missing_feature_partitions(cfg: Config, plan: Any) -> list[str]:
    """Partitions of ``plan`` (clients and ``test``) with some clip not in the feature cache."""
    from fedvida.features.cache import clip_path, open_stores
    from fedvida.features.store import clip_key

    missing = []
    vstore, astore = open_stores(cfg.extract)
    vindex, aindex = vstore.index(), astore.index()
    for part in [*range(plan.num_clients), "test"]:
        for clip in plan.partition(part):
            key = clip_key(clip_path(plan, clip))
            if key not in vindex or key not in aindex:
                missing.append(str(part))
                break
    return missing


def prepare(sweep: Sweep, run_stages: bool = True,
            say: Callable[[str], None] = print) -> dict[Path, Any]:
    """Make sure every cell can run: dataset, plans, cached features, dictionary.

    Plans are written for every cell and evaluation point (``<out>/plans/plan-<hash>.json``;
    rewritten only when their content changed). Missing demo data, features or dictionary are
    made by the main job's stage commands when ``run_stages`` (otherwise a one-line
    `FedvidaError` names the command to run).

    Returns
    -------
    dict
        ``{plan path: Plan}`` of every plan of the sweep.
    """
    from fedvida.data.mit import load_dataset
    from fedvida.data.partition import Plan, make_plan
    from fedvida.pipeline import demo_is_current, dictionary_is_current

    base = sweep.spec.base
    configs: list[tuple[Cell, Config]] = []
    for cell in sweep.unique_cells():
        configs += [(cell, cell.config), *((cell, c) for _, c in cell.eval_points)]

    def need(argv: list[str], cell: Cell, cfg: Config, what: str) -> None:
        cmd = _stage_command(argv, base, [*cell.overrides, f"partition.plan={cfg.partition.plan}"])
        if not run_stages:
            raise FedvidaError(f"sweep {sweep.path}: {what}; run `{_shell(cmd)}`")
        say(f"sweep: {what}: running `{_shell(cmd[:2])}`")
        _run_stage(cmd)

    done_demo: set[str] = set()
    for cell, cfg in configs:
        root = Path(cfg.data.root)
        if str(root) in done_demo:
            continue
        done_demo.add(str(root))
        if root.resolve() == Path(cfg.demo.out).resolve() and not demo_is_current(cfg):
            need(["data", "demo"], cell, cfg, f"demo data {root} missing or outdated")
        elif not root.is_dir():
            raise FedvidaError(f"sweep {sweep.path}: data.root {root} not found (point it at "
                               "a dataset, or at demo.out to have the demo written)")
    indexes: dict[str, Any] = {}
    plans: dict[Path, Any] = {}
    for cell, cfg in configs:
        path = Path(cfg.partition.plan)
        if path in plans:
            continue
        dkey = json.dumps(cfg.data.model_dump(mode="json"), sort_keys=True)
        if dkey not in indexes:
            indexes[dkey] = load_dataset(cfg.data)
        try:
            plan = make_plan(indexes[dkey], cfg.partition)
        except ConfigError as exc:
            raise ConfigError(f"sweep {sweep.path}: cell {cell.index} ({cell.describe()}): "
                              f"{exc}") from None
        old = None
        if path.is_file():
            try:
                old = Plan.load(path)
            except FedvidaError:
                old = None
        if old != plan:
            plan.save(path)
        plans[path] = plan
    checked: set[tuple[Path, str]] = set()
    for cell, cfg in configs:
        path = Path(cfg.partition.plan)
        ekey = (path, cfg.section_hash("extract"))
        if ekey in checked:
            continue
        checked.add(ekey)
        lacking = missing_feature_partitions(cfg, plans[path])
        if lacking:
            need(["extract", "--all"], cell, cfg,
                 f"features of partition(s) {', '.join(lacking)} not in {cfg.extract.cache_dir}")
    dicts: set[str] = set()
    for cell, cfg in configs:
        dkey = cfg.section_hash("dictionary", "data")
        if dkey in dicts:
            continue
        dicts.add(dkey)
        if not dictionary_is_current(cfg):
            need(["dictionary", "build"], cell, cfg,
                 f"dictionary {cfg.dictionary.out} missing or built from other labels/settings")
    return plans


# ---------------------------------------------------------------------------- running
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
            mcfg = ecfg.model_copy(deep=True)
            mcfg.train.method = method  # type: ignore[assignment]
            res[method] = evaluator(mcfg, arrays)
        points[label] = res
    path.write_text(json.dumps({"round": cell.config.federation.rounds, "points": points},
                               indent=1, default=_json_safe))
    return points


def _json_safe(value: Any) -> Any:
    return str(value)


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
