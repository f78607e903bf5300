"""Stopping `fedvida deploy` wrappers with SIGTERM leaves no Flower process behind.

`deploy supernode` / `deploy superlink` become the Flower process (same pid); `deploy run` /
`deploy register` pass the signals on to their child.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from fedvida.federation.runner import process_env

PROJECT = Path(__file__).resolve().parents[2]
FEDVIDA = str(Path(sys.executable).parent / "fedvida")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _with(text: str) -> list[psutil.Process]:
    """Running processes whose command line contains ``text``."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if text in " ".join(proc.info["cmdline"] or []):
            found.append(proc)
    return found


def _until(check: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.25)
    return False


@pytest.mark.slow
def test_sigterm_to_deploy_supernode_stops_the_supernode_and_its_superexec(
    tmp_path: Path
) -> None:
    # Arrange: a SuperNode (insecure, no SuperLink needed: it keeps retrying) and its SuperExec,
    # which connects to the SuperNode's ClientAppIo port
    port, link = _free_port(), _free_port()
    wrapper = subprocess.Popen(
        [FEDVIDA, "deploy", "supernode", "--insecure", "--partition", "0",
         "--superlink", f"127.0.0.1:{link}", "--port", str(port)],
        cwd=PROJECT, env=process_env(tmp_path / "flwr"), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True)
    mark = f"127.0.0.1:{port}"  # on the SuperExec's command line (and nowhere else)
    try:
        assert _until(lambda: _with(f"--port {port}") and _with(mark), 60), "no SuperExec"
        # Act: what a service manager does to the command it started
        os.kill(wrapper.pid, signal.SIGTERM)
        wrapper.wait(timeout=30)
        # Assert: neither the SuperNode nor its SuperExec outlives the wrapper
        assert _until(lambda: not _with(f"--port {port}") and not _with(mark), 30), [
            p.cmdline() for p in _with(mark) + _with(f"--port {port}")]
    finally:
        for proc in _with(f"--port {port}") + _with(mark):
            proc.kill()
        if wrapper.poll() is None:
            wrapper.kill()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_waiting_wrapper_passes_signals_to_its_child(tmp_path: Path, sig: int) -> None:
    # `deploy run` / `deploy register` wait for flwr: a SIGTERM / SIGINT to them must reach it
    token = f"fedvida-forward-{os.getpid()}-{time.time_ns()}"
    # the token reaches the child's command line only (reversed in the wrapper's own)
    script = ("import sys; from fedvida.commands.deploy import call_forwarding; "
              f"sys.exit(call_forwarding([sys.executable, '-c', 'import time; time.sleep(120)', "
              f"'{token[::-1]}'[::-1]]))")
    wrapper = subprocess.Popen([sys.executable, "-c", script], cwd=PROJECT,
                               start_new_session=True)
    try:
        assert _until(lambda: _with(token), 30)
        os.kill(wrapper.pid, sig)
        # the wrapper outlives the signal and reports how its child ended (128 + N)
        assert wrapper.wait(timeout=30) == 128 + sig
        assert _until(lambda: not _with(token), 10)
    finally:
        for proc in _with(token):
            proc.kill()
        if wrapper.poll() is None:
            wrapper.kill()
