"""Secure aggregation (SecAgg+) of the train step, inside fedvida's own round loop.

With ``privacy.secagg.enabled`` the train step of every round runs Flower 1.39's SecAgg+ protocol
(``SecAggPlusWorkflow`` on the server, ``secaggplus_mod`` on the clients) instead of the plain
send/collect of `fedvida.federation.rounds.exchange`. Everything else stays fedvida's: the seeded
client sampling and the instruction come from the strategy's ``configure_train``, every protocol
message is pushed, metered and timed by `exchange`, failures are recorded per stage, and the
unmasked aggregate goes through the strategy's ``aggregate_train`` (FedAvg / FedProx / FedAdam,
and Flower's DP wrapper for client-side clipping), then checkpoints and metrics.jsonl as usual.

How one round runs (`SecureExchange`, called by `rounds.run_round` in place of `exchange`):

1. Flower's workflow object drives its four stages (``setup``, ``share_keys``,
   ``collect_masked_vectors``, ``unmask``) against a grid view that sends each stage's messages
   as ``train.secagg`` (the ClientApp's SecAgg+ handler) through `exchange`, so each stage
   waits at most ``privacy.secagg.timeout_s`` (default ``federation.client_timeout_s``) and its
   bytes are counted from the serialized messages; a legacy-strategy adapter hands the workflow
   the nodes fedvida sampled and captures the unmasked sum. The collect stage carries fedvida's
   own instruction (global arrays + config) to each node.
2. On the client (`secagg_mod`) Flower's ``secaggplus_mod`` runs around the ordinary fedvida
   training (`fedvida.federation.node.train`, behind the DP mod, so client-side clipping
   happens before masking). It masks the client's **update** (trained minus global arrays, in
   float64), scaled by the client's aggregation weight: ``num-examples``, or the uniform
   ``dp-weight`` of central DP, whichever the strategy averages by. The reply holds the
   protocol record (public keys, encrypted shares, key shares: bytes and node ids), the masked
   vector (integers mod ``modulus_range``, moved from Flower's ConfigRecord into an ArrayRecord
   of the same bytes, which is cheaper to serialize and meter) and fedvida's numeric metrics,
   nothing else (`check_secagg_reply`).
3. The workflow unmasks the sum, which is ``sum_i w_i u_i`` and ``sum_i w_i`` (masked together
   with the vector) after quantisation: the weighted mean update. fedvida adds it to the global
   arrays and gives every contributing client's metrics together with that aggregate to the
   strategy's ``aggregate_train``, exactly as Flower's own workflow replaces each ``FitRes``'s
   parameters with the aggregate before calling ``aggregate_fit``: averaging identical arrays
   returns the aggregate, metrics are weighted as usual, FedAdam steps from it, a DP wrapper
   adds its noise to it.

What the server learns: the weighted mean update of the clients whose masked vector arrived
(and the sum of their quantised weights), never a single update. Each client's numeric metrics
(``num-examples``, losses, ``fit-seconds``, ``partition-id``) still travel in the clear, as the
``FitRes`` metrics do in Flower's SecAgg+; so the server knows every client's weight. The
protection assumes an honest-but-curious server: Flower's SecAgg+ has no consistency check, so a
server that tells a client's neighbours different dropout lists collects both of its secrets
whenever ``2 * reconstruction_threshold <= num_shares`` (keep the threshold above half the
shares; the default 2 of 3 is); and Flower expands every mask from a 32-bit seed
(``pseudo_rand_gen`` XOR-folds the 32-byte secret), far weaker than its key agreement. The
masked vector is int64: about twice the bytes of the float32 update.

Quantisation (Flower's): each weighted update entry ``w_i / max_weight * u`` is clipped to
``+-clipping_range`` and stochastically rounded to ``quantization_range`` levels; the aggregate
is FedAvg's within ``k * 2 * clipping_range / quantization_range / sum_i(w_i / max_weight)`` per
entry for k clients (`quantization_bound`). ``max_weight`` is the largest client of the plan for
``num-examples`` (so every client's ratio is <= 1) and 1 for ``dp-weight``. The rounding is
seeded by (train.seed, round, partition), so a SecAgg+ run is reproducible and resumes
identically; the masks come from fresh secrets every round.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict

from fedvida.config import Config, SecAggConfig
from fedvida.errors import ConfigError
from fedvida.federation import records as R
from fedvida.federation.flower_compat import (
    RECORD_KEY_CONFIGS,
    RECORD_KEY_STATE,
    fitres_record,
    grid_client_proxy,
    legacy_context,
    no_object_id_recompute,
    workflow_state,
)
from fedvida.federation.flower_compat import SecAggKey as Key
from fedvida.federation.flower_compat import SecAggStage as Stage
from fedvida.federation.keys import (
    CFG_WEIGHT_KEY,
    DP_WEIGHT_KEY,
    MASKED_KEY,
    SECAGG_MESSAGE_TYPE,
)
from fedvida.federation.metering import Traffic
from fedvida.federation.rounds import Exchange, exchange

if TYPE_CHECKING:
    from flwr.app import Metadata
    from flwr.serverapp import Grid

    from fedvida.data.partition import Plan

PROTOCOL_KEY = RECORD_KEY_CONFIGS  # the protocol's ConfigRecord, both ways
# the masked vector travels as an ArrayRecord of its int64 arrays, MASKED_KEY (Flower puts the
# same np.save bytes in the ConfigRecord, which costs ~0.1 s to serialize per 10 MB every time it
# is metered)
STAGES = Stage.all()  # setup, share_keys, collect_masked_vectors, unmask
# what a client may put in the protocol record of a reply (bytes and node ids only)
REPLY_KEYS = frozenset({Key.PUBLIC_KEY_1, Key.PUBLIC_KEY_2, Key.DESTINATION_LIST,
                        Key.CIPHERTEXT_LIST, Key.MASKED_PARAMETERS, Key.NODE_ID_LIST,
                        Key.SHARE_LIST})
_ROUNDING_SALT = 0x5EC466  # separates the stochastic-rounding seed from training seeds


# --- settings and validation --------------------------------------------------------------------
def check_secagg(secagg: SecAggConfig, sampled: int, where: str = "") -> None:
    """Refuse SecAgg+ settings that cannot work with ``sampled`` clients per round.

    Raises
    ------
    ConfigError
        One line naming the field: more shares than clients, or sums that would overflow the
        modulus (``sampled * quantization_range`` must stay below ``modulus_range``).
    """
    problem = secagg.round_problem(sampled)
    if problem:
        raise ConfigError(problem + where)


def max_weight_for(weight_key: str, plan: Plan) -> float:
    """The ``max_weight`` SecAgg+ scales client weights by (their ratio must stay <= 1)."""

    if weight_key == R.WEIGHT_KEY:
        return float(max([len(c) for c in plan.clients] or [1]))
    if weight_key == DP_WEIGHT_KEY:
        return 1.0
    raise ConfigError(f"privacy.secagg: no weight bound known for aggregation key {weight_key!r}")


def quantization_bound(secagg: SecAggConfig, weights: Iterable[float], max_weight: float) -> float:
    """Largest per-entry difference between the SecAgg+ aggregate and FedAvg's (rounding only).

    Each of the k clients rounds ``w_i / max_weight * u`` to a step ``2 * clipping_range /
    quantization_range`` (an error below one step); the sum is divided by ``sum_i w_i /
    max_weight``. Entries whose weighted value exceeds the clipping range are not covered.
    """
    ws = [float(w) for w in weights]
    step = 2.0 * secagg.clipping_range / secagg.quantization_range
    return len(ws) * step / (sum(ws) / max_weight)


# --- server side --------------------------------------------------------------------------------
@dataclass
class _Stage:
    """One protocol stage as it went over the grid."""

    name: str
    result: Exchange
    accepted: list[Message] = field(default_factory=list)  # well-formed replies
    extra_failures: list[dict[str, Any]] = field(default_factory=list)


class _StageGrid:
    """The grid as Flower's workflow sees it: each ``send_and_receive`` is one metered exchange.

    Messages leave as ``train.secagg`` (the ClientApp's SecAgg+ handler); replies of the collect
    stage get the legacy ``fitres.*`` records the workflow reads (built here from the client's
    numeric metrics, so they never travel).
    """

    def __init__(self, grid: Grid, nodes: Mapping[int, int], timeout: float,
                 weight_key: str) -> None:
        self.grid = grid
        self.nodes = dict(nodes)
        self.timeout = timeout
        self.weight_key = weight_key
        self.stages: list[_Stage] = []

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None
                         ) -> list[Message]:
        msgs = list(messages)
        name = str(msgs[0].content.config_records[PROTOCOL_KEY][Key.STAGE]) if msgs else "?"
        out = [Message(m.content, dst_node_id=m.metadata.dst_node_id,
                       message_type=SECAGG_MESSAGE_TYPE, group_id=m.metadata.group_id)
               for m in msgs]
        # object ids computed once per exchange: Flower otherwise re-serializes a record at
        # every id lookup, several times per message while it is metered
        with no_object_id_recompute():
            result = exchange(self.grid, out, self.nodes, self.timeout)
        stage = _Stage(name, result)
        self.stages.append(stage)
        good: list[Message] = []
        for reply in result.replies:
            if reply.has_error():
                good.append(reply)
                continue
            problem = _reply_problem(reply.content, name, self.weight_key)
            if problem:  # malformed: treated as a dropped client
                stage.extra_failures.append(
                    {"partition": self.nodes.get(reply.metadata.src_node_id, -1),
                     "reason": problem})
                continue
            stage.accepted.append(reply)
            if name == Stage.COLLECT_MASKED_VECTORS:
                reply = _message(_with_legacy_fitres(reply.content, self.weight_key),
                                 reply.metadata)
            good.append(reply)
        return good


def _reply_problem(content: RecordDict, stage: str, weight_key: str) -> str:
    if PROTOCOL_KEY not in content.config_records:
        return f"secagg {stage}: reply without the protocol record"
    if stage == Stage.COLLECT_MASKED_VECTORS:
        if MASKED_KEY not in content.array_records:
            return f"secagg {stage}: reply without the masked vector"
        metrics = content.metric_records.get(R.METRICS_KEY)
        if metrics is None or not isinstance(metrics.get(weight_key), int | float):
            return f"secagg {stage}: reply without the '{weight_key}' metric"
    return ""


def _with_legacy_fitres(content: RecordDict, weight_key: str) -> RecordDict:
    """The collect reply as Flower's workflow reads it: the masked vector back in the protocol
    record (the same np.save bytes) and the ``fitres.*`` records (no parameters: masked)."""
    from flwr.common import Code, FitRes, Parameters, Status

    weight = content.metric_records[R.METRICS_KEY][weight_key]
    legacy = fitres_record(
        FitRes(Status(Code.OK, ""), Parameters([], "numpy.ndarray"), weight, {}),  # type: ignore[arg-type]
        keep_input=True)
    masked = content.array_records[MASKED_KEY]
    proto = ConfigRecord(dict(content.config_records[PROTOCOL_KEY]))
    proto[Key.MASKED_PARAMETERS] = [masked[k].data for k in sorted(masked.keys())]
    return RecordDict({**dict(content.items()), **dict(legacy.items()), PROTOCOL_KEY: proto})


def _legacy_strategy(node_ids: list[int], grid: Any) -> Any:
    """A legacy Strategy that offers the workflow fedvida's sampled nodes and keeps the sum."""
    from flwr.common import FitIns, Parameters, parameters_to_ndarrays
    from flwr.server.strategy import Strategy

    class Sampled(Strategy):
        aggregate: list[np.ndarray] | None = None

        def initialize_parameters(self, client_manager: Any) -> None:
            return None

        def configure_fit(self, server_round: int, parameters: Parameters,
                          client_manager: Any) -> list[tuple[Any, FitIns]]:
            return [(grid_client_proxy(nid, grid), FitIns(parameters, {})) for nid in node_ids]

        def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> Any:
            if not results:
                return None, {}
            params = results[0][1].parameters  # every result carries the unmasked aggregate
            self.aggregate = parameters_to_ndarrays(params)
            return params, {}

        def configure_evaluate(self, *args: Any) -> list[Any]:
            return []

        def aggregate_evaluate(self, *args: Any) -> tuple[None, dict[str, Any]]:
            return None, {}

        def evaluate(self, *args: Any) -> None:
            return None

    return Sampled()


def _workflow(secagg: SecAggConfig, max_weight: float, timeout: float,
              instructions: dict[int, RecordDict]) -> Any:
    from flwr.server.workflow import SecAggPlusWorkflow

    class FedvidaSecAggPlus(SecAggPlusWorkflow):
        """Flower's workflow; the collect stage carries fedvida's own instruction per node."""

        def share_keys_stage(self, grid: Any, context: Any, state: Any) -> bool:
            ok = bool(super().share_keys_stage(grid, context, state))
            # Flower 1.39 would later try to unmask clients that dropped out before their key
            # shares went out (in setup or here), which no share can do, and the round would
            # halt: from here on only clients whose shares were forwarded take part (nobody
            # added a pairwise mask with the others)
            keep = set(state.active_node_ids)
            state.sampled_node_ids = keep
            state.nid_to_neighbours = {nid: nbrs & keep for nid, nbrs
                                       in state.nid_to_neighbours.items() if nid in keep}
            return ok

        def collect_masked_vectors_stage(self, grid: Any, context: Any, state: Any) -> bool:
            # a RecordDict per node: the stage adds that node's share ciphertexts to it
            state.nid_to_fitins = {nid: RecordDict(dict(instructions[nid].items()))
                                   for nid in state.nid_to_fitins}
            return bool(super().collect_masked_vectors_stage(grid, context, state))

    return FedvidaSecAggPlus(
        num_shares=secagg.num_shares, reconstruction_threshold=secagg.reconstruction_threshold,
        max_weight=max_weight, clipping_range=secagg.clipping_range,
        quantization_range=secagg.quantization_range, modulus_range=secagg.modulus_range,
        timeout=timeout)


class SecureExchange:
    """The train step of a round under SecAgg+; call it like `rounds.exchange`.

    Parameters
    ----------
    secagg
        ``privacy.secagg``.
    max_weight
        Upper bound of any client's aggregation weight (`max_weight_for`).
    weight_key
        The metric the strategy averages by (``num-examples``, or ``dp-weight`` under DP).
    """

    def __init__(self, secagg: SecAggConfig, max_weight: float, weight_key: str) -> None:
        self.secagg = secagg
        self.max_weight = float(max_weight)
        self.weight_key = weight_key

    def __call__(self, grid: Grid, messages: Iterable[Message], node_to_partition: dict[int, int],
                 timeout: float) -> Exchange:
        """Run the four stages for the strategy's train messages (one per sampled node).

        Returns
        -------
        Exchange
            ``replies``: one per client whose masked update entered the sum, holding its
            metrics and the aggregate arrays (none when the protocol halted); ``failures`` of
            every stage; ``traffic`` of all stages; ``extra``: ``sampled`` and a ``secagg``
            entry (bytes, messages and seconds per stage) for the metrics.jsonl line.
        """
        start = time.perf_counter()
        msgs = list(messages)
        stage_timeout = float(self.secagg.timeout_s or timeout)
        instructions: dict[int, RecordDict] = {}
        for msg in msgs:
            conf = msg.content.config_records[R.CONFIG_KEY]
            instructions[msg.metadata.dst_node_id] = RecordDict({
                R.ARRAYS_KEY: msg.content.array_records[R.ARRAYS_KEY],
                R.CONFIG_KEY: ConfigRecord({**dict(conf), CFG_WEIGHT_KEY: self.weight_key}),
            })
        view = _StageGrid(grid, node_to_partition, stage_timeout, self.weight_key)
        strategy = _legacy_strategy(list(instructions), grid)
        server_round = int(cast(int, msgs[0].content.config_records[R.CONFIG_KEY][R.CFG_ROUND])
                           ) if msgs else 0
        context = legacy_context(strategy, server_round)
        workflow = _workflow(self.secagg, self.max_weight, stage_timeout, instructions)
        state = workflow_state()
        steps = (workflow.setup_stage, workflow.share_keys_stage,
                 workflow.collect_masked_vectors_stage, workflow.unmask_stage)
        stopped = ""
        for name, step in zip(STAGES, steps, strict=True):
            if len(msgs) < 2:
                stopped = "SecAgg+ needs at least 2 sampled clients"
                break
            try:
                ok = step(view, context, state)
            except Exception as exc:  # a malformed reply must not end the run: record it
                stopped = (f"SecAgg+ aborted in the {name} stage: "
                           f"{R.sanitize_reason(f'{type(exc).__name__}: {exc}')}")
                break
            if not ok:
                stopped = (f"SecAgg+ halted in the {name} stage: too few clients answered for "
                           f"reconstruction_threshold={self.secagg.reconstruction_threshold}")
                break
        replies = self._aggregate_replies(msgs, view, strategy.aggregate) if not stopped else []
        return self._result(view, replies, stopped, state, time.perf_counter() - start)

    def _aggregate_replies(self, msgs: list[Message], view: _StageGrid,
                           mean_update: list[np.ndarray] | None) -> list[Message]:
        collect = next((s for s in view.stages if s.name == Stage.COLLECT_MASKED_VECTORS), None)
        if mean_update is None or collect is None or not msgs:
            return []
        glob = msgs[0].content.array_records[R.ARRAYS_KEY]
        keys = sorted(glob.keys())
        if len(keys) != len(mean_update):
            return []
        aggregate = {}
        for key, update in zip(keys, mean_update, strict=True):
            base = glob[key].numpy()
            value = base.astype(np.float64) + np.asarray(update, dtype=np.float64)
            aggregate[key] = np.ascontiguousarray(value.astype(base.dtype))
        record = R.numpy_to_arrays(aggregate)
        out = []
        for reply in collect.accepted:  # exactly the masked vectors the workflow summed
            metrics = reply.content.metric_records[R.METRICS_KEY]
            out.append(_message(RecordDict({R.ARRAYS_KEY: record, R.METRICS_KEY: metrics}),
                                reply.metadata))
        return out

    def _result(self, view: _StageGrid, replies: list[Message], stopped: str, state: Any,
                seconds: float) -> Exchange:
        traffic = Traffic()
        failures: list[dict[str, Any]] = []
        stages: dict[str, dict[str, float]] = {}
        for stage in view.stages:
            res = stage.result
            traffic.merge(res.traffic)
            for failure in [*res.failures, *stage.extra_failures]:
                reason = str(failure["reason"])
                if not reason.startswith("secagg "):
                    reason = f"secagg {stage.name}: {reason}"
                failures.append({"partition": failure["partition"], "reason": reason})
            stages[stage.name] = {"bytes_down": res.traffic.down, "bytes_up": res.traffic.up,
                                  "messages_down": res.traffic.messages_down,
                                  "messages_up": res.traffic.messages_up,
                                  "seconds": res.seconds}
        if stopped:
            failures.append({"partition": -1, "reason": stopped})
        failures.sort(key=lambda f: f["partition"])
        sampled = view.stages[0].result.traffic.messages_down if view.stages else 0
        extra = {"sampled": sampled, "secagg": {
            "stages": stages, "num_shares": int(state.num_shares or self.secagg.num_shares),
            "reconstruction_threshold": int(state.threshold
                                            or self.secagg.reconstruction_threshold),
            "max_weight": self.max_weight, "weight_key": self.weight_key,
            "clipping_range": self.secagg.clipping_range,
            "quantization_range": self.secagg.quantization_range,
            "modulus_range": self.secagg.modulus_range, "completed": not stopped,
        }}
        return Exchange(replies, failures, traffic, seconds, extra=extra)


def secure_exchange(cfg: Config, plan: Plan, strategy: Any, num_nodes: int) -> SecureExchange:
    """The `SecureExchange` of a run, after checking its settings against the federation.

    Parameters
    ----------
    cfg
        The resolved config (``privacy.secagg``).
    plan
        The plan (bounds the ``num-examples`` weight).
    strategy
        The run's strategy (its ``weighted_by_key`` and seeded sampling).
    num_nodes
        Nodes that identified themselves.

    Raises
    ------
    ConfigError
        When SecAgg+ cannot run with the clients sampled per round.
    """
    sampled = len(strategy.sample(1))
    check_secagg(cfg.privacy.secagg, sampled, f" (of {num_nodes} connected nodes)")
    key = str(strategy.weighted_by_key)
    return SecureExchange(cfg.privacy.secagg, max_weight_for(key, plan), key)


# --- client side --------------------------------------------------------------------------------
def _message(content: RecordDict, metadata: Metadata) -> Message:
    """A message with ``content`` and a copy of ``metadata`` (sender, receiver, ids, type)."""
    return Message(content=content, metadata=copy.copy(metadata))  # type: ignore[call-overload]


def _as_type(msg: Message, message_type: str) -> Message:
    """The same message under another type (Flower's SecAgg+ mod acts on ``train`` only)."""
    out = _message(msg.content, msg.metadata)
    out.metadata.message_type = message_type
    return out


def secagg_mod(msg: Message, context: Context, call_next: Any) -> Message:
    """Client mod of the ``train.secagg`` handler: Flower's ``secaggplus_mod`` around training.

    Flower's mod acts on ``train`` messages only, so it sees this message as one; in the collect
    stage it calls `_masked_training`, which runs the rest of the chain (DP mod, fedvida's
    training) on the plain fedvida instruction. The reply keeps only the protocol record and
    fedvida's numeric metrics; any failure leaves as a one-line, path-free `ClientFailure`.
    """
    from flwr.client.mod import secaggplus_mod

    from fedvida.federation.node import ClientFailure

    def inner(m: Message, c: Context) -> Message:
        return _masked_training(m, c, call_next)

    try:
        out = secaggplus_mod(_as_type(msg, "train"), context, inner)
    except ClientFailure:
        raise
    except Exception as exc:
        raise ClientFailure(R.sanitize_reason(f"SecAgg+ {type(exc).__name__}: {exc}")) from None
    proto = out.content.config_records[PROTOCOL_KEY]
    content = RecordDict({PROTOCOL_KEY: proto})
    if Key.MASKED_PARAMETERS in proto:
        content[MASKED_KEY] = _masked_arrays(cast(list[bytes], proto.pop(Key.MASKED_PARAMETERS)))
    if R.METRICS_KEY in out.content.metric_records:
        content[R.METRICS_KEY] = out.content.metric_records[R.METRICS_KEY]
    return Message(content, reply_to=msg)


def _masked_arrays(masked: list[bytes]) -> ArrayRecord:
    """Flower's masked vector (np.save bytes of int64 arrays) as an ArrayRecord, bytes kept."""
    from flwr.common import bytes_to_ndarray

    out = {}
    for idx, data in enumerate(masked):
        arr = bytes_to_ndarray(data)
        out[f"{idx:05d}"] = Array(dtype=str(arr.dtype), shape=tuple(arr.shape),
                                  stype="numpy.ndarray", data=data)
    return ArrayRecord(out)


def _masked_training(msg: Message, context: Context, call_next: Any) -> Message:
    """Train on the fedvida instruction; hand Flower's mod the weighted update as a ``FitRes``."""
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters

    from fedvida.federation.node import ClientFailure, instruction_config
    from fedvida.federation.rounds import error_summary
    from fedvida.federation.run_config import partition_of

    conf = msg.content.config_records[R.CONFIG_KEY]
    incoming = msg.content.array_records[R.ARRAYS_KEY]
    plain = _message(RecordDict({R.ARRAYS_KEY: incoming, R.CONFIG_KEY: conf}), msg.metadata)
    reply = call_next(plain, context)
    if reply.has_error():
        raise ClientFailure(error_summary(str(reply.error.reason)))
    arrays = reply.content.array_records[R.ARRAYS_KEY]
    metrics = reply.content.metric_records[R.METRICS_KEY]
    key = str(conf[CFG_WEIGHT_KEY])
    weight = metrics.get(key)
    limit = float(cast(float, context.state.config_records[RECORD_KEY_STATE][Key.MAX_WEIGHT]))
    if not isinstance(weight, int | float) or not 0 <= weight <= limit:
        raise ClientFailure(f"SecAgg+: weight {key}={weight} outside [0, max_weight={limit:g}]")
    keys = sorted(arrays.keys())
    if keys != sorted(incoming.keys()):
        raise ClientFailure("SecAgg+: trained arrays do not match the global arrays")
    update = [arrays[k].numpy().astype(np.float64) - incoming[k].numpy().astype(np.float64)
              for k in keys]
    # Flower's quantisation rounds stochastically with numpy's global generator: seeded by
    # (seed, round, partition), a SecAgg+ run is reproducible (the masks stay fresh secrets)
    seed = instruction_config(conf, context.node_config).train.seed
    np.random.seed(int(np.random.SeedSequence(
        [seed, int(cast(int, conf[R.CFG_ROUND])), partition_of(context.node_config),
         _ROUNDING_SALT]).generate_state(1)[0]))
    legacy = fitres_record(
        FitRes(Status(Code.OK, ""), ndarrays_to_parameters(update), weight, {}),  # type: ignore[arg-type]
        keep_input=False)
    legacy[R.METRICS_KEY] = metrics
    return Message(legacy, reply_to=msg)


def check_secagg_reply(content: RecordDict) -> list[str]:
    """Privacy boundary of a SecAgg+ reply: list what is not allowed (empty list = fine).

    Allowed: the protocol ``ConfigRecord`` with reply keys only (public keys, destinations,
    encrypted shares, node ids, key shares), whose values are bytes or integers (or lists of
    them: no strings, no floats), the masked vector (integer arrays only, in its own
    ``ArrayRecord``) and at most one ``MetricRecord`` of numbers (`records.check_reply`). No
    float arrays: the update only leaves masked.
    """
    bad: list[str] = []
    rest = RecordDict({k: v for k, v in content.items() if k not in (PROTOCOL_KEY, MASKED_KEY)})
    bad.extend(R.check_reply(rest, allowed_arrays=()))
    for name, rec in content.array_records.items():
        if name != MASKED_KEY and len(rec):
            bad.append(f"array record '{name}' travels unmasked")
        elif any(not np.issubdtype(np.dtype(a.dtype), np.integer) for a in rec.values()):
            bad.append(f"array record '{name}' holds other than the masked integers")
    proto = content.config_records.get(PROTOCOL_KEY)
    if proto is None:
        bad.append("no protocol record")
        return bad
    for key, value in proto.items():
        if key not in REPLY_KEYS:
            bad.append(f"protocol key '{key}' is not a SecAgg+ reply key")
        items = value if isinstance(value, list) else [value]
        if any(isinstance(v, bool) or not isinstance(v, bytes | int) for v in items):
            bad.append(f"protocol value '{key}' holds other than bytes or integers")
    return bad

