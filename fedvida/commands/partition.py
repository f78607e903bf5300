"""`fedvida partition`: spread the dataset's clips over clients and write the plan."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fedvida.commands import add_config_args, config_from_args
from fedvida.errors import ProblemLog
from fedvida.reporting.console import console, print_table


def register(sub: Any) -> None:
    p = sub.add_parser("partition", help="partition clips over clients, withhold audio; write plan")
    add_config_args(p)
    p.add_argument("--show", action="store_true",
                   help="print the plan saved at partition.plan instead of making one")
    p.add_argument("--probe", action="store_true",
                   help="also probe every clip's audio to count natural missing audio "
                        "(no stream / silent / unreadable) per client")
    p.set_defaults(handler=_partition)


def print_plan(plan: Any, lacking: set[str] | None = None) -> None:
    """Print one row per client, the test set line and the plan-level skew.

    `lacking` (relpaths without usable audio, from probing) adds the natural-missing column and
    the clips that keep usable audio after withholding. The rate column appears when client
    rates differ; otherwise the caption states the one rate.
    """
    from fedvida.data.partition import skew_stats, summarize_plan

    summaries = summarize_plan(plan)
    same_rate = len(set(plan.client_rates)) <= 1
    columns = ["id", "clips", "cls", "H", "top class", "top%", "held"]
    columns += [] if same_rate else ["rate"]
    columns += [] if lacking is None else ["nat.", "kept"]
    rows: list[tuple[Any, ...]] = []
    for s, clips in zip(summaries, [*plan.clients, plan.test], strict=True):
        row: tuple[Any, ...] = (s.name, s.clips, s.classes, f"{s.entropy_bits:.2f}", s.dominant,
                                f"{s.dominant_share:.0%}", s.withheld)
        if not same_rate:
            row += ("-" if s.rate is None else f"{s.rate:.2f}",)
        if lacking is not None:  # natural missing; clips that keep usable audio
            row += (sum(c.relpath in lacking for c in clips),
                    sum(not c.withheld and c.relpath not in lacking for c in clips))
        rows.append(row)
    stats = skew_stats(plan)
    caption = (f"cls = classes present, H = label entropy (bits; mean over clients "
               f"{stats['mean_entropy_bits']:.2f} = {stats['mean_entropy_share']:.0%} of even), "
               f"top% = dominant class share (mean {stats['mean_dominant_share']:.0%}), "
               f"held = audio withheld ({stats['train_withheld_share']:.1%} of training clips")
    caption += f", rate {plan.client_rates[0]:.2f} per client)" if same_rate else ")"
    if lacking is None:
        caption += "; natural missing audio is counted by --probe and `fedvida data inspect`"
    else:
        caption += ("; nat. = no usable audio (no stream / silent / unreadable), kept = usable "
                    "audio not withheld")
    print_table(f"plan {plan.config_hash}: {plan.num_clients} clients, {len(plan.classes)} classes",
                columns, rows, caption)


def _partition(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    from fedvida.commands.data import print_problems
    from fedvida.data.mit import load_dataset
    from fedvida.data.partition import Plan, make_plan

    out = Path(cfg.partition.plan)
    if args.show:
        print_plan(Plan.load(out))
        return 0
    index = load_dataset(cfg.data)
    plan = make_plan(index, cfg.partition)
    plan.save(out)
    console.print(f"dataset {index.root} (MiT {index.version}): {len(index.classes)} classes, "
                  f"{len(index.train)} training + {len(index.test)} test clips; "
                  f"{cfg.partition.scheme} split", markup=False)
    lacking: set[str] | None = None
    problems = index.problems
    if args.probe:
        from fedvida.data.inspect import inspect_clips
        from fedvida.reporting.console import rate_progress

        clips = index.train + index.test
        with rate_progress("clips") as progress:
            task = progress.add_task("probing audio", total=len(clips))
            report = inspect_clips(index, clips, cfg.extract.silence_dbfs,
                                   cfg.extract.sample_rate, on_clip=lambda: progress.advance(task),
                                   workers=cfg.extract.workers)
        usable = {f.clip.relpath for f in report.facts if f.audio_ok and not f.silent}
        lacking = {c.relpath for c in clips} - usable
        problems = ProblemLog()
        problems.extend(index.problems)
        problems.extend(report.problems)
    print_plan(plan, lacking)
    print_problems(problems)
    console.print(f"plan written to {out}", markup=False)
    return 0
