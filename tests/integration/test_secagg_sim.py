"""SecAgg+ in Flower's simulation engine (Ray) with the real apps on real demo features.

One simulation, two federations on the same SuperNodes: ``secure`` (privacy.secagg, two rounds)
and ``plain`` (one round), both through `serve` with the same seed, so round 1 trains exactly the
same client updates (seeded by (seed, round, partition)). SecAgg+'s round-1 model must be
FedAvg's within the quantisation bound, and every message a client sent under SecAgg+ must hold
protocol bytes and numbers only. The gRPC deployment runs SecAgg+ in test_deployment.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flwr.serverapp import Grid
from sim_helpers import RecordingGrid, simulate_server

from fedvida.config import Config
from fedvida.federation.checkpoints import checkpoint_dir, load_checkpoint
from fedvida.federation.keys import SECAGG_MESSAGE_TYPE
from fedvida.federation.records import check_reply
from fedvida.federation.secagg import (
    STAGES,
    check_secagg_reply,
    quantization_bound,
)
from fedvida.federation.server import ServerEvaluator, dictionary_digest, serve
from fedvida.reporting.runlog import RunLog

pytestmark = pytest.mark.slow


def test_secagg_simulation_is_fedavg_within_the_quantisation_bound(
    fed_pipeline: Config, tmp_path: Path
) -> None:
    # Arrange: all four clients train each round; SecAgg+ with 3 shares, threshold 2
    base = fed_pipeline.model_copy(deep=True)
    base.train.runs_dir = tmp_path / "runs"
    base.train.methods = ["gt_audio"]
    secure, plain = base.model_copy(deep=True), base.model_copy(deep=True)
    secure.name, plain.name, plain.federation.rounds = "secure", "plain", 1
    secure.privacy.secagg.enabled = True
    secure = Config.model_validate(secure.model_dump())  # the config checks SecAgg+ settings
    recording: list[RecordingGrid] = []

    def main(grid: Grid) -> None:
        recording.append(RecordingGrid(grid))
        serve(recording[0], secure)  # type: ignore[arg-type]
        serve(grid, plain)

    # Act
    ended, watch = simulate_server(main, secure)  # reaps this run's Ray processes only
    # Assert: two SecAgg+ rounds, four metered stages each, summed into the train bytes
    lines = RunLog(tmp_path / "runs" / "secure").read()
    (reference,) = RunLog(tmp_path / "runs" / "plain").read()
    assert [ln["round"] for ln in lines] == [1, 2]
    for ln in lines:
        assert ln["aggregated"] and ln["failures"] == [] and ln["sampled"] == ln["succeeded"] == 4
        info = ln["secagg"]
        assert info["completed"] and set(info["stages"]) == set(STAGES)
        assert ln["bytes_up_train"] == sum(s["bytes_up"] for s in info["stages"].values())
        assert ln["bytes_down_train"] == sum(s["bytes_down"] for s in info["stages"].values())
        assert ln["messages_down"] == 16
        # the masked vectors are int64: about twice the float32 updates of the plain run
        ratio = info["stages"]["collect_masked_vectors"]["bytes_up"] / reference["bytes_up"]
        assert 1.9 < ratio < 2.1
    assert lines[0]["clients"].keys() == reference["clients"].keys()
    for part, metrics in reference["clients"].items():  # the same local training
        assert lines[0]["clients"][part]["train_loss"] == metrics["train_loss"]
    # Assert: round 1 under SecAgg+ is FedAvg's model within the rounding bound
    secured = load_checkpoint(checkpoint_dir(tmp_path / "runs" / "secure", "gt_audio")
                              / "round_0001.safetensors").model
    fedavg = load_checkpoint(checkpoint_dir(tmp_path / "runs" / "plain", "gt_audio")
                             / "round_0001.safetensors").model
    weights = [c["num-examples"] for c in reference["clients"].values()]
    bound = quantization_bound(secure.privacy.secagg, weights, lines[0]["secagg"]["max_weight"])
    gap = max(float(np.abs(secured[k].astype(np.float64) - fedavg[k]).max()) for k in fedavg)
    # plus float32 rounding: FedAvg's own weighted sum and the cast of the SecAgg+ aggregate
    float32 = max(float(np.abs(v).max()) for v in fedavg.values()) * np.finfo(np.float32).eps
    assert 0 < gap <= bound + 8 * float32, (gap, bound)
    print(f"SecAgg+ vs FedAvg, round 1: max gap {gap:.3g}, bound {bound:.3g}")
    initial = ServerEvaluator(plain, dictionary_digest(plain)).initial_state(plain, "gt_audio")
    moved = max(float(np.abs(fedavg[k] - initial[k]).max()) for k in fedavg)
    assert moved > 100 * bound
    # Assert: under SecAgg+ no client message held an array: protocol bytes and numbers only
    grid = recording[0]
    secagg_replies = [m for m in grid.received if m.metadata.message_type == SECAGG_MESSAGE_TYPE]
    assert len(secagg_replies) == 2 * 4 * len(STAGES)
    for reply in grid.received:
        assert not reply.has_error()
        if reply.metadata.message_type == SECAGG_MESSAGE_TYPE:
            assert check_secagg_reply(reply.content) == []
        else:
            assert check_reply(reply.content, ()) == []
    assert ended == [] and watch.alive() == []
