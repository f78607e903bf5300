"""`fedvida train`: train the methods centrally on the pooled client caches and compare them."""

from __future__ import annotations

import argparse
from typing import Any

from fedvida.commands import add_config_args, config_from_args
from fedvida.config import METHODS

# (metric key, short header): the table fits an 80-column terminal; all metrics are in the run
# folder's metrics.json / metrics.csv.
TABLE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("top1", "top1"),
    ("macro_f1", "F1"),
    ("top1_with_audio", "w/ au"),
    ("top1_without_audio", "w/o au"),
    ("audio_used_rate", "used"),
    ("gen_cos", "gen"),
    ("svdmap_retention", "kept"),
)
TABLE_CAPTION = (
    "top1 / F1: all test clips (macro-F1); w/ au, w/o au: top-1 on test clips with / without "
    "real audio; used: share of clips given audio (real or generated); gen: cosine of generated "
    "to real audio features; kept: SVDMap retention; s: seconds"
)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "train", help="train the methods centrally (the reference) and compare them"
    )
    add_config_args(p)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--method", choices=METHODS, default=None,
                       help="one method (default: train.methods)")
    which.add_argument("--all-methods", action="store_true", help="every method")
    p.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    p.add_argument("--seeds", type=int, nargs="+", default=None, metavar="S",
                   help="train every method once per seed (train.seed) and report mean +- std "
                   "and the paired bootstrap CI on the missing-audio clips")
    p.set_defaults(handler=_train)


def comparison_rows(results: list[Any]) -> list[list[Any]]:
    """Table rows (method, metrics..., seconds); '-' where a metric does not apply."""
    rows = []
    for r in results:
        cells: list[Any] = [r.method]
        cells += [r.test.get(k, "-") for k, _ in TABLE_COLUMNS]
        cells.append(round(r.seconds))
        rows.append(cells)
    return rows


def _train(args: argparse.Namespace) -> int:
    from fedvida import stages
    from fedvida.reporting.console import console, print_table, rate_progress
    from fedvida.reporting.missing import print_missing
    from fedvida.training.central import load_central_data

    if args.epochs is not None:
        args.overrides.append(f"train.epochs={args.epochs}")
    cfg = config_from_args(args)
    methods: list[str] = (list(METHODS) if args.all_methods
               else [args.method] if args.method else list(cfg.train.methods))
    if args.seeds:
        return _train_seeds(cfg, methods, args.seeds)
    with console.status("loading features"):
        data = load_central_data(cfg, methods)
    n_with = int(data.train.audio_present.sum())
    console.print(
        f"train: {len(data.train.labels)} clips ({n_with} with audio), test: "
        f"{len(data.test.labels)} clips ({int(data.test.audio_present.sum())} with audio), "
        f"{len(data.classes)} classes; validation: "
        f"{0 if data.val is None else len(data.val.labels)} clips carved from the training "
        "clients (train.val_fraction)"
    )
    with rate_progress("epochs") as progress:
        task = progress.add_task("training", total=cfg.train.epochs * len(methods))

        def on_epoch(method: str, epoch: int, metrics: dict[str, float]) -> None:
            loss = metrics.get("train_loss", 0.0)
            progress.update(task, advance=1, description=f"{method} loss {loss:.3f}")

        result = stages.train(cfg, methods, data=data, on_epoch=on_epoch)
    print_missing(result.test, f"Missing audio, seed {cfg.train.seed}")
    print_table(
        f"Test split, seed {cfg.train.seed}",
        ["method", *[label for _, label in TABLE_COLUMNS], "s"],
        comparison_rows(result.results),
        caption=TABLE_CAPTION,
    )
    console.print(f"run folder: {result.folder}")
    return 0


def _train_seeds(cfg: Any, methods: list[str], seeds: list[int]) -> int:
    """One run per seed in ``<runs>/train-<name>-<stamp>/seed-<s>/`` and the summary beside."""
    from fedvida import stages
    from fedvida.reporting.console import console, print_table
    from fedvida.reporting.missing import SEED_CAPTION, SEED_HEADER, seed_rows

    def said(seed: int, results: list[Any]) -> None:
        console.print(f"seed {seed}: " + ", ".join(
            f"{r.method} {r.test.get('top1_missing', float('nan')):.3f}" for r in results),
            markup=False)

    with console.status(f"training {len(methods)} method(s) x {len(seeds)} seeds"):
        result = stages.train_seeds(cfg, methods, seeds, on_seed=said)
    print_table(result.title, SEED_HEADER, seed_rows(result.runs.summary), caption=SEED_CAPTION)
    console.print(f"run folder: {result.folder} (seed-*/, missing_audio.md, seeds.json)")
    return 0
