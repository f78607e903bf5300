"""The `fedvida` command line.

Each command group lives in `fedvida/commands/<group>.py` and exposes ``register(subparsers)``;
handlers import heavy modules (torch, flwr) lazily so that `fedvida --help` stays fast.
Errors derived from `FedvidaError` are printed as one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from fedvida.errors import FedvidaError

# Command modules, in the order `fedvida --help` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "fedvida.commands.run",
    "fedvida.commands.config",
    "fedvida.commands.data",
    "fedvida.commands.partition",
    "fedvida.commands.extract",
    "fedvida.commands.dictionary",
    "fedvida.commands.train",
    "fedvida.commands.simulate",
    "fedvida.commands.deploy",
    "fedvida.commands.sweep",
)


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every registered command group."""
    parser = argparse.ArgumentParser(
        prog="fedvida",
        description="Federated missing-audio generation for video action recognition.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `fedvida` console script."""
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
    os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.handler(args)
    except FedvidaError as exc:
        print(f"fedvida: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fedvida: interrupted; finished work is kept", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
