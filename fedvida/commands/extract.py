"""`fedvida extract`: extract and cache client features (RGB, flow, audio, tags, captions)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fedvida.commands import add_config_args, config_from_args
from fedvida.errors import InputError


def register(sub: Any) -> None:
    p = sub.add_parser("extract", help="extract and cache features of clients / the test set")
    add_config_args(p)
    who = p.add_mutually_exclusive_group()
    who.add_argument("--client", action="append", default=[], metavar="K",
                     help="a client id or 'test' (repeatable; default: --all)")
    who.add_argument("--all", action="store_true", help="every client in the plan and 'test'")
    p.add_argument("--device", default=None,
                   help="auto | cpu | cuda | cuda:N (default: extract.device)")
    p.add_argument("--clips", type=Path, default=None, metavar="DIR",
                   help="the folder holding these clips under the plan's relative paths, e.g. a "
                        "deployment node's own copy (default: the plan's dataset root)")
    p.set_defaults(handler=_extract)


def _extract(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    from fedvida import stages
    from fedvida.reporting.stages import print_extraction

    if args.clips is not None and not args.clips.is_dir():
        raise InputError(f"--clips {args.clips}: not a folder")
    print_extraction(stages.extract(cfg, args.client, device=args.device, clips=args.clips,
                                    progress=True))
    return 0
