"""Flower's FedAvg / FedProx / FedAdam with what a reproducible, metered study needs.

The aggregation itself is Flower's (``flwr.serverapp.strategy``); the mixin adds:

* **seeded client sampling**: the clients of round r are drawn from the plan's partition ids with
  ``numpy.random.default_rng([seed, r])``, not from Flower's node ids (random per run), so a
  resumed run samples exactly the clients the uninterrupted run would have; a fixed-size sample
  or Poisson sampling (each client independently with probability q, the sampling the DP
  amplification bounds assume: ``federation.sampling``);
* **fixed denominator**: under Poisson sampling with central DP the clipped updates are summed
  and divided by the expected number of clients ``q n``, not by the number that came (DP-FedAvg,
  McMahan et al. 2018), so one client changes the aggregate by at most ``C / (q n)``;
* **ordered aggregation**: replies are sorted by partition id before averaging (floating-point
  sums in a fixed order, identical results);
* **tolerant replies**: a reply whose arrays do not match the broadcast keys is dropped and
  recorded instead of aborting the round; metric keys may differ between clients (a client with
  no audio reports fewer losses) and are averaged per key, weighted by ``num-examples``;
* **state for checkpoints**: FedAdam's moments are saved and restored with the global model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAdam, FedAvg, FedProx

from fedvida.config import Config
from fedvida.federation.flower_compat import ReplyCheckHook, configure_for_nodes
from fedvida.federation.privacy import DP_WEIGHT_KEY
from fedvida.federation.records import ARRAYS_KEY, CONFIG_KEY, WEIGHT_KEY


def sample_partitions(
    partitions: Iterable[int], fraction: float, minimum: int, seed: int, server_round: int,
    method: str = "fixed",
) -> list[int]:
    """The partitions that train in a round, seeded.

    ``fixed``: ``max(int(n * fraction), minimum)`` of them. ``poisson``: each partition joins
    independently with probability ``fraction`` (``minimum`` is ignored; the sample may be empty).

    Parameters
    ----------
    partitions
        Partition ids of the connected clients.
    fraction, minimum
        Share of clients per round (Poisson: the probability q), and the least number (fixed
        only; capped at the number available).
    seed, server_round
        The draw depends on these only.
    method
        ``"fixed"`` or ``"poisson"``.

    Returns
    -------
    list[int]
        Sorted partition ids.
    """
    pool = sorted(set(partitions))
    if method == "poisson":
        draws = np.random.default_rng([seed, server_round]).random(len(pool))
        return [int(p) for p, u in zip(pool, draws, strict=True) if u < fraction]
    k = min(len(pool), max(int(len(pool) * fraction), minimum))
    rng = np.random.default_rng([seed, server_round])
    return sorted(int(p) for p in rng.choice(pool, size=k, replace=False))


# metric keys that identify a client rather than measure it: kept per client (the round line's
# ``clients``), never averaged (a mean partition id of 0.26 means nothing)
IDENTIFIER_KEYS = ("partition-id",)


def weighted_metrics(records: list[RecordDict], weight_key: str = WEIGHT_KEY) -> MetricRecord:
    """Average every numeric metric over the replies that report it, weighted by ``weight_key``.

    Weights and identifiers (`IDENTIFIER_KEYS`) are not averaged.
    """
    sums: dict[str, float] = {}
    weights: dict[str, float] = {}
    for content in records:
        metrics = next(iter(content.metric_records.values()))
        w = float(metrics.get(weight_key, 1.0))  # type: ignore[arg-type]
        for key, value in metrics.items():
            if key in (weight_key, WEIGHT_KEY, DP_WEIGHT_KEY, *IDENTIFIER_KEYS) \
                    or not isinstance(value, int | float):
                continue
            sums[key] = sums.get(key, 0.0) + w * float(value)
            weights[key] = weights.get(key, 0.0) + w
    return MetricRecord({k: sums[k] / weights[k] for k in sorted(sums) if weights[k] > 0})


class ReproducibleFedAvg(ReplyCheckHook, FedAvg):
    """FedAvg with seeded sampling, ordered tolerant aggregation and checkpointable state.

    Also the mixin of the FedProx / FedAdam variants (listed first among their bases, so that
    ``super()`` reaches Flower's FedProx / FedAdam methods).
    """

    def setup_nodes(self, nodes: Mapping[int, int], seed: int) -> None:
        """Tell the strategy which node holds which partition (``node_id -> partition``)."""
        self.node_to_partition: dict[int, int] = dict(nodes)
        self.partition_to_node: dict[int, int] = {p: n for n, p in nodes.items()}
        self.seed = seed
        self.rejected: list[tuple[int, str]] = []

    sampling: str = "fixed"  # federation.sampling (train rounds; evaluation is always fixed)
    fixed_denominator: float | None = None  # set under Poisson central DP: q * population

    def sample(self, server_round: int, evaluate: bool = False) -> list[int]:
        """Partition ids chosen for a train (or evaluate) round."""
        fraction = self.fraction_evaluate if evaluate else self.fraction_train
        minimum = self.min_evaluate_nodes if evaluate else self.min_train_nodes
        salt = 1_000_003 if evaluate else 0
        return sample_partitions(
            self.partition_to_node, fraction, minimum, self.seed, server_round + salt,
            "fixed" if evaluate else self.sampling,
        )

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        nodes = [self.partition_to_node[p] for p in self.sample(server_round)]
        if not nodes:  # a Poisson round that sampled nobody
            return []
        parent = super().configure_train
        return configure_for_nodes(
            self, lambda view: parent(server_round, arrays, config, view), grid, nodes)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        if self.fraction_evaluate <= 0.0:
            return []
        nodes = [self.partition_to_node[p] for p in self.sample(server_round, evaluate=True)]
        parent = super().configure_evaluate
        return configure_for_nodes(
            self, lambda view: parent(server_round, arrays, config, view), grid, nodes)

    def order_replies(self, replies: Iterable[Message]) -> list[Message]:
        """Replies sorted by the sender's partition id."""
        return sorted(
            replies, key=lambda m: self.node_to_partition.get(m.metadata.src_node_id, 1 << 30)
        )

    def check_replies(
        self, replies: Iterable[Message], is_train: bool
    ) -> tuple[list[Message], list[Message]]:
        """``(valid, errors)`` of ``replies`` in partition order; a malformed reply is recorded in
        ``rejected`` and counted as an error (Flower's aggregation calls this first)."""
        valid: list[Message] = []
        errors: list[Message] = []
        expected = getattr(self, "_expected_keys", None)
        for msg in self.order_replies(replies):
            if msg.has_error():
                errors.append(msg)
                continue
            content = msg.content
            problem = ""
            if len(content.metric_records) != 1:
                problem = "reply must hold exactly one MetricRecord"
            elif is_train:
                arrays = content.array_records
                if len(arrays) != 1:
                    problem = "reply must hold exactly one ArrayRecord"
                elif expected is not None and set(next(iter(arrays.values())).keys()) != expected:
                    problem = "reply arrays do not match the shared model keys"
            if problem:
                self.rejected.append((self.node_to_partition.get(msg.metadata.src_node_id, -1),
                                      problem))
                errors.append(msg)
            else:
                valid.append(msg)
        return valid, errors

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        arrays, metrics = super().aggregate_train(server_round, replies)
        if arrays is None:
            return None, metrics
        dtypes = getattr(self, "_expected_dtypes", {})
        out = {k: a.numpy() for k, a in arrays.items()}
        broadcast = getattr(self, "_broadcast", None)
        if self.fixed_denominator is not None and broadcast is not None:
            # uniform mean of m updates -> their sum / (q n): current + (mean - current) m / (q n)
            scale = len(replies) / self.fixed_denominator
            out = {k: broadcast[k] + (v - broadcast[k]) * scale for k, v in out.items()}
        cast = ArrayRecord({
            k: Array(np.ascontiguousarray(v.astype(dtypes.get(k, v.dtype))))
            for k, v in out.items()
        })
        return cast, metrics

    def expect(self, arrays: ArrayRecord) -> None:
        """Remember the keys and dtypes of the broadcast model (replies must match them)."""
        self._expected_keys = set(arrays.keys())
        self._expected_dtypes = {k: a.numpy().dtype for k, a in arrays.items()}
        self._broadcast = {k: a.numpy().astype(np.float64) for k, a in arrays.items()}

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Server optimizer state to checkpoint (FedAdam's moments; empty for FedAvg/FedProx)."""
        out: dict[str, np.ndarray] = {}
        for name in ("m_t", "v_t"):
            moments = getattr(self, name, None)
            for key, value in (moments or {}).items():
                out[f"{name}/{key}"] = np.asarray(value)
        return out

    def load_state_arrays(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore what `state_arrays` returned."""
        for name in ("m_t", "v_t"):
            moments = {k.split("/", 1)[1]: np.array(v) for k, v in state.items()
                       if k.startswith(name + "/")}
            if moments:
                setattr(self, name, moments)


class ReproducibleFedProx(ReproducibleFedAvg, FedProx):
    """FedProx: FedAvg on the server, ``proximal-mu`` sent to clients for the proximal term."""


class ReproducibleFedAdam(ReproducibleFedAvg, FedAdam):
    """FedAdam (Reddi et al.): Adam on the server over the averaged client update."""


def make_strategy(cfg: Config, num_clients: int) -> ReproducibleFedAvg:
    """The strategy named by ``federation.strategy`` with the config's sampling settings."""
    fed = cfg.federation
    minimum = min(fed.min_train_clients, num_clients)
    common: dict[str, Any] = {
        "fraction_train": fed.fraction_train,
        "fraction_evaluate": fed.fraction_evaluate,
        "min_train_nodes": minimum,
        "min_evaluate_nodes": minimum if fed.fraction_evaluate > 0 else 0,
        "min_available_nodes": minimum,
        "weighted_by_key": WEIGHT_KEY,
        "arrayrecord_key": ARRAYS_KEY,
        "configrecord_key": CONFIG_KEY,
        "train_metrics_aggr_fn": weighted_metrics,
        "evaluate_metrics_aggr_fn": weighted_metrics,
    }
    strategy: ReproducibleFedAvg
    if fed.strategy == "fedprox":
        strategy = ReproducibleFedProx(proximal_mu=fed.proximal_mu, **common)
    elif fed.strategy == "fedadam":
        strategy = ReproducibleFedAdam(eta=fed.server_lr, eta_l=cfg.train.lr, **common)
    else:
        strategy = ReproducibleFedAvg(**common)
    strategy.sampling = fed.sampling
    return strategy
