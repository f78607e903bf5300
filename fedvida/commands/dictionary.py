"""`fedvida dictionary build|show|verify`: the semantic dictionary artifact."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fedvida.commands import add_config_args, config_from_args


def register(sub: Any) -> None:
    p = sub.add_parser("dictionary", help="build, show and verify the semantic dictionary")
    dsub = p.add_subparsers(dest="dictionary_command", required=True, metavar="ACTION")

    build = dsub.add_parser("build", help="embed action and AudioSet labels; write the artifact")
    add_config_args(build)
    build.add_argument("--out", type=Path, default=None, help="output dir (dictionary.out)")
    src = build.add_mutually_exclusive_group()
    src.add_argument(
        "--all-mit-v1", action="store_true", help="use the 339 MiT v1 categories (bundled)"
    )
    src.add_argument(
        "--categories", type=Path, default=None, help="categories file (rows name,index)"
    )
    build.set_defaults(handler=_build)

    show = dsub.add_parser("show", help="print dictionary entries (action -> labels)")
    add_config_args(show)
    show.add_argument("--dir", type=Path, default=None, help="artifact dir (dictionary.out)")
    show.add_argument(
        "--action", action="append", default=[], help="only this action (repeatable)"
    )
    show.add_argument("-k", type=int, default=None, help="labels per entry (default: stored k)")
    show.set_defaults(handler=_show)

    verify = dsub.add_parser("verify", help="check every file hash and the digest")
    add_config_args(verify)
    verify.add_argument("dir", type=Path, nargs="?", default=None, help="artifact dir")
    verify.add_argument("--digest", default=None, help="the 64-hex digest that must match")
    verify.set_defaults(handler=_verify)


def _build(args: argparse.Namespace) -> int:
    from fedvida import stages
    from fedvida.reporting.console import console
    from fedvida.reporting.stages import print_dictionary

    cfg = config_from_args(args)
    with console.status(f"building the dictionary with {cfg.dictionary.model}"):
        result = stages.dictionary(cfg, args.out, all_mit_v1=args.all_mit_v1,
                                   categories_file=args.categories)
    print_dictionary(result, cfg)
    return 0


def _show(args: argparse.Namespace) -> int:
    from fedvida.semantics import SemanticDictionary

    cfg = config_from_args(args)
    directory = args.dir or cfg.dictionary.out
    d = SemanticDictionary.load(directory)
    tmpl = d.manifest["templates"]
    print(
        f"dictionary {directory}: {len(d.actions)} actions x {len(d.audio_labels)} AudioSet "
        f"labels, {d.model_name}, templates '{tmpl['action']}' / '{tmpl['audio']}'"
    )
    print(f"digest {d.digest}")
    for action in args.action or d.actions:
        print(d.entry_line(action, args.k))
    return 0


def _verify(args: argparse.Namespace) -> int:
    from fedvida.semantics import ArtifactError, verify_artifact

    directory = args.dir if args.dir is not None else config_from_args(args).dictionary.out
    try:
        manifest = verify_artifact(Path(directory), args.digest)
    except ArtifactError as exc:
        print(f"FAILED {exc}")
        return 1
    print(f"OK {directory}: {len(manifest['files'])} files verified, digest {manifest['digest']}")
    return 0
