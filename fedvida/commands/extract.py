"""`fedvida extract`: extract and cache client features (RGB, flow, audio, tags, captions)."""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path
from typing import Any

from fedvida.commands import add_config_args, config_from_args
from fedvida.errors import InputError
from fedvida.reporting.console import console, print_table, rate_progress


def register(sub: Any) -> None:
    p = sub.add_parser("extract", help="extract and cache features of clients / the test set")
    add_config_args(p)
    who = p.add_mutually_exclusive_group()
    who.add_argument("--client", action="append", default=[], metavar="K",
                     help="a client id or 'test' (repeatable; default: --all)")
    who.add_argument("--all", action="store_true", help="every client in the plan and 'test'")
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: extract.device)")
    p.add_argument("--clips", type=Path, default=None, metavar="DIR",
                   help="the folder holding these clips under the plan's relative paths, e.g. a "
                        "deployment node's own copy (default: the plan's dataset root)")
    p.set_defaults(handler=_extract)


def _partitions(args: argparse.Namespace, num_clients: int) -> list[int | str]:
    if not args.client:
        return [*range(num_clients), "test"]
    out: list[int | str] = []
    for raw in args.client:
        if raw == "test":
            out.append("test")
            continue
        try:
            k = int(raw)
        except ValueError:
            raise InputError(f"--client {raw!r}: expected a client id or 'test'") from None
        if not 0 <= k < num_clients:
            raise InputError(f"--client {k}: the plan has clients 0..{num_clients - 1}")
        out.append(k)
    return out


def _extract(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    from fedvida.data.partition import Plan
    from fedvida.errors import ProblemLog
    from fedvida.features.extract import STAGES, ExtractStats, Models, extract_partition

    if args.clips is not None and not args.clips.is_dir():
        raise InputError(f"--clips {args.clips}: not a folder")
    plan = Plan.load(Path(cfg.partition.plan))
    parts = _partitions(args, plan.num_clients)
    if args.clips is not None:  # a node's own clips: keyed, and read, at their local paths
        plan.dataset_root = str(args.clips)
    models = Models(cfg.extract, args.device)
    problems = ProblemLog()
    total = sum(len(plan.partition(p)) for p in parts)
    results: list[ExtractStats] = []
    with rate_progress("clips") as progress:
        task = progress.add_task("extract", total=total)
        try:
            for part in parts:
                progress.update(task, description=f"extract {part}")
                results.append(extract_partition(
                    cfg, plan, part, models,
                    on_clip=lambda n: progress.advance(task, n), problems=problems,
                ))
        finally:
            models.close()  # the decode worker processes
    rows = []
    for st in results:
        failed = ", ".join(f"{k}={v}" for k, v in sorted(st.failed.items())) or "-"
        absent = ", ".join(f"{k}={v}" for k, v in sorted(st.audio_absent.items())) or "-"
        done = st.audio_present + sum(st.audio_absent.values())
        share = f"{st.audio_present / done:.0%}" if done else "-"
        rows.append((st.partition, st.total, st.cached, st.computed, failed, share, absent))
    print_table("extraction", ["part", "clips", "cached", "computed", "failed (skipped)",
                               "audio present", "audio absent"], rows)
    computed = sum(st.computed for st in results)
    if computed:
        stage = Counter[str]()
        for st in results:
            stage.update(st.seconds)
        wall = max(1e-9, sum(st.wall for st in results) - models.load_seconds)
        print_table(
            "seconds per computed clip, by stage (summed over threads)",
            [*STAGES, "end-to-end"],
            [(*(stage[s] / computed for s in STAGES), wall / computed)],
            caption=f"{computed / wall:.2f} clips/s end-to-end on {models.device}; model loading "
                    f"{models.load_seconds:.1f} s",
        )
    if problems:
        log = Path(cfg.extract.cache_dir) / "extract-problems.jsonl"
        problems.write_jsonl(log)
        console.print(f"{problems.summary()}\nall problems: {log}", markup=False)
    return 0
