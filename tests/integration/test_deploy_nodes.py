"""The N-node deployment recipe (docs/deployment.md, "N nodes"): every SuperNode extracts its
own clips into its own store, and the server never sees a node's path.

Loopback, TLS and SuperNode authentication: the server partitions (3 clients), keeps only the
test clips and extracts them; each of 3 nodes gets the plan and dictionary, a copy of only its
clips in a folder of its own, and runs `fedvida extract --client K --clips ... ` into its own
`data-dir`; then one round of `flwr run` with three SuperNodes.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from deploy_helpers import free_port, register_nodes, stop, wait_for

from fedvida.cli import main
from fedvida.config import Config
from fedvida.data.partition import Plan
from fedvida.features.cache import open_stores
from fedvida.federation.deploy import (
    run_command,
    superlink_command,
    supernode_command,
    write_certificates,
    write_connection,
    write_node_keys,
)
from fedvida.federation.runner import process_env
from fedvida.reporting.runlog import RunLog

pytestmark = pytest.mark.slow
PROJECT = Path(__file__).resolve().parents[2]
NODES = 3


def _copy_clips(plan: Plan, part: int | str, source: Path, dest: Path) -> int:
    """Copy a partition's clip files (plan-relative paths) from ``source`` to ``dest``."""
    clips = plan.partition(part)
    for clip in clips:
        (dest / clip.relpath).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / clip.relpath, dest / clip.relpath)
    return len(clips)


def _stored(cache_dir: Path) -> int:
    """Clips with video features in a feature store."""
    cfg = Config()
    cfg.extract.cache_dir = cache_dir
    return len(open_stores(cfg.extract)[0].index())


def test_three_supernodes_each_extract_their_own_clips_over_tls(
    fed_pipeline: Config, tmp_path: Path
) -> None:
    # Arrange, the server: a 3-client plan, the dictionary, only the test clips, their features
    server = tmp_path / "server"
    cfg = fed_pipeline.model_copy(deep=True)
    cfg.name, cfg.train.runs_dir = "nodes", tmp_path / "runs"
    cfg.partition.num_clients, cfg.partition.plan = NODES, server / "plan.json"
    cfg.extract.cache_dir, cfg.dictionary.out = server / "cache", server / "dictionary"
    cfg.train.methods = ["gt_audio"]  # type: ignore[list-item]
    cfg.federation.rounds, cfg.federation.client_timeout_s = 1, 240
    config_path = tmp_path / "config.yaml"
    config_path.write_text(cfg.to_yaml())
    assert main(["partition", "--config", str(config_path)]) == 0
    plan = Plan.load(server / "plan.json")
    shutil.copytree(fed_pipeline.dictionary.out, server / "dictionary")
    dataset = Path(plan.dataset_root)
    n_test = _copy_clips(plan, "test", dataset, server / "clips")
    assert main(["extract", "--config", str(config_path), "--client", "test",
                 "--clips", str(server / "clips")]) == 0
    # Arrange, each node: the plan and dictionary (copied), its own clips, its own store
    data_dirs = []
    for k in range(NODES):
        node, data = tmp_path / f"node{k}", tmp_path / f"node{k}" / "data"
        n_clips = _copy_clips(plan, k, dataset, node / "clips")
        data.mkdir(parents=True)
        shutil.copy2(server / "plan.json", data / "plan.json")
        shutil.copytree(server / "dictionary", data / "dictionary")
        assert main(["extract", "--config", str(config_path), "--client", str(k),
                     "--clips", str(node / "clips"),
                     "--set", f"partition.plan={data / 'plan.json'}",
                     "--set", f"extract.cache_dir={data / 'cache'}"]) == 0
        assert _stored(data / "cache") == n_clips  # its clips only
        data_dirs.append(data)
    assert _stored(server / "cache") == n_test
    # Arrange, Flower: TLS, registered node keys, the connection, free ports
    certs = write_certificates(tmp_path / "certs")
    keys = write_node_keys(tmp_path / "certs", NODES)
    home = tmp_path / "flwr"
    control, fleet = free_port(), free_port()
    write_connection(home, "fedvida", f"127.0.0.1:{control}", certs.ca_cert)
    env = process_env(home)
    procs: list[subprocess.Popen[bytes]] = []

    def start(cmd: list[str], log: Path, cwd: Path) -> None:
        procs.insert(0, subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log.open("wb"),
                                         stderr=subprocess.STDOUT, start_new_session=True))

    link_log = tmp_path / "superlink.log"
    try:
        start(superlink_command(certs.ca_cert.parent, control_port=control,
                                fleet=f"127.0.0.1:{fleet}"), link_log, server)
        wait_for(link_log, "Starting Fleet API", 60)
        register_nodes(keys, env, PROJECT)
        for k, (private, _) in enumerate(keys):
            start(supernode_command(k, superlink=f"127.0.0.1:{fleet}", port=free_port(),
                                    data_dir=data_dirs[k], ca_cert=certs.ca_cert,
                                    auth_key=private), tmp_path / f"supernode{k}.log",
                  data_dirs[k].parent)
        # Act
        run = subprocess.run(run_command("fedvida", config_path, app_dir=PROJECT), cwd=PROJECT,
                             env=env, capture_output=True, text=True, timeout=300)
    finally:
        stop(procs)
    # Assert: one aggregated round with all three nodes
    folder = tmp_path / "runs" / "nodes"
    lines = RunLog(folder).read()
    assert [ln["round"] for ln in lines] == [1], run.stdout[-3000:] + run.stderr[-2000:]
    (line,) = lines
    assert line["aggregated"] and line["sampled"] == line["succeeded"] == NODES
    assert line["failures"] == [] and line["nodes"] == {"connected": NODES, "planned": NODES}
    assert sorted(line["clients"]) == [str(k) for k in range(NODES)]
    # the server's cache has the test split only, so each client read its own data-dir's pack
    assert sorted(p.name for p in (server / "cache").iterdir() if p.is_dir()) == ["store", "test"]
    for k, data in enumerate(data_dirs):
        assert sorted(p.name for p in (data / "cache").iterdir() if p.is_dir()) == [str(k), "store"]
    assert all(proc.poll() is not None for proc in procs)
    # Assert: no node path (clips or data-dir) reached the server's output or its log
    seen_by_server = [run.stdout, run.stderr, link_log.read_text(errors="replace")]
    seen_by_server += [p.read_text(errors="replace") for p in folder.rglob("*")
                       if p.is_file() and p.suffix in {".jsonl", ".json", ".md", ".yaml"}]
    for k in range(NODES):
        assert not any(str(tmp_path / f"node{k}") in text for text in seen_by_server), k
