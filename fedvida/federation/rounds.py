"""One federated round: send, wait with a deadline, meter, record failures, aggregate.

Flower's ``Strategy.start`` runs all rounds in one call; fedvida drives the rounds itself so that
each round can be timed, metered, checkpointed and logged, and so that a run can start at round
r + 1 after a resume. The strategy's own ``configure_*`` / ``aggregate_*`` do the FL work.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid

from fedvida.errors import FedvidaError
from fedvida.federation.compression import compress_broadcast, decode_replies
from fedvida.federation.metering import Traffic, message_bytes, object_tree_bytes
from fedvida.federation.records import sanitize_reason
from fedvida.federation.strategy import ReproducibleFedAvg

POLL_SECONDS = 0.02  # first wait after an empty pull (how soon a quick reply is noticed)
POLL_MAX_SECONDS = 1.0  # longest wait between pulls while nothing arrives


class PollBackoff:
    """Waits between pulls: ``first`` seconds after an empty pull, doubling up to ``most`` while
    pulls stay empty, back to ``first`` as soon as a reply arrives.

    In simulation a pull is an in-memory lookup, in deployment a ``PullMessages`` request to the
    SuperLink: polling every 20 ms for a round of tens of seconds sent a thousand requests.
    """

    def __init__(self, first: float = POLL_SECONDS, most: float = POLL_MAX_SECONDS) -> None:
        self.first, self.most = first, most
        self.current = first

    def next_wait(self, got_reply: bool) -> float:
        """The wait before the next pull, given whether the last pull brought a reply."""
        if got_reply:
            self.current = self.first
            return 0.0
        wait = self.current
        self.current = min(self.most, self.current * 2)
        return wait
_ANSI = re.compile(r"\x1b\[[0-9;]*m")

# Set by the simulation launcher when Flower's engine has stopped (it failed, or it returned)
# while the ServerApp thread may still be waiting for replies that can no longer come: every
# wait of the server checks it and ends the ServerApp with an error instead of running out
# each round's deadline (`fedvida.federation.runner.simulate_config`).
ENGINE_STOPPED = threading.Event()


def check_engine() -> None:
    """Raise when the simulation engine stopped under a waiting server (`ENGINE_STOPPED`)."""
    if ENGINE_STOPPED.is_set():
        raise FedvidaError("the simulation engine stopped while the server waited for clients")


def error_summary(reason: str) -> str:
    """One line from a client error reply: the client's own path-free message when present.

    In simulation the reason is Ray's exception text (with a traceback of the actor); in
    deployment ``"<class ...>:<'Exception ClientFailure occurred. Message: ...'>"``.
    """
    text = _ANSI.sub("", str(reason))
    found = re.findall(r"ClientFailure: ([^\n']+)", text) or re.findall(r"Message: ([^\n']+)", text)
    if found:
        return found[-1].strip()[:300]
    return sanitize_reason(text)


@dataclass
class Exchange:
    """The outcome of sending one batch of messages."""

    replies: list[Message]
    failures: list[dict[str, Any]]
    traffic: Traffic
    seconds: float
    per_client: dict[int, dict[str, float]] = field(default_factory=dict)
    # fields this exchange sets in the round's metrics.jsonl line (SecAgg+: its stages)
    extra: dict[str, Any] = field(default_factory=dict)


# what sends a round's train messages and collects the replies: `exchange`, or SecAgg+'s
# `fedvida.federation.secagg.SecureExchange` (same arguments, same result)
ExchangeFn = Callable[[Grid, Iterable[Message], dict[int, int], float], Exchange]


def poll_backoff(grid: Grid) -> PollBackoff:
    """The pull schedule for ``grid``: backing off to 1 s against a SuperLink (each pull is a
    request), a steady 20 ms on the simulation's in-memory grid (a pull is a dict lookup, and a
    late notice of the last reply would delay every round)."""
    from fedvida.federation.flower_compat import is_in_memory_grid

    if is_in_memory_grid(grid):
        return PollBackoff(POLL_SECONDS, POLL_SECONDS)
    return PollBackoff()


def exchange(
    grid: Grid, messages: Iterable[Message], node_to_partition: dict[int, int], timeout: float
) -> Exchange:
    """Push messages, collect replies until all arrived or ``timeout`` seconds passed.

    Parameters
    ----------
    grid
        Flower grid (in-memory in simulation, the SuperLink in deployment).
    messages
        Messages to send (one per client).
    node_to_partition
        Maps node ids to plan partition ids (for the records).
    timeout
        Seconds to wait for the slowest client; a client still silent then is recorded as
        ``timeout`` and the round goes on with the replies it has.

    Returns
    -------
    Exchange
        Replies (errors included), failures (partition, reason), bytes down and up.
    """
    start = time.perf_counter()
    traffic = Traffic()
    msgs = list(messages)
    size_cache: dict[str, int] = {}
    dst: dict[str, int] = {}
    for msg in msgs:  # the broadcast arrays are shared: serialized and hashed once
        oid = msg.content.object_id
        if oid not in size_cache:
            size_cache[oid] = object_tree_bytes(msg.content)
        traffic.add_down(size_cache[oid])
    ids = list(grid.push_messages(msgs))
    for mid, msg in zip(ids, msgs, strict=False):
        dst[mid] = msg.metadata.dst_node_id
    pending = set(ids)
    replies: list[Message] = []
    deadline = start + timeout
    backoff = poll_backoff(grid)
    while pending and time.perf_counter() < deadline:
        check_engine()
        # each reply is metered (serialized, ~10 ms for a 5 MB model) as it arrives, while
        # other clients still work, not all together after the last one
        got = list(grid.pull_messages(list(pending)))
        for reply in got:
            pending.discard(reply.metadata.reply_to_message_id)
            replies.append(reply)
            traffic.add_up(node_to_partition.get(reply.metadata.src_node_id, -1),
                           message_bytes(reply))
        wait = backoff.next_wait(bool(got))
        if pending and wait:
            time.sleep(min(wait, max(0.0, deadline - time.perf_counter())))
    failures: list[dict[str, Any]] = []
    for mid in sorted(pending):
        part = node_to_partition.get(dst.get(mid, -1), -1)
        failures.append({"partition": part, "reason": f"timeout after {timeout:g} s"})
    for reply in replies:
        part = node_to_partition.get(reply.metadata.src_node_id, -1)
        if reply.has_error():
            failures.append({"partition": part, "reason": error_summary(str(reply.error.reason))})
    failures.sort(key=lambda f: f["partition"])
    return Exchange(replies, failures, traffic, time.perf_counter() - start)


def client_metrics(replies: list[Message], node_to_partition: dict[int, int]) -> dict[int, dict]:
    """Per-client metrics of the successful replies, keyed by partition id."""
    out: dict[int, dict[str, float]] = {}
    for reply in replies:
        if reply.has_error() or not reply.content.metric_records:
            continue
        metrics = next(iter(reply.content.metric_records.values()))
        part = node_to_partition.get(reply.metadata.src_node_id, -1)
        out[part] = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
    return dict(sorted(out.items()))


@dataclass
class RoundOutcome:
    """What one round produced."""

    arrays: ArrayRecord
    aggregated: bool
    train: Exchange
    train_metrics: dict[str, float]
    evaluate: Exchange | None
    evaluate_metrics: dict[str, float]


def run_round(
    strategy: ReproducibleFedAvg,
    grid: Grid,
    server_round: int,
    arrays: ArrayRecord,
    train_config: ConfigRecord,
    evaluate_config: ConfigRecord,
    timeout: float,
    min_results: int,
    train_exchange: ExchangeFn | None = None,
) -> RoundOutcome:
    """Train (and optionally evaluate on clients) one round; aggregate if enough results came.

    A round with fewer than ``min_results`` successful replies keeps the previous global model
    (``aggregated`` is False) and the failures are recorded; the run goes on. ``train_exchange``
    replaces the plain `exchange` of the train messages (SecAgg+).
    """
    nodes = strategy.node_to_partition
    strategy.rejected = []
    strategy.expect(arrays)
    # the downlink codec (communication.downlink) encodes the broadcast after the strategy (and
    # any DP wrapper) configured it from the float32 global model
    messages = compress_broadcast(
        strategy.configure_train(server_round, arrays, train_config, grid))
    train = (train_exchange or exchange)(grid, messages, nodes, timeout)
    ok = [r for r in train.replies if not r.has_error()]
    new_arrays, metrics = arrays, MetricRecord()
    aggregated = False
    if len(ok) >= min_results:
        # compressed updates (metered as they arrived) become float32 weights with the shared
        # keys before the strategy sees them: broadcast weights + decoded update
        replies, undecodable = decode_replies(train.replies, arrays, nodes)
        strategy.rejected.extend(undecodable)
        agg, agg_metrics = strategy.aggregate_train(server_round, replies)
        valid = len(ok) - len(strategy.rejected)
        if agg is not None and valid >= min_results:
            new_arrays, aggregated = agg, True
            metrics = agg_metrics or MetricRecord()
    for part, reason in strategy.rejected:
        train.failures.append({"partition": part, "reason": reason})
    train.per_client = client_metrics(train.replies, nodes)
    evaluation: Exchange | None = None
    eval_metrics: dict[str, float] = {}
    if strategy.fraction_evaluate > 0:
        messages = compress_broadcast(
            strategy.configure_evaluate(server_round, new_arrays, evaluate_config, grid))
        evaluation = exchange(grid, messages, nodes, timeout)
        evaluation.per_client = client_metrics(evaluation.replies, nodes)
        agg_eval = strategy.aggregate_evaluate(server_round, evaluation.replies)
        eval_metrics = {k: float(v) for k, v in (agg_eval or {}).items()
                        if isinstance(v, int | float)}
    return RoundOutcome(
        arrays=new_arrays,
        aggregated=aggregated,
        train=train,
        train_metrics={k: float(v) for k, v in metrics.items() if isinstance(v, int | float)},
        evaluate=evaluation,
        evaluate_metrics=eval_metrics,
    )
