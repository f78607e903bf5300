"""Client side of a round: read the records, train or evaluate locally, reply with records.

Everything a ClientApp does lives here so that `clients/client_app.py` stays a thin adapter. A
client reads its cached features (never the raw videos), verifies the semantic dictionary against
the digest the server announces, trains the shared model parts with the chosen method and replies
with the shared arrays and numeric metrics only. Model parts that are not shared (partial
sharing) stay on the node, in its Flower ``Context.state``.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from flwr.app import ConfigRecord, Context, Message

from fedvida.config import Config
from fedvida.federation import records as R
from fedvida.federation.privacy import CENTRAL_MODES, DP_WEIGHT_KEY
from fedvida.federation.settings import (
    LOCALIZED_KEYS,
    config_from_yaml,
    localize,
    partition_of,
)

if TYPE_CHECKING:
    from fedvida.data.partition import Plan
    from fedvida.features.cache import FeatureSet
    from fedvida.semantics.dictionary import SemanticDictionary

LOCAL_STATE_KEY = "fedvida-local"
Handler = Callable[[Message, Context], Message]
_log = logging.getLogger("fedvida.client")
FEATURE_CACHE_SIZE = 12  # partitions kept per process (~16 MB each on the demo; bounded for 1000)

CONFIG_CACHE_SIZE = 8  # parsed instruction configs kept per process
MODEL_CACHE_SIZE = 2  # model skeletons kept per process (one per config and feature dims)


class _Lru:
    """A small thread-safe least-recently-used map (per-process caches of a Ray actor)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        """The value (marked as just used), or None."""
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def pop(self, key: Any) -> Any:
        """Take the value out of the cache (None when absent)."""
        with self._lock:
            return self._items.pop(key, None)

    def put(self, key: Any, value: Any) -> None:
        """Store the value, dropping the least recently used beyond `size`."""
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


_FEATURES = _Lru(FEATURE_CACHE_SIZE)  # (plan, cache, partition) -> (Plan, FeatureSet)
_PLANS = _Lru(1)  # (plan file, mtime) -> Plan: a 1000-client plan is slow to parse
_CONFIGS = _Lru(CONFIG_CACHE_SIZE)  # instruction -> Config
_MODELS = _Lru(MODEL_CACHE_SIZE)  # (config id, dims) -> (config ref, model, initial state)
_SPLITS = _Lru(FEATURE_CACHE_SIZE)  # (FeatureSet id, split settings) -> (ref, train, val)


def client_seed(seed: int, server_round: int, partition: int) -> int:
    """The local-training seed of one client in one round, derived from (seed, round, client)."""
    return int(np.random.SeedSequence([seed, server_round, partition]).generate_state(1)[0])


def local_features(cfg: Config, partition: int | str) -> tuple[Plan, FeatureSet]:
    """The plan and one partition's cached features, memoised per process (a small LRU).

    Features are read only from the cache written by ``fedvida extract``; a process keeps the
    last few partitions it served (Ray actors serve many virtual clients in turn).
    """
    from fedvida.data.partition import Plan
    from fedvida.features.cache import load_features

    plan_path = Path(cfg.partition.plan)
    stamp = str(plan_path.stat().st_mtime_ns) if plan_path.is_file() else "missing"
    key = (str(plan_path.resolve()), stamp, str(Path(cfg.extract.cache_dir).resolve()),
           cfg.section_hash("extract", "partition"), str(partition))
    cached = _FEATURES.get(key)
    if cached is not None:
        return cast("tuple[Plan, FeatureSet]", cached)
    plan = _PLANS.get(key[:2])
    if plan is None:  # one plan per (file, mtime): a 1000-client plan is slow to parse
        plan = Plan.load(plan_path)
        _PLANS.put(key[:2], plan)
    data = load_features(cfg, plan, partition)
    _FEATURES.put(key, (plan, data))
    return plan, data


