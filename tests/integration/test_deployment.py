"""The same app over gRPC: a loopback SuperLink and two SuperNodes, TLS and node authentication.

Certificates and node keys are generated in the test; the run goes through `flwr run . <conn>
--stream` with the connection in a test FLWR_HOME, exactly as documented in docs/deployment.md.
Each message starts a fresh `flwr-clientapp` process (torch import): two rounds, one method.
Then, on the same SuperLink, a third SuperNode joins and one round runs with SecAgg+ (three
shares need three clients per round): four protocol stages per node, metered and checked
against the wire like the first run.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import grpc
import pytest
from deploy_helpers import free_port as _free_port
from deploy_helpers import register_nodes
from deploy_helpers import stop as _stop
from deploy_helpers import wait_for as _wait_for

from fedvida.config import Config
from fedvida.federation.deploy import (
    run_command,
    superlink_command,
    supernode_command,
    write_certificates,
    write_connection,
    write_node_keys,
)
from fedvida.federation.flower_compat import build_fab
from fedvida.federation.runner import process_env
from fedvida.federation.wiretap import WireTap
from fedvida.reporting.runlog import RunLog

pytestmark = pytest.mark.slow
PROJECT = Path(__file__).resolve().parents[2]


def test_two_supernodes_over_grpc_with_tls_and_node_auth(
    fed_pipeline: Config, tmp_path: Path
) -> None:
    # Arrange: certificates, node keys, the flwr connection, free ports
    certs = write_certificates(tmp_path / "certs")
    keys = write_node_keys(tmp_path / "certs", 3)
    home = tmp_path / "flwr"
    control, fleet = _free_port(), _free_port()
    write_connection(home, "fedvida", f"127.0.0.1:{control}", certs.ca_cert)
    env = process_env(home)
    cfg = fed_pipeline.model_copy(deep=True)
    cfg.name, cfg.train.runs_dir = "deployed", tmp_path / "runs"
    cfg.train.methods = ["gt_audio"]
    cfg.federation.client_timeout_s = 240
    cfg.federation.allow_fewer_nodes = True  # 2 SuperNodes for the plan's 4 clients, on purpose
    config_path = tmp_path / "config.yaml"
    config_path.write_text(cfg.to_yaml())
    secure = cfg.model_copy(deep=True)  # the second run: SecAgg+, one round, three clients
    secure.name, secure.federation.rounds, secure.privacy.secagg.enabled = "secagg", 1, True
    secure_path = tmp_path / "secagg.yaml"
    secure_path.write_text(secure.to_yaml())
    procs: list[subprocess.Popen[bytes]] = []
    # The SuperNodes reach the Fleet API through a loopback relay that counts the bytes on the
    # wire (TLS end to end: the relay only copies bytes; the certificate's SAN 127.0.0.1 matches)
    tap = WireTap(("127.0.0.1", fleet), max_connections=16, max_seconds=900)

    def start(cmd: list[str], log: Path) -> None:
        procs.insert(0, subprocess.Popen(cmd, cwd=PROJECT, env=env, stdout=log.open("wb"),
                                         stderr=subprocess.STDOUT, start_new_session=True))

    try:
        link_log = tmp_path / "superlink.log"
        start(superlink_command(certs.ca_cert.parent, control_port=control,
                                fleet=f"127.0.0.1:{fleet}"), link_log)
        _wait_for(link_log, "Starting Fleet API", 60)
        # The Fleet API speaks gRPC over TLS: a channel verifying our CA becomes ready (TLS +
        # HTTP/2 handshake), a plaintext channel to the same port does not.
        ca = certs.ca_cert.read_bytes()
        with grpc.secure_channel(f"127.0.0.1:{fleet}", grpc.ssl_channel_credentials(ca)) as ch:
            grpc.channel_ready_future(ch).result(timeout=20)
        with grpc.insecure_channel(f"127.0.0.1:{fleet}") as ch, pytest.raises(
                grpc.FutureTimeoutError):
            grpc.channel_ready_future(ch).result(timeout=3)
        register_nodes(keys, env, PROJECT)
        tap.start()
        for k, (private, _) in enumerate(keys[:2]):
            start(supernode_command(k, superlink=f"127.0.0.1:{tap.address[1]}",
                                    port=_free_port(),
                                    data_dir=cfg.partition.plan.parent, ca_cert=certs.ca_cert,
                                    auth_key=private), tmp_path / f"supernode{k}.log")
        # Act: flwr run with the config path, streaming the ServerApp's log
        run = subprocess.run(run_command("fedvida", config_path, app_dir=PROJECT), cwd=PROJECT,
                             env=env, capture_output=True, text=True, timeout=480)
        wire = tap.snapshot()  # the first run's bytes; the SecAgg+ run adds its own
        # Act 2: a third SuperNode joins (through the relay too), then a SecAgg+ run
        start(supernode_command(2, superlink=f"127.0.0.1:{tap.address[1]}", port=_free_port(),
                                data_dir=cfg.partition.plan.parent, ca_cert=certs.ca_cert,
                                auth_key=keys[2][0]), tmp_path / "supernode2.log")
        _wait_for(tmp_path / "supernode2.log", "SuperNode ID", 60)
        secure_run = subprocess.run(run_command("fedvida", secure_path, app_dir=PROJECT),
                                    cwd=PROJECT, env=env, capture_output=True, text=True,
                                    timeout=480)
    finally:
        _stop(procs)
        wire_all = tap.stop()
    # Assert: two aggregated rounds with both SuperNodes, metered, reported
    lines = RunLog(tmp_path / "runs" / "deployed").read()
    assert [ln["round"] for ln in lines] == [1, 2], run.stdout[-3000:] + run.stderr[-2000:]
    for ln in lines:
        assert ln["aggregated"] and ln["succeeded"] == 2 and ln["failures"] == []
        assert ln["bytes_down"] > 0 and ln["bytes_up"] > 0
        assert 0.0 <= ln["server"]["top1"] <= 1.0
    assert "gt_audio round 2/2" in run.stdout
    # 2 SuperNodes for a 4-client plan: allowed, but said (and recorded on every line)
    assert "only 2 of the plan's 4 clients have a node: partitions 2, 3 will not train" in \
        " ".join(run.stdout.split())
    assert all(ln["nodes"] == {"connected": 2, "planned": 4} for ln in lines)
    # the server says where it wrote the run folder
    assert f"run folder: {(tmp_path / 'runs' / 'deployed').resolve()}" in run.stdout
    assert (tmp_path / "runs" / "deployed" / "report.md").is_file()
    assert all(proc.poll() is not None for proc in procs)
    # Bytes: the metered payload (metrics.jsonl) against the wire (docs/federation.md, "Cross-check
    # on the wire"). Down, each node also downloads the app (FAB) once; what remains on top of the
    # payload is TLS, HTTP/2 + gRPC framing and polls: measured metered / wire = 0.987.
    # Up, the SuperLink skips objects it already holds (an array left unchanged by training that
    # the other node pushed first), so the wire can carry less than the metered payload: measured
    # 0.95 (no object skipped) to 1.12 (the untrained generator skipped once per round); skipping
    # every unchanged array of both replies would give about 1.4. Both bands catch a 2x miscount.
    fab = len(build_fab(PROJECT))
    # every round's exchanges plus the last round's validation exchange (select_round)
    down = sum(ln["bytes_down"] + ln.get("validation", {}).get("bytes_down", 0) for ln in lines)
    up = sum(ln["bytes_up"] + ln.get("validation", {}).get("bytes_up", 0) for ln in lines)
    counts = (f"wire down {wire.down} up {wire.up} ({wire.connections} connections), metered "
              f"down {down} up {up}, FAB {fab}")
    assert wire.connections >= 2 and wire.refused == 0, counts
    assert wire.down >= down + 2 * fab, counts
    assert 0.9 <= down / (wire.down - 2 * fab) <= 1.0, counts
    assert 0.85 <= up / wire.up <= 1.5, counts
    print(counts)
    # Assert: the SecAgg+ round: three clients, four metered stages, the same local training
    secure_lines = RunLog(tmp_path / "runs" / "secagg").read()
    assert len(secure_lines) == 1, secure_run.stdout[-3000:] + secure_run.stderr[-2000:]
    line = secure_lines[0]
    assert line["aggregated"] and line["failures"] == [] and line["succeeded"] == 3
    stages = line["secagg"]["stages"]
    assert line["secagg"]["completed"] and line["sampled"] == 3 and line["messages_down"] == 12
    assert line["bytes_up"] == sum(s["bytes_up"] for s in stages.values())
    assert line["bytes_down"] == sum(s["bytes_down"] for s in stages.values())
    for part in ("0", "1"):  # round 1 from the same model and seed: the same update as before
        assert line["clients"][part]["train_loss"] == lines[0]["clients"][part]["train_loss"]
    assert "gt_audio round 1/1" in secure_run.stdout
    # its wire: three nodes fetch the app once each; the masked vectors (random int64, twice
    # the float32 update) are never skipped by the object store
    down2, up2 = wire_all.down - wire.down, wire_all.up - wire.up
    val = line.get("validation", {})
    sdown = line["bytes_down"] + val.get("bytes_down", 0)
    sup = line["bytes_up"] + val.get("bytes_up", 0)
    counts = (f"SecAgg+: wire down {down2} up {up2}, metered down {sdown} up {sup}, "
              f"stages {stages}")
    assert wire_all.refused == 0 and down2 >= sdown + 3 * fab, counts
    assert 0.9 <= sdown / (down2 - 3 * fab) <= 1.0, counts
    assert 0.9 <= sup / up2 <= 1.1, counts
    print(counts)
