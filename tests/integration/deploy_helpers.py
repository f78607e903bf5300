"""Helpers of the deployment tests: free loopback ports, waiting for a log line, registering the
SuperNodes' public keys, and stopping the Flower processes a test started (each in its own
process group)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from fedvida.federation.deploy import register_command


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(path: Path, text: str, timeout: float) -> None:
    """Wait until the file at ``path`` contains ``text`` (AssertionError with its tail if not)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and text in path.read_text(errors="replace"):
            return
        time.sleep(0.5)
    raise AssertionError(f"'{text}' not in {path} after {timeout}s:\n{path.read_text()[-2000:]}")


def register_nodes(keys: Sequence[tuple[Path, Path]], env: Mapping[str, str], cwd: Path) -> None:
    """Register every (private, public) node key's public half with the running SuperLink of the
    ``fedvida`` connection (`register_command`), asserting each says so."""
    for _, public in keys:
        done = subprocess.run(register_command(public, "fedvida"), cwd=cwd, env=dict(env),
                              capture_output=True, text=True, timeout=60)
        assert "registered successfully" in done.stdout, done.stdout + done.stderr


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each process group in list order (SuperNodes before the SuperLink: start them
    with ``start_new_session=True`` and insert each at the front), SIGKILL after 30 s."""
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
