"""A node's work in one round, in plain Python: no Flower types, no flwr import.

``clients/client_app.py`` (the Flower ClientApp) reads a message's records into plain values,
calls `train` or `evaluate` here and builds the reply from the result, as Flower's quickstarts
do with their ``task.py``. A node reads its cached features (never the raw videos), verifies the
semantic dictionary against the digest the server announces, trains the method's shared model
parts and returns them with numeric metrics. Trained parts that are not shared (partial sharing)
come back separately: the app keeps them in the node's ``Context.state`` and this module also
keeps them in the node's files (`fedvida.federation.nodestate`), so that a resume continues them.
A test imports this module with flwr blocked.
"""

from __future__ import annotations

import hashlib
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from fedvida.config import CENTRAL_DP_MODES, Config
from fedvida.federation import keys as K
from fedvida.federation.loaders import (
    Lru,
    dictionary_for,
    local_features,
    train_and_validation,
)
from fedvida.federation.run_config import LOCALIZED_KEYS, config_from_yaml, localize

if TYPE_CHECKING:
    from fedvida.data.partition import Plan
    from fedvida.features.cache import FeatureSet

CONFIG_CACHE_SIZE = 8  # parsed instruction configs kept per process
MODEL_CACHE_SIZE = 2  # model skeletons kept per process (one per config and feature dims)

_CONFIGS = Lru(CONFIG_CACHE_SIZE)  # instruction -> Config
_MODELS = Lru(MODEL_CACHE_SIZE)  # (config id, dims) -> (config ref, model, initial state)

Arrays = dict[str, np.ndarray]


class ClientFailure(RuntimeError):
    """What a failing client reports to the server: the error type and a path-free message."""


@dataclass
class TrainResult:
    """What one round of local training produced.

    Attributes
    ----------
    shared
        The method's shared parts after training (float32 arrays keyed like the model's
        ``state_dict``): the update that leaves the node.
    local
        Trained parts that are not shared (empty unless ``federation.shared_prefixes`` leaves a
        trained part out): they stay on the node.
    metrics
        Numbers only: the training losses of `fedvida.training.local.train_local`,
        ``val_top1`` / ``val-examples`` of the received model, ``num-examples`` (the FedAvg
        weight), ``partition-id``, ``fit-seconds`` and ``client-seconds`` (wall seconds), and
        ``dp-weight`` under central DP.
    """

    shared: Arrays
    local: Arrays = field(default_factory=dict)
    metrics: dict[str, float | int] = field(default_factory=dict)


def client_seed(seed: int, server_round: int, partition: int) -> int:
    """The local-training seed of one client in one round, derived from (seed, round, client)."""
    return int(np.random.SeedSequence([seed, server_round, partition]).generate_state(1)[0])


def instruction_config(conf: Mapping[str, Any], node_config: Mapping[str, Any]) -> Config:
    """The config an instruction describes, localized to this node; memoised per process.

    Parameters
    ----------
    conf
        The instruction's config entries (a Flower ``ConfigRecord`` or any mapping):
        ``fedvida-config`` (the server's resolved YAML).
    node_config
        The node's config; the entries `fedvida.federation.run_config.localize` reads point the
        config at the node's own plan, feature cache and dictionary.

    The server sends the same YAML in every message of a run, so a Ray actor serving many
    virtual clients parses and validates it once. The key is the YAML's SHA-256 and the node
    config entries that `localize` reads (not ``partition-id``:
    keyed by it, an actor serving more virtual clients than the cache holds re-parsed the YAML,
    ~20 ms, for every message); callers must treat the returned config as read-only.

    Raises
    ------
    ConfigError
        The YAML is not a valid fedvida config.
    """
    text = str(conf[K.CFG_YAML])
    paths = sorted((k, repr(node_config[k])) for k in LOCALIZED_KEYS if k in node_config)
    key = (hashlib.sha256(text.encode()).hexdigest(), repr(paths))
    cached = _CONFIGS.get(key)
    if cached is not None:
        return cast(Config, cached)
    cfg = localize(config_from_yaml(text), node_config)
    _CONFIGS.put(key, cfg)
    return cfg


