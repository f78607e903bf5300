"""`fedvida data demo` (write the demo dataset) and `fedvida data inspect` (probe a dataset)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fedvida.commands import add_config_args, config_from_args
from fedvida.errors import ProblemLog
from fedvida.reporting.console import console, print_table, rate_progress
from fedvida.reporting.stages import print_problems

MAX_CLASS_ROWS = 40


def register(sub: Any) -> None:
    p = sub.add_parser("data", help="write the demo dataset or inspect a dataset")
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    demo = dsub.add_parser("demo", help="write the built-in demo dataset (MiT layout)")
    add_config_args(demo)
    demo.add_argument("--out", type=Path, default=None, help="output folder (default: demo.out)")
    demo.add_argument("--classes", type=int, default=None, help="number of classes (2-10)")
    demo.add_argument("--clips-per-class", type=int, default=None, help="training clips per class")
    demo.add_argument("--seed", type=int, default=None, help="random seed")
    demo.set_defaults(handler=_demo)

    ins = dsub.add_parser("inspect", help="probe every clip: classes, fps, durations, audio")
    add_config_args(ins)
    ins.add_argument("--root", default=None, help="dataset root (default: data.root)")
    ins.add_argument("--limit", type=_positive_int, default=None,
                     help="probe at most N clips per split (a seeded sample)")
    ins.add_argument("--problems", default=None, metavar="FILE",
                     help="also write every problem to FILE as JSON lines")
    ins.add_argument("--index-only", action="store_true",
                     help="read the index files only: clips per class and split and the index's "
                          "problems; no clip is opened or checked on disk (data.check_files=false)")
    ins.set_defaults(handler=_inspect)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _demo(args: argparse.Namespace) -> int:
    for flag, key in (("classes", "classes"), ("clips_per_class", "clips_per_class"),
                      ("seed", "seed")):
        if getattr(args, flag) is not None:
            args.overrides.append(f"demo.{key}={getattr(args, flag)}")
    cfg = config_from_args(args)
    from fedvida import stages
    from fedvida.reporting.stages import print_demo

    print_demo(stages.demo(cfg, args.out, progress=True), cfg)
    return 0


def _inspect(args: argparse.Namespace) -> int:
    if args.root is not None:
        args.overrides.append(f"data.root={args.root}")
    if args.index_only:
        args.overrides.append("data.check_files=false")
    cfg = config_from_args(args)
    from fedvida.data.inspect import inspect_clips, sample_clips
    from fedvida.data.mit import load_dataset

    index = load_dataset(cfg.data)
    console.print(f"dataset {index.root} (MiT {index.version}): {len(index.classes)} classes, "
                  f"{len(index.train)} training + {len(index.test)} test clips", markup=False)
    counts = list(index.class_counts().items())
    rows = [(i, name, tr, te) for i, (name, (tr, te)) in enumerate(counts[:MAX_CLASS_ROWS])]
    caption = (f"... and {len(counts) - MAX_CLASS_ROWS} more classes"
               if len(counts) > MAX_CLASS_ROWS else None)
    print_table("clips per class", ["label", "class", cfg.data.train_split, cfg.data.test_split],
                rows, caption)
    problems = ProblemLog()
    problems.extend(index.problems)
    if args.index_only:
        _finish_problems(problems, args.problems)
        return 0

    clips = (sample_clips(index.train, args.limit, cfg.data.cap_seed)
             + sample_clips(index.test, args.limit, cfg.data.cap_seed))
    with rate_progress("clips") as progress:
        task = progress.add_task("probing", total=len(clips))
        report = inspect_clips(index, clips, cfg.extract.silence_dbfs, cfg.extract.sample_rate,
                               on_clip=lambda: progress.advance(task),
                               workers=cfg.extract.workers)
    n = len(report.facts)
    print_table("frame rates", ["fps", "clips", "share"],
                [(fps, c, c / n) for fps, c in report.fps_counts()])
    lo, med, hi = report.durations()
    shares = report.shares()
    rows2 = [
        ("clips probed", str(report.probed)),
        ("readable", f"{n} ({n / max(report.probed, 1):.1%})"),
        ("duration min / median / max (s)", f"{lo:.2f} / {med:.2f} / {hi:.2f}"),
        ("codecs", ", ".join(f"{k} {v}" for k, v in report.counts("codec"))),
        ("frame sizes", ", ".join(f"{k} {v}" for k, v in report.counts("size")[:6])),
        ("display rotation (deg, counter-clockwise)",
         ", ".join(f"{k} {v}" for k, v in report.counts("rotation"))),
        ("audio stream present", f"{shares['audio_stream']:.1%}"),
        (f"silent (RMS < {cfg.extract.silence_dbfs:g} dBFS)", f"{shares['silent']:.1%}"),
        ("usable audio", f"{shares['usable_audio']:.1%}"),
    ]
    print_table("clips", ["", "value"], rows2)
    problems.extend(report.problems)
    _finish_problems(problems, args.problems)
    return 0


def _finish_problems(problems: ProblemLog, path: str | None) -> None:
    """Print the problem summary and write them all to `path` (JSON lines) when asked."""
    print_problems(problems)
    if path is not None:
        problems.write_jsonl(path)
        console.print(f"problems written to {path}", markup=False)