def train_and_validation(cfg: Config, partition: int) -> tuple[Plan, FeatureSet, FeatureSet]:
    """A client's training clips split into (train, validation), as the centralised reference
    splits them (`fedvida.training.data.split_validation`, seeded by ``partition.seed``)."""
    from fedvida.training.data import split_validation

    plan, data = local_features(cfg, partition)
    key = ("split", id(data), cfg.train.val_fraction, cfg.partition.seed)
    cached = _SPLITS.get(key)
    if cached is None or cached[0]() is not data:
        train, val = split_validation(data, cfg.train.val_fraction, cfg.partition.seed,
                                      partition)
        cached = (weakref.ref(data), train, val)
        _SPLITS.put(key, cached)
    return plan, cached[1], cached[2]


def dictionary_for(cfg: Config, digest: str) -> SemanticDictionary | None:
    """The dictionary, verified against the server's digest (``""``: the run uses none)."""
    if not digest:
        return None
    from fedvida.semantics.dictionary import SemanticDictionary

    return SemanticDictionary.load(Path(cfg.dictionary.out), expected_digest=digest)


def _setup(msg: Message, context: Context) -> tuple[Config, ConfigRecord, int]:
    conf = msg.content.config_records[R.CONFIG_KEY]
    cfg = instruction_config(conf, context.node_config)
    import torch

    threads = max(1, int(cfg.federation.num_cpus_per_client))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return cfg, conf, partition_of(context.node_config)


def instruction_config(conf: ConfigRecord, node_config: Mapping[str, Any]) -> Config:
    """The config an instruction describes, localized to this node; memoised per process.

    The server sends the same YAML in every message of a run, so a Ray actor serving many
    virtual clients parses and validates it once. The key is the YAML's SHA-256,
    ``proximal-mu`` and the node config entries that `localize` reads (not ``partition-id``:
    keyed by it, an actor serving more virtual clients than the cache holds re-parsed the YAML,
    ~20 ms, for every message); callers must treat the returned config as read-only.
    """
    text = str(conf[R.CFG_YAML])
    mu = float(conf.get(R.CFG_PROX, 0.0))  # type: ignore[arg-type]
    paths = sorted((k, repr(node_config[k])) for k in LOCALIZED_KEYS if k in node_config)
    key = (hashlib.sha256(text.encode()).hexdigest(), repr(mu), repr(paths))
    cached = _CONFIGS.get(key)
    if cached is not None:
        return cast(Config, cached)
    cfg = localize(config_from_yaml(text), node_config)
    cfg.federation.proximal_mu = mu
    _CONFIGS.put(key, cfg)
    return cfg


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


