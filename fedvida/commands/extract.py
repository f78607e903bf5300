"""`fedvida extract`: extract and cache client features (RGB, flow, audio, tags, captions)."""

from __future__ import annotations

import argparse
from typing import Any

from fedvida.commands import add_config_args, config_from_args


def register(sub: Any) -> None:
    p = sub.add_parser("extract", help="extract and cache features of clients / the test set")
    add_config_args(p)
    who = p.add_mutually_exclusive_group()
    who.add_argument("--client", action="append", default=[], metavar="K",
                     help="a client id or 'test' (repeatable; default: --all)")
    who.add_argument("--all", action="store_true", help="every client in the plan and 'test'")
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: extract.device)")
    p.set_defaults(handler=_extract)


def _extract(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    from fedvida import stages
    from fedvida.reporting.stages import print_extraction

    print_extraction(stages.extract(cfg, args.client, device=args.device, progress=True))
    return 0
