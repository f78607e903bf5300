"""Node-local state that must survive a resume: non-shared model parts and the codec residual.

A node keeps two things between rounds that never leave it: the trained model parts it does not
share (``federation.shared_prefixes`` leaving a trained part out: personalised parts) and the
error-feedback residual of update compression. Flower's ``Context.state`` holds them across the
rounds of one run, but ``--resume`` starts a new run (new process, new node ids, empty
``Context.state``), which would restart them from their initial values while the global model
continues from its checkpoint.

So a node also writes them to its own disk after each round it trains, as
``<dir>/<method>/<kind>/round_NNNN.safetensors`` (the checkpoint format of
`fedvida.federation.checkpoints`), and when ``Context.state`` lacks them it loads the newest file
of a round *before* the one it is asked to train (a file of a round the resumed run will redo is
ignored). ``<dir>`` is ``<data-dir>/node-state/<run name>/partition-<k>`` when the node config
has a ``data-dir`` (deployment), else ``runs/<name>/node-state/partition-<k>`` (simulation, where
every node shares the run folder's disk). The newest ``federation.keep_checkpoints + 1`` rounds
are kept per node: the server's newest checkpoint lags the clients by at most two rounds (its
evaluation and checkpoint overlap the next round), so this covers a resume from the newest
checkpoint or an older one when the newest is damaged. After the run's last round only that
round and the one before it stay (about 2 x 5 MB per node for the demo's residuals).
``federation.node_state: false`` keeps them in memory only (e.g. thousands of virtual clients
with error feedback: ~20 MB of files per client during a run).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fedvida.config import Config
from fedvida.errors import InputError
from fedvida.federation.checkpoints import list_checkpoints, load_checkpoint, save_checkpoint
from fedvida.federation.run_config import run_dir

_log = logging.getLogger("fedvida.nodestate")
LOCAL = "local"  # model parts that are not shared
RESIDUAL = "residual"  # error feedback of update compression


def state_dir(cfg: Config, node_config: Mapping[str, Any], partition: int) -> Path:
    """The folder of one node's persisted state for the run ``cfg`` describes."""
    data_dir = node_config.get("data-dir")
    if data_dir:
        return Path(str(data_dir)) / "node-state" / cfg.name / f"partition-{partition}"
    return run_dir(cfg) / "node-state" / f"partition-{partition}"


def save_state(cfg: Config, node_config: Mapping[str, Any], partition: int, method: str,
               kind: str, server_round: int, arrays: Mapping[str, np.ndarray]) -> Path | None:
    """Write the node's ``kind`` state of ``method`` after ``server_round`` (atomic; older
    rounds pruned).

    Nothing is written (None) when ``federation.node_state`` is off.
    """
    if not cfg.federation.node_state:
        return None
    folder = state_dir(cfg, node_config, partition) / method / kind
    last = server_round >= cfg.federation.rounds  # only a redo of the last round is left
    keep = 2 if last else cfg.federation.keep_checkpoints + 1
    return save_checkpoint(folder, server_round, method, kind, dict(arrays), {}, keep)


def load_state(cfg: Config, node_config: Mapping[str, Any], partition: int, method: str,
               kind: str, before_round: int) -> dict[str, np.ndarray] | None:
    """The newest readable ``kind`` state of ``method`` of a round before ``before_round`` (None
    if none, or when ``federation.node_state`` is off)."""
    if not cfg.federation.node_state:
        return None
    folder = state_dir(cfg, node_config, partition) / method / kind
    files = list_checkpoints(folder)
    for path in reversed(files):
        try:
            ckpt = load_checkpoint(path)
        except InputError:
            continue
        if ckpt.server_round < before_round:
            return ckpt.model
    if files:  # only rounds the run will redo, or damaged: the state restarts from scratch
        _log.warning("partition %s: no readable %s state before round %s in %s; it restarts "
                     "from its initial value", partition, kind, before_round, folder)
    return None
