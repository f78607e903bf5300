"""`fedvida simulate`: federated training in Flower's simulation engine (Ray backend)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fedvida.commands import add_config_args, config_from_args
from fedvida.config import METHODS


def register(sub: Any) -> None:
    p = sub.add_parser(
        "simulate",
        help="federated training as a Flower simulation (N virtual clients = plan clients)",
        description="Train one or all methods with FedAvg/FedProx/FedAdam over the plan's clients "
        "in Flower's simulation engine; writes runs/NAME/ (config, metrics.jsonl, checkpoints, "
        "report.md, plots).",
    )
    add_config_args(p)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--method", "-m", choices=METHODS, default=None,
                       help="method to train (default: train.methods)")
    which.add_argument("--all-methods", action="store_true", help="train every method")
    p.add_argument("--name", default=None, help="run folder name under train.runs_dir "
                   "(default: the config's name + method)")
    p.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR",
                   help="continue runs/NAME from its last checkpoint with its saved config")
    p.add_argument("--verbose", action="store_true", help="show Flower's own log lines")
    p.add_argument("--print-flwr-run", nargs="?", const="local", default=None,
                   metavar="CONNECTION", help="print the `flwr run . CONNECTION` command that "
                   "runs this same simulation (one SuperNode per plan client, the same Ray "
                   "resources, config and run folder; default connection: local) and exit")
    p.set_defaults(handler=_simulate)


def _simulate(args: argparse.Namespace) -> int:
    from fedvida import stages
    from fedvida.reporting.console import console, print_table
    from fedvida.reporting.missing import print_missing

    cfg = config_from_args(args)
    if args.all_methods:
        methods = list(METHODS)
    elif args.method:
        methods = [args.method]
    else:
        methods = list(cfg.train.methods)
    name = args.name or (f"{cfg.name}-all" if args.all_methods else f"{cfg.name}-{methods[0]}")
    if args.print_flwr_run:
        return _print_flwr_run(args, cfg, methods, name)
    run = stages.simulate(cfg, methods, name, resume=args.resume, verbose=args.verbose)
    results = run.results
    cols = ["top1", "macro_f1", "top1_with_audio", "top1_without_audio"]
    private = any("epsilon" in r for r in results.values())
    rows = [[m, *(float(r.get(c, float("nan"))) for c in cols), r.get("bytes_down", 0) / 1e6,
             r.get("bytes_up", 0) / 1e6, float(r.get("seconds", 0.0)),
             *([float(r.get("epsilon", float("nan")))] if private else [])]
            for m, r in results.items()]
    delta = next((r["delta"] for r in results.values() if "delta" in r), None)
    print_missing(results, "Missing audio, federated global model")
    print_table("Federated results (global model, test split)",
                ["method", *cols, "MB down", "MB up", "seconds",
                 *([f"eps (delta {delta:.0e})"] if private else [])], rows)
    console.print(f"run folder: {run.folder} (report.md, metrics.jsonl, plots/)")
    return 0


def _print_flwr_run(args: argparse.Namespace, cfg: Any, methods: list[str], name: str) -> int:
    from fedvida.data.partition import Plan
    from fedvida.errors import ConfigError
    from fedvida.federation.deploy import shell
    from fedvida.federation.runner import flwr_run_command

    if args.resume:  # flwr run resumes a folder with checkpoints by itself, given its config
        raise ConfigError("--print-flwr-run with --resume: use --config RUN_DIR/config.yaml "
                          "--name NAME instead (the server continues from its checkpoints)")

    config = Path(args.config or "configs/default.yaml")  # pyproject.toml's config-path default
    clients = Plan.load(Path(cfg.partition.plan)).num_clients
    print(shell(flwr_run_command(cfg, config, list(args.overrides), methods, name, clients,
                                 args.print_flwr_run)))
    return 0
