"""Client side of a round: read the records, train or evaluate locally, reply with records.

Everything a ClientApp does lives here so that `clients/client_app.py` stays a thin adapter. A
client reads its cached features (never the raw videos), verifies the semantic dictionary against
the digest the server announces, trains the shared model parts with the chosen method and replies
with the shared arrays and numeric metrics only. Model parts that are not shared (partial
sharing) stay on the node, in its Flower ``Context.state``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message

from fedvida.config import Config
from fedvida.federation import records as R
from fedvida.federation.settings import config_from_yaml, localize, partition_of

if TYPE_CHECKING:
    from fedvida.data.partition import Plan
    from fedvida.features.cache import FeatureSet
    from fedvida.semantics.dictionary import SemanticDictionary

LOCAL_STATE_KEY = "fedvida-local"
Handler = Callable[[Message, Context], Message]
_log = logging.getLogger("fedvida.client")
FEATURE_CACHE_SIZE = 4  # partitions kept in memory per process (1000 clients never all at once)

_LOCK = threading.Lock()
_FEATURES: OrderedDict[tuple[str, ...], tuple[Plan, FeatureSet]] = OrderedDict()


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
    with _LOCK:
        if key in _FEATURES:
            _FEATURES.move_to_end(key)
            return _FEATURES[key]
    plan = Plan.load(plan_path)
    data = load_features(cfg, plan, partition)
    with _LOCK:
        _FEATURES[key] = (plan, data)
        while len(_FEATURES) > FEATURE_CACHE_SIZE:
            _FEATURES.popitem(last=False)
    return plan, data


def dictionary_for(cfg: Config, digest: str) -> SemanticDictionary | None:
    """The dictionary, verified against the server's digest (``""``: the run uses none)."""
    if not digest:
        return None
    from fedvida.semantics.dictionary import SemanticDictionary

    return SemanticDictionary.load(Path(cfg.dictionary.out), expected_digest=digest)


def _setup(msg: Message, context: Context) -> tuple[Config, ConfigRecord, int]:
    conf = msg.content.config_records[R.CONFIG_KEY]
    cfg = localize(config_from_yaml(str(conf[R.CFG_YAML])), context.node_config)
    cfg.train.method = str(conf[R.CFG_METHOD])  # type: ignore[assignment]
    import torch

    threads = max(1, int(cfg.federation.num_cpus_per_client))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return cfg, conf, partition_of(context.node_config)


def _model(cfg: Config, plan: Plan, data: FeatureSet, incoming: ArrayRecord) -> Any:
    from fedvida.models.container import FeatureDims, build_model, load_state

    model = build_model(cfg, FeatureDims.from_features(data, len(plan.classes)))
    load_state(model, R.arrays_to_state(incoming))
    return model


def train(msg: Message, context: Context) -> Message:
    """Handle a train message: local training from the global arrays, reply with the update."""
    from fedvida.models.container import load_state, select_state
    from fedvida.training.local import train_local

    start = time.perf_counter()
    cfg, conf, partition = _setup(msg, context)
    plan, data = local_features(cfg, partition)
    dictionary = dictionary_for(cfg, str(conf.get(R.CFG_DIGEST, "")))
    incoming = msg.content.array_records[R.ARRAYS_KEY]
    model = _model(cfg, plan, data, incoming)
    if LOCAL_STATE_KEY in context.state.array_records:  # parts that never leave this node
        load_state(model, R.arrays_to_state(context.state.array_records[LOCAL_STATE_KEY]))
    mu = float(conf.get(R.CFG_PROX, 0.0))  # type: ignore[arg-type]
    cfg.federation.proximal_mu = mu
    proximal = R.arrays_to_state(incoming) if mu > 0 else None
    server_round = int(conf[R.CFG_ROUND])  # type: ignore[arg-type]
    fit_start = time.perf_counter()
    metrics = train_local(
        model, data, cfg, dictionary, epochs=int(conf[R.CFG_EPOCHS]),  # type: ignore[arg-type]
        seed=client_seed(cfg.train.seed, server_round, partition), proximal_to=proximal,
    )
    fit_seconds = time.perf_counter() - fit_start
    shared = select_state(model, cfg.federation.shared_prefixes)
    local = {k: v for k, v in model.state_dict().items() if k not in shared}
    if local:
        context.state[LOCAL_STATE_KEY] = R.state_to_arrays(local)
    metrics = {**metrics, R.WEIGHT_KEY: int(metrics.get(R.WEIGHT_KEY, len(data.labels))),
               "partition-id": partition, "fit-seconds": fit_seconds,
               "client-seconds": time.perf_counter() - start}
    return Message(R.reply(R.state_to_arrays(shared), metrics), reply_to=msg)


def evaluate(msg: Message, context: Context) -> Message:
    """Handle an evaluate message: the global model on this client's local data."""
    from fedvida.training.local import evaluate as evaluate_local

    cfg, conf, partition = _setup(msg, context)
    plan, data = local_features(cfg, partition)
    dictionary = dictionary_for(cfg, str(conf.get(R.CFG_DIGEST, "")))
    model = _model(cfg, plan, data, msg.content.array_records[R.ARRAYS_KEY])
    metrics = evaluate_local(model, data, cfg, dictionary)
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
