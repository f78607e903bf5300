"""Compressed updates and partial sharing in a real Flower simulation (Ray) on demo features.

One run of the real ClientApp (``clients.client_app:app``, compression mod outermost) under the
real server loop: int8 updates with error feedback up, float16 weights down, two of the four
model parts shared (the classifier and tagger; the generator and audio projection they read
stay on each client). Checks what crossed the wire at the moment it arrived (encoded keys of
shared tensors only, numbers only), the metered bytes against the shared model's size, that
training went on, and that a resume restores the node-local parts and residuals (bit for bit).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import Message
from flwr.serverapp import Grid
from sim_helpers import assert_resumed_log, simulate_server

from fedvida.config import Config
from fedvida.federation.checkpoints import checkpoint_dir, load_checkpoint
from fedvida.federation.records import check_reply, shared_key
from fedvida.federation.runner import (
    run_federated,
)
from fedvida.federation.server import serve
from fedvida.reporting.runlog import RunLog

pytestmark = pytest.mark.slow

SHARED = ["classifier", "tagger"]


class WireLog:
    """A grid that checks every message as it is sent or pulled, before the server decodes it."""

    def __init__(self, grid: Grid) -> None:
        self.grid = grid
        self.down: list[dict[str, Any]] = []
        self.up: list[dict[str, Any]] = []

    def get_node_ids(self) -> Iterable[int]:
        return self.grid.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        msgs = list(messages)
        for m in msgs:
            if m.metadata.message_type == "train":
                arrays = m.content["arrays"]
                self.down.append({k: np.dtype(a.dtype) for k, a in arrays.items()})
        return self.grid.push_messages(msgs)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        got = list(self.grid.pull_messages(message_ids))
        for reply in got:
            if reply.has_error() or not reply.content.array_records:
                continue
            shared = {shared_key(k) for k in self.down[-1]}
            arrays = reply.content["arrays"]
            self.up.append({"keys": {k: np.dtype(a.dtype) for k, a in arrays.items()},
                            "privacy": check_reply(reply.content, shared)})
        return got


def test_int8_uplink_float16_downlink_under_partial_sharing(
    fed_pipeline: Config, tmp_path: Path
) -> None:
    # Arrange: 4 clients, 3 per round (two rounds share at least two clients), 2 rounds
    cfg = fed_pipeline.model_copy(deep=True)
    cfg.name = "compressed"
    cfg.train.runs_dir = tmp_path / "runs"
    cfg.federation.fraction_train = 0.75
    cfg.train.methods = ["generated"]
    cfg.federation.shared_prefixes = SHARED
    cfg.communication.uplink = "int8"
    cfg.communication.downlink = "float16"
    wire: list[WireLog] = []

    def main(grid: Grid) -> None:
        wire.append(WireLog(grid))
        serve(wire[0], cfg)  # type: ignore[arg-type]

    # Act: the product ClientApp with its mods
    simulate_server(main, cfg)
    # Assert: what travelled, as it travelled
    log = wire[0]
    assert len(log.down) == 6 and len(log.up) == 6
    for sent in log.down:  # float16 weights of the shared parts only
        assert all(k.endswith("::f16") and dt == np.float16 for k, dt in sent.items())
        assert {shared_key(k).split(".")[0] for k in sent} == set(SHARED)
    for reply in log.up:  # int8 codes + affine pairs, nothing else, nothing private
        assert reply["privacy"] == []
        codes = {k for k, dt in reply["keys"].items() if k.endswith("::d-i8")}
        assert codes and all(reply["keys"][k] == np.int8 for k in codes)
        assert set(reply["keys"]) == codes | {k + "-affine" for k in codes}
    # Assert: metered bytes against the shared model's size
    folder = tmp_path / "runs" / "compressed"
    lines = RunLog(folder).read()
    ckpt = load_checkpoint(checkpoint_dir(folder, "generated") / "round_0002.safetensors")
    assert {k.split(".")[0] for k in ckpt.model} == set(SHARED)
    model_bytes = sum(a.nbytes for a in ckpt.model.values())
    arrays = len(ckpt.model)
    for ln in lines:
        assert ln["aggregated"] and ln["failures"] == [] and ln["succeeded"] == 3
        assert ln["communication"] == {"uplink": "int8", "downlink": "float16",
                                       "shared_prefixes": SHARED, "error_feedback": True}
        # per message: a quarter (int8) / half (float16) of the payload, plus Flower's record
        # structure (~370 B per array; an int8 tensor is two arrays) and the config YAML down
        assert 3 * model_bytes / 4 < ln["bytes_up"] < 3 * (model_bytes / 4 + 800 * arrays + 2000)
        assert 3 * model_bytes / 2 < ln["bytes_down"] < 3 * (model_bytes / 2 + 400 * arrays
                                                             + 20_000)
        assert np.isfinite(ln["train"]["train_loss"]) and 0.0 <= ln["server"]["top1"] <= 1.0
    # Assert: training moved the global model, which stayed finite float32
    first = load_checkpoint(checkpoint_dir(folder, "generated") / "round_0001.safetensors")
    moved = [k for k in ckpt.model if not np.array_equal(ckpt.model[k], first.model[k])]
    assert len(moved) > arrays // 2
    assert all(a.dtype == np.float32 and np.isfinite(a).all() for a in ckpt.model.values())
    report = (folder / "report.md").read_text()
    assert "| generated | classifier, tagger | int8 + error feedback | float16 |" in report
    nodes = sorted((folder / "node-state").glob("partition-*/generated/*/round_*.safetensors"))
    assert {p.parent.name for p in nodes} == {"local", "residual"}

    # Act: a copy "interrupted" after round 1, resumed in a fresh simulation (empty
    # Context.state: the generator, audio projection and residuals come from the node files)
    resumed = tmp_path / "runs" / "resumed"
    shutil.copytree(folder, resumed)
    (checkpoint_dir(resumed, "generated") / "round_0002.safetensors").unlink()
    RunLog(resumed).truncate("generated", 1)
    run_federated(cfg, [], "", resume=resumed)
    # Assert: the same round 2, bit for bit
    redo = load_checkpoint(checkpoint_dir(resumed, "generated") / "round_0002.safetensors")
    for key, value in ckpt.model.items():
        np.testing.assert_array_equal(redo.model[key], value, err_msg=key)
    # every line equal to the uninterrupted run's (round 1 kept, round 2 rerun the same)
    assert_resumed_log(RunLog(resumed).read(), lines, ("generated", 2),
                       len("resumed") - len("compressed"))
