"""`fedvida partition`: spread the dataset's clips over clients and write the plan."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fedvida.commands import add_config_args, config_from_args


def register(sub: Any) -> None:
    p = sub.add_parser("partition", help="partition clips over clients, withhold audio; write plan")
    add_config_args(p)
    p.add_argument("--show", action="store_true",
                   help="print the plan saved at partition.plan instead of making one")
    p.add_argument("--probe", action="store_true",
                   help="also probe every clip's audio to count natural missing audio "
                        "(no stream / silent / unreadable) per client")
    p.set_defaults(handler=_partition)


def _partition(args: argparse.Namespace) -> int:
    from fedvida import stages
    from fedvida.reporting.stages import print_plan, print_plan_result

    cfg = config_from_args(args)
    if args.show:
        from fedvida.data.partition import Plan

        print_plan(Plan.load(Path(cfg.partition.plan)))
        return 0
    if not args.probe:
        print_plan_result(stages.plan(cfg), cfg.partition.scheme)
        return 0
    from fedvida.reporting.console import rate_progress

    with rate_progress("clips") as progress:
        task = progress.add_task("probing audio", total=None)
        result = stages.plan(cfg, probe=True, on_clip=lambda: progress.advance(task))
    print_plan_result(result, cfg.partition.scheme)
    return 0
