"""Command groups of the `fedvida` CLI; each module exposes ``register(subparsers)``."""

from __future__ import annotations

import argparse

from fedvida.config import Config, load_config


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """Add the `--config` and `--set` options every command takes."""
    parser.add_argument("--config", "-c", default=None, help="YAML config (default: built-ins)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.epochs=5 (repeatable)",
    )


def config_from_args(args: argparse.Namespace) -> Config:
    """Load and validate the config named by `--config` with the `--set` overrides."""
    return load_config(args.config, args.overrides)
