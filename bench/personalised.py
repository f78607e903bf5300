"""Personalised test accuracy of a partial-sharing simulation run (offline, from its folder).

Usage::

    python bench/personalised.py runs/NAME [METHOD]

Under partial sharing (``federation.shared_prefixes`` without some parts) the server evaluates
its global model with the non-shared parts at their initial values, which says little about the
clients' own models. This script rebuilds each client k's model from the final global checkpoint
(shared parts) plus the client's own non-shared parts from ``runs/<name>/node-state/
partition-k/<method>/local/`` (written by the client after each round), evaluates it on the
plan's test split and prints mean / min / max top-1 and macro-F1 over the clients. It only works
for simulations, where every node's files are on this machine; a deployment keeps them on each
node. For a run without node state (everything shared) every client's model is the global one.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from fedvida.config import load_config
from fedvida.federation.checkpoints import checkpoint_dir, latest_checkpoint
from fedvida.federation.loaders import dictionary_for, local_features
from fedvida.federation.nodestate import LOCAL, load_state
from fedvida.federation.server import dictionary_digest
from fedvida.models.container import FeatureDims, build_model
from fedvida.models.container import load_state as load_model_state
from fedvida.training.local import evaluate


def _tensors(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.array(v)) for k, v in arrays.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a simulation run folder (runs/NAME)")
    parser.add_argument("method", nargs="?", default="generated")
    args = parser.parse_args()
    run: Path = args.run
    cfg = load_config(run / "config.yaml")
    cfg.name, cfg.train.runs_dir = run.name, run.parent
    plan, test = local_features(cfg, "test")
    dims = FeatureDims.from_features(test, len(plan.classes))
    dictionary = dictionary_for(cfg, dictionary_digest(cfg))
    ckpt = latest_checkpoint(checkpoint_dir(run, args.method))
    if ckpt is None:
        raise SystemExit(f"{run}: no checkpoint for method {args.method}")
    tops, f1s, with_local = [], [], 0
    for k in range(plan.num_clients):
        model = build_model(cfg, dims)
        load_model_state(model, _tensors(ckpt.model))
        local = load_state(cfg, {}, k, args.method, LOCAL, ckpt.server_round + 1)
        if local:
            load_model_state(model, _tensors(local))
            with_local += 1
        metrics = evaluate(model, test, cfg, dictionary, method=args.method)
        tops.append(metrics["top1"])
        f1s.append(metrics["macro_f1"])
    print(f"{run.name} ({args.method}): round {ckpt.server_round}, personalised top1 mean "
          f"{np.mean(tops):.3f} min {np.min(tops):.3f} max {np.max(tops):.3f}, macro_f1 mean "
          f"{np.mean(f1s):.3f}; clients with local parts: {with_local}/{plan.num_clients}")


if __name__ == "__main__":
    main()
