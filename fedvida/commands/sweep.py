"""`fedvida sweep`: run a grid of federated runs from a sweep file and report on it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fedvida.errors import FedvidaError


def register(sub: Any) -> None:
    p = sub.add_parser(
        "sweep",
        help="run a grid of federated runs (configs/sweeps/*.yaml), resumable, with one report",
        description="Every cell of the sweep file is one federated simulation in its own run "
        "folder under <out>/cells/. Finished cells are reused, interrupted ones resumed from "
        "their checkpoints, failing ones recorded; report.md, summary.json and plots/ are "
        "rewritten after every cell.",
    )
    p.add_argument("file", type=Path, help="sweep file, e.g. configs/sweeps/privacy.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override applied to every cell, e.g. --set federation.rounds=2 "
                   "(repeatable; changes the cells, so they are new runs)")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: the file's 'out' or runs/sweeps/<name>)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true",
                      help="validate every cell and list them with their state; run nothing")
    mode.add_argument("--report-only", action="store_true",
                      help="rewrite the report from the cells on disk; run nothing")
    p.add_argument("--no-prepare", action="store_true",
                   help="do not run missing stages (demo data, features, dictionary): fail with "
                   "the command to run instead")
    p.set_defaults(handler=_sweep)


def _sweep(args: argparse.Namespace) -> int:
    from fedvida.reporting.console import console, print_table
    from fedvida.reporting.sweep_report import write_sweep_report
    from fedvida.sweep import CellResult, cell_state, load_sweep, prepare, run_sweep

    def say(text: str) -> None:
        console.print(text, markup=False, soft_wrap=True)

    sweep = load_sweep(args.file, args.overrides, args.out)
    runs = sweep.unique_cells()
    states = {c.run_name: cell_state(c) for c in runs}
    print_table(
        f"sweep {sweep.name}: {len(sweep.cells)} cells, {len(runs)} runs "
        f"({', '.join(sweep.methods)}; {'/'.join(map(str, sweep.rounds))} rounds)",
        ["#", "group", "values", "state", "run folder"],
        [(c.index, c.group or "-", c.values_text() or "-", states[c.run_name],
          c.run_name) for c in sweep.cells],
    )
    if args.dry_run:
        return 0
    if args.report_only:
        if not any(state == "done" for state in states.values()):
            raise FedvidaError(f"sweep {sweep.name}: none of its {len(runs)} runs has finished, "
                               "nothing to report (run it without --report-only)")
        results = {c.run_name: CellResult("done" if states[c.run_name] == "done" else "pending",
                                          states[c.run_name]) for c in runs}
        say(f"report: {write_sweep_report(sweep, results)}")
        return 0
    prepare(sweep, run_stages=not args.no_prepare, say=say)
    results = run_sweep(sweep, on_change=lambda r: write_sweep_report(sweep, r), say=say)
    report = write_sweep_report(sweep, results)
    rows = []
    for c in sweep.cells:
        res = results[c.run_name]
        rows.append((c.index, c.describe(), res.action,
                     f"{res.seconds:.1f}" if res.seconds else "-", res.error or "-"))
    print_table(f"sweep {sweep.name}", ["#", "cell", "this run", "seconds", "error"], rows)
    say(f"report: {report} (summary.json, plots/ beside it)")
    failed = sorted({c.run_name for c in runs if results[c.run_name].status == "failed"})
    if failed:
        say(f"fedvida: {len(failed)} of {len(runs)} runs failed (see the report); run the "
            "sweep again to retry them")
        return 1
    return 0