def train(msg: Message, context: Context) -> Message:
    """Handle a train message: local training from the global arrays, reply with the update."""
    import torch

    from fedvida.federation import nodestate
    from fedvida.models.container import PREFIXES, load_state, select_state
    from fedvida.training.local import train_local

    start = time.perf_counter()
    cfg, conf, partition = _setup(msg, context)
    method = str(conf[R.CFG_METHOD])
    plan, data, val = train_and_validation(cfg, partition)
    dictionary = dictionary_for(cfg, str(conf.get(R.CFG_DIGEST, "")))
    incoming = R.arrays_to_state(msg.content.array_records[R.ARRAYS_KEY])
    model, entry = _model(cfg, plan, data, incoming)
    server_round = int(conf[R.CFG_ROUND])  # type: ignore[arg-type]
    # parts that never leave this node, per method: from Context.state, or after a resume
    # (new run, empty state) from the node's own files (fedvida.federation.nodestate)
    local_key = f"{LOCAL_STATE_KEY}:{method}"
    kept = context.state.array_records.get(local_key)
    partial = not set(PREFIXES) <= set(cfg.federation.shared_prefixes)
    local_in = (R.arrays_to_numpy(kept) if kept is not None else nodestate.load_state(
        cfg, context.node_config, partition, method, nodestate.LOCAL, server_round)
        if partial else None)
    if local_in:
        load_state(model, {k: torch.from_numpy(np.array(v)) for k, v in local_in.items()})
    val_metrics: dict[str, float] = {}
    if len(val):  # the global model on this client's validation clips, before local training
        from fedvida.training.local import validation_top1

        val_metrics = {"val_top1": validation_top1(model, val, cfg, dictionary, method),
                       "val-examples": float(len(val))}
    mu = cfg.federation.proximal_mu
    proximal = incoming if mu > 0 else None  # load_state copied it: still the global weights
    fit_start = time.perf_counter()
    metrics = train_local(
        model, data, cfg, dictionary, method=method,
        epochs=int(conf[R.CFG_EPOCHS]),  # type: ignore[arg-type]
        seed=client_seed(cfg.train.seed, server_round, partition), proximal_to=proximal,
    )
    fit_seconds = time.perf_counter() - fit_start
    shared = select_state(model, cfg.federation.shared_prefixes)
    local = {k: v for k, v in model.state_dict().items() if k not in shared}
    if local:
        context.state[local_key] = R.state_to_arrays(local)
        nodestate.save_state(cfg, context.node_config, partition, method, nodestate.LOCAL,
                             server_round,
                             {k: v.detach().cpu().numpy() for k, v in local.items()})
    _release(entry)
    metrics = {**metrics, **val_metrics,
               R.WEIGHT_KEY: int(metrics.get(R.WEIGHT_KEY, len(data.labels))),
               "partition-id": partition, "fit-seconds": fit_seconds,
               "client-seconds": time.perf_counter() - start}
    if cfg.privacy.dp.mode in CENTRAL_MODES:  # central DP averages clipped updates uniformly
        metrics[DP_WEIGHT_KEY] = 1
    return Message(R.reply(R.state_to_arrays(shared), metrics), reply_to=msg)


def evaluate(msg: Message, context: Context) -> Message:
    """Handle an evaluate message: the global model on this client's local data.

    Under partial sharing the model evaluated is this node's own: the global shared parts with
    the parts it keeps (as trained in its last round), not their initial values.
    """
    from fedvida.models.container import load_state
    from fedvida.training.local import evaluate as evaluate_local

    cfg, conf, partition = _setup(msg, context)
    plan, data = local_features(cfg, partition)
    dictionary = dictionary_for(cfg, str(conf.get(R.CFG_DIGEST, "")))
    incoming = R.arrays_to_state(msg.content.array_records[R.ARRAYS_KEY])
    model, entry = _model(cfg, plan, data, incoming)
    method = str(conf[R.CFG_METHOD])
    kept = context.state.array_records.get(f"{LOCAL_STATE_KEY}:{method}")
    if kept is not None:
        load_state(model, R.arrays_to_state(kept))
    metrics = evaluate_local(model, data, cfg, dictionary, method=method)
    _release(entry)
    metrics = {**metrics, R.WEIGHT_KEY: int(len(data.labels)), "partition-id": partition}
    return Message(R.reply(None, metrics), reply_to=msg)


def identify(msg: Message, context: Context) -> Message:
    """Handle a query message: say which plan partition this node holds (no data involved)."""
    return Message(R.reply(None, {"partition-id": partition_of(context.node_config)}),
                   reply_to=msg)


class ClientFailure(RuntimeError):
    """What a failing client reports to the server: the error type and a path-free message."""


def guarded(handler: Handler) -> Handler:
    """Wrap a handler so that a failure leaves the node as a one-line, path-free reason.

    The full error is logged on the node; the server records the short reason and the round goes
    on without this client.
    """

    def run(msg: Message, context: Context) -> Message:
        try:
            return handler(msg, context)
        except Exception as exc:
            _log.error("client %s failed: %s", context.node_config.get("partition-id"), exc)
            reason = R.sanitize_reason(f"{type(exc).__name__}: {exc}")
            raise ClientFailure(reason) from None

    run.__name__ = handler.__name__
    run.__doc__ = handler.__doc__
    return run
