"""`fedvida deploy`: TLS certificates, node keys, SuperLink, SuperNodes and `flwr run` over gRPC.

Secure by default (TLS + SuperNode authentication); ``--insecure`` turns both off explicitly.
``tap`` relays a loopback port to the Fleet API and prints the bytes on the wire each way.
Each ``superlink`` / ``supernode`` / ``run`` action runs the Flower command in the foreground
(``--print`` only prints it), with the project-local ``FLWR_HOME`` and no run-time installs.
``superlink`` and ``supernode`` *become* the Flower process (``os.execvpe``: same pid, so a
SIGTERM reaches Flower, which stops its own children); ``register`` and ``run`` wait for it and
pass SIGTERM / SIGINT / SIGHUP on. Only ``run`` reads a fedvida config (``--config`` / ``--set``).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from fedvida.commands import add_config_args


def register(sub: Any) -> None:
    p = sub.add_parser("deploy", help="run the federation over gRPC (SuperLink + SuperNodes)")
    dsub = p.add_subparsers(dest="deploy_command", required=True, metavar="ACTION")

    certs = dsub.add_parser("certs", help="create a CA, the SuperLink certificate and node keys")
    certs.add_argument("--out", type=Path, default=Path("work/certs"))
    certs.add_argument("--host", action="append", default=[],
                       help="extra SAN (IP or DNS name) besides 127.0.0.1 and localhost")
    certs.add_argument("--nodes", type=int, default=2, help="SuperNode key pairs to create")
    certs.set_defaults(handler=_certs)

    link = dsub.add_parser("superlink", help="start a SuperLink (TLS + node auth by default)")
    _security(link)
    link.add_argument("--host", default="127.0.0.1", help="Control/Runtime API host")
    link.add_argument("--port", type=int, default=8000, help="Control/Runtime API port")
    link.add_argument("--fleet", default="127.0.0.1:9092", help="Fleet API (gRPC) address")
    link.add_argument("--connection", default="fedvida",
                      help="name of the flwr connection written to $FLWR_HOME/config.toml")
    link.set_defaults(handler=_superlink)

    node = dsub.add_parser("supernode", help="start a SuperNode for one partition")
    _security(node)
    node.add_argument("--partition", type=int, required=True, help="plan partition id K")
    node.add_argument("--data", type=Path, default=None,
                      help="this node's data folder (plan.json, cache/, dictionary/)")
    node.add_argument("--superlink", default="127.0.0.1:9092", help="Fleet API address")
    node.add_argument("--port", type=int, default=None, help="ClientAppIo port (9094 + K)")
    node.add_argument("--key", type=Path, default=None,
                      help="auth private key (default: CERTS/node_K.key)")
    node.set_defaults(handler=_supernode)

    reg = dsub.add_parser("register", help="register SuperNode public keys with the SuperLink")
    reg.add_argument("keys", type=Path, nargs="+", help="node_K.pub files")
    reg.add_argument("--connection", default="fedvida")
    reg.set_defaults(handler=_register)

    run = dsub.add_parser("run", help="`flwr run` this app on the SuperLink")
    add_config_args(run)
    run.add_argument("--connection", default="fedvida")
    which = run.add_mutually_exclusive_group()
    which.add_argument("--name", default=None,
                       help="run folder name under train.runs_dir on the server "
                       "(default: the config's name + a UTC timestamp, a new folder each run)")
    which.add_argument("--resume", default=None, metavar="NAME",
                       help="continue the run folder NAME on the server from its checkpoints")
    run.set_defaults(handler=_run)
    tap = dsub.add_parser("tap", help="loopback relay to the Fleet API counting bytes each way")
    tap.add_argument("--listen", default="127.0.0.1:9093", help="loopback HOST:PORT to listen on")
    tap.add_argument("--target", default="127.0.0.1:9092", help="Fleet API HOST:PORT")
    tap.add_argument("--every", type=float, default=10.0, help="seconds between count lines")
    tap.add_argument("--duration", type=float, default=3600.0,
                     help="the tap stops by itself after this many seconds")
    tap.set_defaults(handler=_tap)
    for q in (link, node, reg, run):
        q.add_argument("--print", dest="print_only", action="store_true",
                       help="print the command instead of running it")


def _security(p: argparse.ArgumentParser) -> None:
    p.add_argument("--certs", type=Path, default=Path("work/certs"),
                   help="folder written by `fedvida deploy certs`")
    p.add_argument("--insecure", action="store_true",
                   help="no TLS and no node authentication (explicit opt-out)")


FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _exec(cmd: list[str], print_only: bool, replace: bool = False) -> int:
    """Print ``cmd``; unless ``print_only``, run it with the Flower environment.

    ``replace``: this process becomes the command (``os.execvpe``), so that signals sent to it
    reach Flower directly. Otherwise the command runs as a child that gets every SIGTERM /
    SIGINT / SIGHUP this process receives (no orphan is left behind).
    """
    from fedvida.federation.deploy import shell
    from fedvida.federation.runner import flower_environment
    from fedvida.reporting.console import console

    console.print(shell(cmd), soft_wrap=True)
    if print_only:
        return 0
    flower_environment()
    if replace:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execvpe(cmd[0], cmd, os.environ.copy())
    return call_forwarding(cmd)


def call_forwarding(cmd: list[str]) -> int:
    """``subprocess.call`` that passes SIGTERM / SIGINT / SIGHUP on to the child.

    Returns the child's exit status, ``128 + N`` when signal N ended it (as a shell reports it).
    """
    received: list[int] = []
    procs: list[subprocess.Popen[bytes]] = []

    def forward(signum: int, _frame: Any) -> None:
        received.append(signum)
        if procs and procs[0].poll() is None:
            procs[0].send_signal(signum)

    # handlers first: a signal that arrives while the child starts is passed on, not lost
    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    try:
        # its own process group: a Ctrl-C in the terminal reaches this process only, and is
        # passed on once (not twice, which would cut the child's own shutdown short)
        procs.append(subprocess.Popen(cmd, env=os.environ.copy(), process_group=0))
        for signum in received:  # arrived before the child existed
            procs[0].send_signal(signum)
        code = procs[0].wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - code if code < 0 else code


def _certs(args: argparse.Namespace) -> int:
    from fedvida.federation.deploy import DEFAULT_HOSTS, write_certificates, write_node_keys
    from fedvida.reporting.console import console

    files = write_certificates(args.out, (*DEFAULT_HOSTS, *args.host))
    keys = write_node_keys(args.out, args.nodes)
    console.print(f"CA {files.ca_cert}, SuperLink cert {files.server_cert} "
                  f"(SAN {', '.join((*DEFAULT_HOSTS, *args.host))}), {len(keys)} node key pairs")
    return 0


def _superlink(args: argparse.Namespace) -> int:
    from fedvida.federation.deploy import connection_text, superlink_command, write_connection
    from fedvida.federation.runner import flower_environment
    from fedvida.reporting.console import console

    cmd = superlink_command(None if args.insecure else args.certs, host=args.host,
                            control_port=args.port, fleet=args.fleet)
    if args.print_only:  # nothing is written: the connection is only shown
        console.print(connection_text(args.connection, f"{args.host}:{args.port}",
                                      None if args.insecure else args.certs / "ca.crt"),
                      markup=False)
        return _exec(cmd, True)
    home = Path(flower_environment()["FLWR_HOME"])
    path = write_connection(home, args.connection, f"{args.host}:{args.port}",
                            None if args.insecure else args.certs / "ca.crt")
    console.print(f"connection {args.connection!r} written to {path}")
    return _exec(cmd, False, replace=True)


def _supernode(args: argparse.Namespace) -> int:
    from fedvida.federation.deploy import supernode_command

    key = None if args.insecure else (args.key or args.certs / f"node_{args.partition}.key")
    cmd = supernode_command(
        args.partition, superlink=args.superlink, port=args.port or 9094 + args.partition,
        data_dir=args.data, ca_cert=None if args.insecure else args.certs / "ca.crt",
        auth_key=key,
    )
    return _exec(cmd, args.print_only, replace=True)


def _register(args: argparse.Namespace) -> int:
    from fedvida.federation.deploy import register_command

    code = 0
    for key in args.keys:
        code = code or _exec(register_command(key, args.connection), args.print_only)
    return code


def _run(args: argparse.Namespace) -> int:
    import datetime as dt

    from fedvida.commands import config_from_args
    from fedvida.federation.deploy import run_command
    from fedvida.reporting.console import console

    config = Path(args.config or "configs/default.yaml").resolve()
    args.config = str(config)
    cfg = config_from_args(args)  # validated here: a bad --set fails before flwr run
    if args.resume:
        name = args.resume
    elif args.name:
        name = args.name
    else:  # a new folder per run: the same command run twice must not resume a finished run
        name = f"{cfg.name}-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}"
    overrides = [*args.overrides, f"name={name}"]
    code = _exec(run_command(args.connection, config, overrides), args.print_only)
    if not args.print_only:
        where = Path(cfg.train.runs_dir) / name
        console.print(f"run folder: {where} on the SuperLink's machine, relative to the "
                      f"working directory it was started in (report.md, metrics.jsonl, "
                      f"checkpoints/); continue it with --resume {name}", soft_wrap=True)
    return code


def _tap(args: argparse.Namespace) -> int:
    import time

    from fedvida.errors import InputError
    from fedvida.federation.wiretap import WireTap, parse_address
    from fedvida.reporting.console import console

    try:
        tap = WireTap(parse_address(args.target), parse_address(args.listen),
                      max_seconds=args.duration).start()
    except (ValueError, OSError) as err:
        raise InputError(f"deploy tap: {err}") from err
    host, port = tap.address
    console.print(f"relaying {host}:{port} -> {args.target}; point SuperNodes at "
                  f"--superlink {host}:{port} (Ctrl-C stops)")
    try:
        while tap.running:
            time.sleep(max(args.every, 0.1))
            n = tap.snapshot()
            console.print(f"up {n.up} B, down {n.down} B, {n.connections} connections "
                          f"({n.open} open, {n.refused} refused, {n.failed} failed)")
    except KeyboardInterrupt:
        pass
    n = tap.stop()
    console.print(f"total: up {n.up} B, down {n.down} B over {n.connections} connections")
    return 0