def use_threads(cfg: Config) -> None:
    """Set torch's intra-op threads to ``federation.num_cpus_per_client`` (at least 1)."""
    import torch

    threads = max(1, int(cfg.federation.num_cpus_per_client))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def _model(cfg: Config, plan: Plan, data: FeatureSet, incoming: dict[str, Any]) -> Any:
    """A model holding the initial weights of ``cfg`` overwritten by ``incoming``.

    Building the container costs more than copying weights, so a process keeps one model per
    (config, feature dims) between messages (taken out of the cache while in use): every
    parameter and buffer not in ``incoming`` is reset to its seeded initial value, so the result
    equals ``build_model`` followed by ``load_state(incoming)``.
    """
    from fedvida.models.container import FeatureDims, build_model, load_state

    dims = FeatureDims.from_features(data, len(plan.classes))
    key = (id(cfg), dims)
    cached = _MODELS.pop(key)
    if cached is None or cached[0]() is not cfg:
        model = build_model(cfg, dims)
        initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    else:
        _, model, initial = cached
        load_state(model, {k: v for k, v in initial.items() if k not in incoming})
    load_state(model, incoming)
    return model, (key, weakref.ref(cfg), model, initial)


def _release(entry: tuple[Any, ...]) -> None:
    """Put a model taken by `_model` back into the per-process cache."""
    key, *value = entry
    _MODELS.put(key, tuple(value))


