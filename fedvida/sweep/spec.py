"""A sweep file: its validated spec, its expansion into cells, each cell's resolved config."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
from fedvida.errors import ConfigError

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
    "train.methods": "use the sweep's 'methods' list",
}


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

    kind: str = Field("generic", description="A report kind of "
                      "`fedvida.reporting.sweep_kinds.REPORT_KINDS`.")
    metric: str = Field("top1", description="Server metric on the y axes and in the tables.")
    target: float = Field(
        0.5, ge=0.0, le=1.0, description="communication: bytes to reach this value of `metric`."
    )


    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        from fedvida.reporting.sweep_kinds import REPORT_KINDS

        if kind not in REPORT_KINDS:
            raise ValueError(f"unknown report kind '{kind}' (known: {', '.join(REPORT_KINDS)})")
        return kind


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

    The group set starts with ``train.methods`` when the group lists its own methods.

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
        fixed = {} if group.methods is None else {"train.methods": list(group.methods)}
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


def placed(cfg: Config, name: str, runs_dir: Path, plan: Path) -> Config:
    """A copy of ``cfg`` with the fields the sweep manages per cell (the loaded config is not
    changed): the run folder ``runs_dir/name`` and the plan file."""
    return cfg.model_copy(update={
        "name": name,
        "train": cfg.train.model_copy(update={"runs_dir": runs_dir}),
        "partition": cfg.partition.model_copy(update={"plan": plan}),
    })


def cell_methods(cell: Cell) -> list[str]:
    """The methods the cell trains, in order (``train.methods`` of its config)."""
    return list(cell.config.train.methods)


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
        head.append(override_text("train.methods", list(spec.methods)))
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
        resolved = _resolve(path, label, spec.base, overrides)
        for key in evaluate:
            if key not in EVAL_ONLY_KEYS:
                raise ConfigError(f"sweep {path}: evaluate: '{key}' changes training; only "
                                  f"{', '.join(EVAL_ONLY_KEYS)} can be varied without retraining")
        key = config_key(resolved)
        run_name = keys_seen.setdefault(key, f"{slug(group, values)}-{key[:8]}")
        plan_path = out / PLANS_DIR / f"plan-{plan_key(resolved)}.json"
        cfg = placed(resolved, run_name, out / CELLS_DIR, plan_path)
        cell = Cell(i, group, values, overrides, cfg, key, run_name, plan_path, dict(evaluate))
        for ekey, evalues in evaluate.items():
            for value in evalues:
                text = override_text(ekey, value)
                eresolved = _resolve(path, f"{label}, evaluate {ekey}={format_value(value)}",
                                     spec.base, [*overrides, text])
                ecfg = placed(eresolved, run_name, out / CELLS_DIR,
                              out / PLANS_DIR / f"plan-{plan_key(eresolved)}.json")
                cell.eval_points.append((f"{short_key(ekey)}={format_value(value)}", ecfg))
        cells.append(cell)
    methods = list(dict.fromkeys(m for c in cells for m in cell_methods(c)))
    rounds = sorted({c.config.federation.rounds for c in cells})
    return Sweep(path=path, spec=spec, name=name, out=out, methods=methods, rounds=rounds,
                 cells=cells, extra=list(extra))


