"""A loopback Ray cluster for the tests: a head and more nodes started with this venv's `ray`
CLI (`ray start --head`, `ray start --address`), as a user starts one (docs/federation.md).

Every port is chosen free (two nodes share this machine, other jobs run Ray beside them) and
the cluster lives in its own temp dir. `stop` ends exactly this cluster's processes by pid
(those naming the temp dir, and their children: workers, agents): `ray stop` would end every
Ray process on the machine, other jobs' included.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
from deploy_helpers import free_port

from fedvida.federation.runner import process_env

RAY = str(Path(sys.executable).parent / "ray")


class LoopbackCluster:
    """``ray start --head`` plus ``ray start --address`` nodes on 127.0.0.1, one CPU each."""

    def __init__(self, flwr_home: Path) -> None:
        # short: Ray's unix socket paths under it must stay below 107 characters
        self.temp_dir = Path(tempfile.mkdtemp(prefix="fvray", dir="/tmp"))
        self.port, self.client_port = free_port(), free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = process_env(flwr_home)
        self.logs: list[str] = []

    def _start(self, args: list[str]) -> None:
        common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--num-gpus=0",
                  f"--temp-dir={self.temp_dir}", "--object-store-memory=100000000",
                  f"--dashboard-agent-listen-port={free_port()}",
                  f"--dashboard-agent-grpc-port={free_port()}",
                  f"--metrics-export-port={free_port()}",
                  f"--runtime-env-agent-port={free_port()}", "--disable-usage-stats"]
        done = subprocess.run([RAY, "start", *args, *common], env=self.env, text=True,
                              capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
        self.logs.append(done.stdout + done.stderr)
        if done.returncode != 0:
            raise RuntimeError(f"ray start {' '.join(args)} failed:\n{self.logs[-1][-3000:]}")

    def start_head(self) -> None:
        self._start(["--head", f"--port={self.port}", "--include-dashboard=false",
                     f"--dashboard-port={free_port()}",
                     f"--ray-client-server-port={self.client_port}"])

    def add_node(self) -> None:
        self._start([f"--address={self.address}"])

    def processes(self) -> list[psutil.Process]:
        """This cluster's Ray processes: those naming its temp dir (GCS, raylets, monitors) and
        its Ray Client server (named by its port)."""
        me = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
        marks, found = (str(self.temp_dir), f"--port={self.client_port} "), []
        for proc in psutil.process_iter(["cmdline", "status"]):
            text = " ".join(proc.info["cmdline"] or []) + " "
            if proc.pid not in me and any(m in text for m in marks) and "ray" in text \
                    and proc.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(proc)
        return found

    def raylets(self) -> list[psutil.Process]:
        """The raylet of each node (the head's first)."""
        found = [p for p in self.processes() if "raylet/raylet" in " ".join(p.cmdline())]
        return sorted(found, key=lambda p: p.create_time())

    def stop(self) -> None:
        """SIGTERM every process of this cluster (and their children), SIGKILL survivors."""
        procs: dict[int, psutil.Process] = {}
        for root in self.processes():
            with contextlib.suppress(psutil.Error):
                for proc in [root, *root.children(recursive=True)]:
                    procs[proc.pid] = proc
        for proc in procs.values():
            with contextlib.suppress(psutil.Error):
                proc.terminate()
        _, alive = psutil.wait_procs(list(procs.values()), timeout=20)
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(alive, timeout=10)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