def _tensors(arrays: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """numpy arrays -> torch tensors (sharing memory; read-only arrays are copied first)."""
    import torch

    return {k: torch.from_numpy(v if v.flags.writeable else np.array(v))
            for k, v in arrays.items()}


def train(cfg: Config, partition: int, method: str, *, server_round: int, epochs: int,
          digest: str, incoming: Mapping[str, np.ndarray],
          kept: Mapping[str, np.ndarray] | None = None,
          node_config: Mapping[str, Any] | None = None,
          proximal_mu: float = 0.0) -> TrainResult:
    """Local training of one round, from the global arrays.

    Parameters
    ----------
    cfg
        The instruction's config (`instruction_config`): model and training settings.
    partition
        The plan partition this node holds.
    method
        The method to train (`fedvida.training.methods.METHOD_SPECS`).
    server_round
        The round (1-based): seeds local training with (``train.seed``, round, partition).
    epochs
        Local epochs.
    digest
        The dictionary digest the server announced (``""``: the run uses none).
    incoming
        The global shared arrays (keys of the model's ``state_dict``).
    kept
        This node's trained parts that are not shared, as it left them after its last round
        (None: not in memory; they are then read from the node's files on a resume).
    node_config
        The node's config (where its files live, `fedvida.federation.nodestate`).
    proximal_mu
        FedProx's mu as the server's strategy sent it (``proximal-mu``; 0: plain local
        training). Only the strategy decides it: ``federation.proximal_mu`` of the config
        applies when ``federation.strategy`` is ``fedprox``, which then sends it.

    Returns
    -------
    TrainResult

    Raises
    ------
    InputError, ConfigError, ModelStateError
        Missing or mismatched cache, plan or dictionary; arrays that do not fit the model.
    """
    from fedvida.federation import nodestate
    from fedvida.models.container import load_state, select_state
    from fedvida.training.local import train_local
    from fedvida.training.methods import get_method, shared_parts

    start = time.perf_counter()
    node_config = node_config or {}
    use_threads(cfg)
    plan, data, val = train_and_validation(cfg, partition)
    dictionary = dictionary_for(cfg, digest)
    incoming_t = _tensors(incoming)
    model, entry = _model(cfg, plan, data, incoming_t)
    # trained parts that never leave this node, per method: from Context.state, or after a
    # resume (new run, empty state) from the node's own files (fedvida.federation.nodestate)
    shared_prefixes = shared_parts(cfg, method)
    local_prefixes = [p for p in get_method(method).trains if p not in shared_prefixes]
    local_in = (dict(kept) if kept is not None else nodestate.load_state(
        cfg, node_config, partition, method, nodestate.LOCAL, server_round)
        if local_prefixes else None)
    if local_in:
        load_state(model, _tensors(local_in))
    val_metrics: dict[str, float] = {}
    if len(val):  # the global model on this client's validation clips, before local training
        from fedvida.training.local import validation_metrics

        val_metrics = validation_metrics(model, val, cfg, dictionary, method)
    # FedProx: the global weights (load_state copied them); train_local's mu is the config's,
    # the value a fedprox strategy sends
    proximal = incoming_t if proximal_mu > 0 else None
    fit_start = time.perf_counter()
    metrics = train_local(
        model, data, cfg, dictionary, method=method, epochs=epochs,
        seed=client_seed(cfg.train.seed, server_round, partition), proximal_to=proximal,
    )
    fit_seconds = time.perf_counter() - fit_start
    shared = select_state(model, shared_prefixes)
    local = select_state(model, local_prefixes) if local_prefixes else {}
    local_np = {k: v.detach().cpu().numpy() for k, v in local.items()}
    if local_np:
        nodestate.save_state(cfg, node_config, partition, method, nodestate.LOCAL, server_round,
                             local_np)
    _release(entry)
    out: dict[str, float | int] = {
        **metrics, **val_metrics,
        K.WEIGHT_KEY: int(metrics.get(K.WEIGHT_KEY, len(data.labels))),
        K.PARTITION_KEY: partition, "fit-seconds": fit_seconds,
        "client-seconds": time.perf_counter() - start}
    if cfg.privacy.dp.mode in CENTRAL_DP_MODES:  # central DP averages clipped updates uniformly
        out[K.DP_WEIGHT_KEY] = 1
    return TrainResult({k: v.contiguous().numpy() for k, v in shared.items()}, local_np, out)


def evaluate(cfg: Config, partition: int, method: str, *, digest: str,
             incoming: Mapping[str, np.ndarray], kept: Mapping[str, np.ndarray] | None = None,
             validate_only: bool = False, node_config: Mapping[str, Any] | None = None,
             server_round: int | None = None) -> dict[str, float | int]:
    """The global model on this node's local data.

    Under partial sharing the model evaluated is this node's own: the global shared parts with
    the trained parts it keeps (``kept``, as trained in its last round), not their initial
    values. Without ``kept`` (a resumed run in which this node has not trained yet: empty
    ``Context.state``) they come from the node's files, the newest of a round up to
    ``server_round`` (any round when None), as `train` loads them. ``validate_only`` (the
    server choosing a round, ``federation.select_round``): only ``val_top1`` on this node's
    validation split, weighted by its clips (none without clips).

    Returns
    -------
    dict
        `fedvida.training.local.evaluate`'s metrics (or ``val_top1``), ``num-examples`` and
        ``partition-id``.
    """
    from fedvida.federation import nodestate
    from fedvida.models.container import load_state
    from fedvida.training.local import evaluate as evaluate_local
    from fedvida.training.local import validation_metrics
    from fedvida.training.methods import get_method, shared_parts

    use_threads(cfg)
    if kept is None:
        shared_prefixes = shared_parts(cfg, method)
        if any(p not in shared_prefixes for p in get_method(method).trains):
            before = server_round + 1 if server_round is not None else 2**31
            kept = nodestate.load_state(cfg, node_config or {}, partition, method,
                                        nodestate.LOCAL, before)
    plan, data = local_features(cfg, partition)
    if validate_only:
        plan, _, data = train_and_validation(cfg, partition)
    dictionary = dictionary_for(cfg, digest)
    model, entry = _model(cfg, plan, data, _tensors(incoming))
    if kept is not None:
        load_state(model, _tensors(kept))
    if validate_only:
        metrics: dict[str, float] = (validation_metrics(model, data, cfg, dictionary, method)
                                     if len(data) else {})
    else:
        metrics = evaluate_local(model, data, cfg, dictionary, method=method)
    _release(entry)
    return {**metrics, K.WEIGHT_KEY: int(len(data.labels)), K.PARTITION_KEY: partition}
