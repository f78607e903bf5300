"""`fedvida config show`: print the resolved config."""

from __future__ import annotations

import argparse
from typing import Any

from fedvida.commands import add_config_args, config_from_args


def register(sub: Any) -> None:
    p = sub.add_parser("config", help="show the resolved configuration")
    csub = p.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    show = csub.add_parser("show", help="print the resolved config as YAML")
    add_config_args(show)
    show.set_defaults(handler=_show)


def _show(args: argparse.Namespace) -> int:
    print(config_from_args(args).to_yaml(), end="")
    return 0
