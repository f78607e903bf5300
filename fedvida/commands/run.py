"""`fedvida run`: the main job (demo data -> partition -> extraction -> dictionary -> training)."""

from __future__ import annotations

import argparse
from typing import Any

from fedvida.commands import add_config_args, config_from_args
from fedvida.config import METHODS


def register(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="the main job: demo data, partition, extraction, dictionary, federated training of "
        "every method with the centralised reference beside it",
        description="Runs every stage with one config; stages whose inputs are unchanged are "
        "reused (demo data, dictionary, cached features).",
    )
    add_config_args(p)
    p.add_argument("--method", "-m", action="append", choices=METHODS, default=None,
                   help="train only these methods (repeatable; default: all of them)")
    p.add_argument("--force", action="store_true",
                   help="rewrite the demo data and rebuild the dictionary")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from fedvida.pipeline import run_pipeline

    cfg = config_from_args(args)  # the only time `fedvida run` reads its config
    run_pipeline(cfg, args.method or list(METHODS), force=args.force)
    return 0
