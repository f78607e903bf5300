"""Make every cell of a sweep runnable: dataset, plans, cached features, dictionary.

Missing inputs are made by the same stage functions as the main job (`fedvida.stages`), with
each cell's own config, or named in a one-line error with the command that makes them.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fedvida.config import Config
from fedvida.errors import ConfigError, FedvidaError
from fedvida.sweep.spec import Cell, Sweep


def _stage_command(argv: list[str], cfg_base: Path, overrides: Sequence[str]) -> list[str]:
    args = [*argv, "--config", str(cfg_base)]
    for o in overrides:
        args += ["--set", o]
    return args


def _shell(argv: list[str]) -> str:
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
    made by the main job's stage functions (`fedvida.stages`) with the cell's config when
    ``run_stages`` (otherwise a one-line `FedvidaError` names the command to run).

    Returns
    -------
    dict
        ``{plan path: Plan}`` of every plan of the sweep.
    """
    from fedvida import stages
    from fedvida.data.mit import load_dataset
    from fedvida.data.partition import Plan, make_plan
    from fedvida.pipeline import demo_is_current, dictionary_is_current
    from fedvida.reporting.stages import print_demo, print_dictionary, print_extraction

    base = sweep.spec.base
    configs: list[tuple[Cell, Config]] = []
    for cell in sweep.unique_cells():
        configs += [(cell, cell.config), *((cell, c) for _, c in cell.eval_points)]

    def need(argv: list[str], cell: Cell, cfg: Config, what: str,
             stage: Callable[[Config], object]) -> None:
        """Run ``stage`` with the cell's config, or fail naming the command that runs it."""
        cmd = _stage_command(argv, base, [*cell.overrides, f"partition.plan={cfg.partition.plan}"])
        if not run_stages:
            raise FedvidaError(f"sweep {sweep.path}: {what}; run `{_shell(cmd)}`")
        say(f"sweep: {what}: running `{_shell(cmd[:2])}`")
        stage(cfg)

    done_demo: set[str] = set()
    for cell, cfg in configs:
        root = Path(cfg.data.root)
        if str(root) in done_demo:
            continue
        done_demo.add(str(root))
        if root.resolve() == Path(cfg.demo.out).resolve() and not demo_is_current(cfg):
            need(["data", "demo"], cell, cfg, f"demo data {root} missing or outdated",
                 lambda c: print_demo(stages.demo(c, progress=True), c))
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
                 f"features of partition(s) {', '.join(lacking)} not in {cfg.extract.cache_dir}",
                 lambda c: print_extraction(stages.extract(c, progress=True)))
    dicts: set[str] = set()
    for cell, cfg in configs:
        dkey = cfg.section_hash("dictionary", "data")
        if dkey in dicts:
            continue
        dicts.add(dkey)
        if not dictionary_is_current(cfg):
            need(["dictionary", "build"], cell, cfg,
                 f"dictionary {cfg.dictionary.out} missing or built from other labels/settings",
                 lambda c: print_dictionary(stages.dictionary(c), c))
    return plans
