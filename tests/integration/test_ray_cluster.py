"""A simulation joins an existing Ray cluster (`federation.ray_address`) instead of starting one.

The test starts the cluster as a user would (`ray start --head`, then `ray start --address` for
a second node; one CPU each, loopback), runs one round with two clients on it and checks that
the clients' actors ran on both nodes, that the resource check read the cluster (not this
machine), and that fedvida left the cluster running for its owner; the test then stops it and
no Ray process of this environment remains.
"""

from __future__ import annotations

import threading
from pathlib import Path

import psutil
import pytest
from ray_cluster import LoopbackCluster
from test_simulation import ray_leftovers

from fedvida.config import Config
from fedvida.errors import ConfigError
from fedvida.federation.runner import check_resources, run_federated
from fedvida.reporting.runlog import RunLog

pytestmark = pytest.mark.slow


def _actor_parents(raylets: list[psutil.Process], seen: set[int],
                   stop: threading.Event) -> None:
    """Record which raylets (node processes) have a client actor as a child, until ``stop``."""
    while not stop.is_set():
        for raylet in raylets:
            try:
                if any("ClientAppActor" in child.name() or "ClientAppActor" in
                       " ".join(child.cmdline()) for child in raylet.children()):
                    seen.add(raylet.pid)
            except psutil.Error:
                continue
        stop.wait(0.2)


def test_simulation_on_a_two_node_ray_cluster(fed_pipeline: Config, tmp_path: Path) -> None:
    # Arrange: a head and a second node, one CPU each; 2 of the plan's 4 clients per round
    cluster = LoopbackCluster(tmp_path / "flwr")
    cfg = fed_pipeline.model_copy(deep=True)
    cfg.train.runs_dir = tmp_path / "runs"
    cfg.federation.rounds, cfg.federation.fraction_train = 1, 0.5
    cfg.federation.num_cpus_per_client = 1.0
    cfg.federation.ray_address = cluster.address
    seen: set[int] = set()
    stop = threading.Event()
    try:
        cluster.start_head()
        cluster.add_node()
        raylets = cluster.raylets()
        assert len(raylets) == 2, cluster.logs
        # the check counts the cluster's nodes: 2 CPUs on this machine would fit a 2-CPU client,
        # each 1-CPU node does not
        big = cfg.model_copy(deep=True)
        big.federation.num_cpus_per_client, big.federation.ray_num_cpus = 2.0, 2
        with pytest.raises(ConfigError, match=r"none of the 2 node\(s\) .*CPUs per node: 1, 1"):
            check_resources(big)
        assert "2 node(s)" in str(check_resources(cfg))
        watch = threading.Thread(target=_actor_parents, args=(raylets, seen, stop), daemon=True)
        watch.start()
        # Act
        results = run_federated(cfg, ["gt_audio"], "on-cluster")
        stop.set()
        watch.join(timeout=5)
        # Assert: the round ran with both clients, one actor on each node
        assert results["gt_audio"]["rounds"] == 1 and results["gt_audio"]["failures"] == 0
        (line,) = RunLog(tmp_path / "runs" / "on-cluster").read()
        assert line["sampled"] == line["succeeded"] == 2 and line["aggregated"]
        assert 0.0 <= line["server"]["top1"] <= 1.0
        assert seen == {r.pid for r in raylets}, "client actors did not run on both nodes"
        # fedvida disconnected from the cluster without stopping it
        import ray

        assert not ray.is_initialized()
        assert all(r.is_running() for r in raylets)
    finally:
        stop.set()
        cluster.stop()
    assert cluster.processes() == [] and ray_leftovers() == []
