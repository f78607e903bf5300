"""`flwr run . <connection>` on a simulation SuperLink: the same run as `fedvida simulate`.

The same config, seed and plan both ways: `run_federated` (Flower's in-process
``run_simulation``) and Flower's own CLI against a ``flower-superlink --simulation`` with the
number of virtual SuperNodes and the Ray resources of `runner.federation_config`, exactly as
docs/federation.md tells a user to. Both must give a run folder with the same files, every
SuperNode of the plan, and metrics.jsonl lines and checkpoints that are equal number for number
(wall times aside).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from sim_helpers import stable_line

from fedvida.config import Config
from fedvida.data.partition import Plan
from fedvida.federation.checkpoints import checkpoint_dir, load_checkpoint
from fedvida.federation.deploy import superlink_command, write_connection
from fedvida.federation.runner import ChildWatch, flwr_run_command, process_env, run_federated
from fedvida.reporting.runlog import RunLog

pytestmark = pytest.mark.slow
PROJECT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(port: int, link: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert link.poll() is None, log.read_text(errors="replace")[-2000:]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"SuperLink not ready after {timeout}s:\n{log.read_text()[-2000:]}")


def test_flwr_run_gives_the_same_run_as_fedvida_simulate(
    fed_pipeline: Config, tmp_path: Path
) -> None:
    # Arrange: one method, one round, half of the 4 clients; two run folders whose paths have
    # the same length (the config travels in every instruction, so bytes match too)
    cfg = fed_pipeline.model_copy(deep=True)
    cfg.federation.rounds = 1
    cfg.federation.fraction_train = 0.5
    clients = Plan.load(cfg.partition.plan).num_clients
    sim_cfg = cfg.model_copy(deep=True)
    sim_cfg.train.runs_dir = tmp_path / "a" / "runs"
    flwr_cfg = cfg.model_copy(deep=True)
    flwr_cfg.train.runs_dir = tmp_path / "b" / "runs"
    config_path = tmp_path / "b" / "config.yaml"
    config_path.parent.mkdir(parents=True)
    config_path.write_text(flwr_cfg.to_yaml())

    # Act 1: fedvida simulate's engine path
    run_federated(sim_cfg, ["gt_audio"], "twin")

    # Act 2: flwr run against a simulation SuperLink (its own ports and FLWR_HOME)
    home, port = tmp_path / "flwr", _free_port()
    write_connection(home, "fedvida-sim", f"127.0.0.1:{port}", None)
    watch = ChildWatch()  # its token reaches every Ray process the SuperLink's run starts
    env = process_env(home)
    log = tmp_path / "superlink.log"
    link = subprocess.Popen(
        superlink_command(None, control_port=port, fleet=f"127.0.0.1:{_free_port()}",
                          node_auth=False, simulation=True),
        cwd=PROJECT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
        start_new_session=True)
    watch.start()
    try:
        _wait_healthy(port, link, log, 60)
        # what `fedvida simulate --print-flwr-run fedvida-sim --name twin` prints
        cmd = flwr_run_command(flwr_cfg, config_path, [], ["gt_audio"], "twin", clients,
                               "fedvida-sim")
        run = subprocess.run(cmd, cwd=PROJECT, env=env, capture_output=True, text=True,
                             timeout=300)
    finally:
        os.killpg(link.pid, signal.SIGTERM)
        try:
            link.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(link.pid, signal.SIGKILL)
            link.wait(timeout=10)
        watch.stop_and_reap()
    out = run.stdout[-3000:] + run.stderr[-2000:]

    # Assert: every planned SuperNode, the same run folder, the same numbers
    a, b = sim_cfg.train.runs_dir / "twin", flwr_cfg.train.runs_dir / "twin"
    lines_a, lines_b = RunLog(a).read(), RunLog(b).read()
    assert [ln["round"] for ln in lines_b] == [1], out
    assert lines_b[0]["nodes"] == {"connected": clients, "planned": clients}
    assert [stable_line(ln) for ln in lines_b] == [stable_line(ln) for ln in lines_a]
    assert lines_b[0]["sampled"] == 2 and lines_b[0]["aggregated"]
    for name in ("config.yaml", "metrics.jsonl", "report.md"):
        assert (a / name).is_file() and (b / name).is_file(), name
    ckpt = "round_0001.safetensors"
    model_a = load_checkpoint(checkpoint_dir(a, "gt_audio") / ckpt).model
    model_b = load_checkpoint(checkpoint_dir(b, "gt_audio") / ckpt).model
    assert model_a.keys() == model_b.keys()
    for key, value in model_a.items():
        np.testing.assert_array_equal(model_b[key], value)
    assert "gt_audio round 1/1" in run.stdout and f"run folder: {b.resolve()}" in run.stdout, out
