"""Server side of a federation: discover nodes, run every method's rounds, log, checkpoint, report.

`serve` is what `server/server_app.py` calls, in simulation and in deployment alike. For each
method it starts from the newest checkpoint in ``runs/<name>/checkpoints/<method>/`` when there
is one (that is how a resume continues), runs the remaining rounds and appends one line per
round to ``metrics.jsonl``; at the end it writes ``report.md`` with plots.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from fedvida.config import Config
from fedvida.errors import FedvidaError
from fedvida.federation import keys as K
from fedvida.federation import records as R
from fedvida.federation.checkpoints import checkpoint_dir, latest_checkpoint, save_checkpoint
from fedvida.federation.compression import compress_broadcast, describe, instruction_keys
from fedvida.federation.metering import Traffic
from fedvida.federation.privacy import CENTRAL_MODES, privatize
from fedvida.federation.rounds import (
    RoundOutcome,
    check_engine,
    client_metrics,
    exchange,
    run_round,
)
from fedvida.federation.run_config import run_dir
from fedvida.federation.secagg import secure_exchange
from fedvida.federation.strategy import make_strategy
from fedvida.reporting.runlog import RunLog, final_metrics, selected_line, write_report
from fedvida.training.methods import shared_parts
from fedvida.training.metrics import pool_fill_scores

_log = logging.getLogger("fedvida.server")
RoundHook = Callable[[dict[str, Any]], None]


def discover(grid: Grid, expected: int, timeout: float, minimum: int = 1,
             settle: float = 10.0) -> dict[int, int]:
    """Ask every connected node for its partition id; returns ``node_id -> partition``.

    Waits up to ``timeout`` seconds for ``expected`` nodes (the plan's clients) to connect, or
    goes on once at least ``minimum`` are connected and none joined for ``settle`` seconds (a
    deployment may run fewer SuperNodes than the plan has clients). A node that does not answer,
    answers twice for one partition, or names a partition outside the plan is left out (logged).
    """
    start = time.monotonic()
    count, changed = -1, start
    while time.monotonic() - start < timeout:
        check_engine()
        now = len(list(grid.get_node_ids()))
        if now != count:
            count, changed = now, time.monotonic()
        if count >= expected or (count >= minimum and time.monotonic() - changed >= settle):
            break
        time.sleep(0.5)
    nodes = sorted(grid.get_node_ids())
    msgs = [Message(RecordDict(), dst_node_id=n, message_type=MessageType.QUERY) for n in nodes]
    result = exchange(grid, msgs, {}, timeout)
    mapping: dict[int, int] = {}
    for reply in result.replies:
        if reply.has_error():
            _log.warning("node %s did not identify: %s", reply.metadata.src_node_id,
                         reply.error.reason)
            continue
        part = int(next(iter(reply.content.metric_records.values()))[K.PARTITION_KEY])  # type: ignore[arg-type]
        if not 0 <= part < expected or part in mapping.values():
            _log.warning("node %s claims partition %s: ignored", reply.metadata.src_node_id, part)
            continue
        mapping[reply.metadata.src_node_id] = part
    return mapping


def coverage_warning(nodes: dict[int, int], planned: int) -> str | None:
    """The warning for a federation whose nodes hold fewer partitions than the plan has.

    Partitions without a node never train: the run is a smaller experiment than the plan
    describes (e.g. ``flwr run .`` on Flower's default local federation starts 2 SuperNodes
    for a 10-client plan). ``None`` when every partition has a node.
    """
    held = sorted(set(nodes.values()))
    if len(held) >= planned:
        return None
    missing = [p for p in range(planned) if p not in held]
    shown = ", ".join(map(str, missing[:20])) + (", ..." if len(missing) > 20 else "")
    return (f"only {len(held)} of the plan's {planned} clients have a node: partitions "
            f"{shown} will not train (start {planned} SuperNodes, e.g. flwr run's "
            f"num-supernodes={planned}, or partition the data for {len(held)} clients)")


def dictionary_digest(cfg: Config) -> str:
    """Digest of the dictionary artifact the clients must hold (``""`` when there is none)."""
    path = Path(cfg.dictionary.out)
    if not (path / "manifest.json").is_file():
        return ""
    from fedvida.semantics.dictionary import SemanticDictionary

    return SemanticDictionary.load(path).digest


class ServerEvaluator:
    """Evaluates global arrays on the test split (the plan's ``"test"`` partition)."""

    def __init__(self, cfg: Config, digest: str) -> None:
        from fedvida.features.cache import load_features
        from fedvida.federation.loaders import dictionary_for, local_features
        from fedvida.models.container import FeatureDims

        self.plan, self.test = local_features(cfg, "test")
        # the same clips with the withheld audio given back: the real-audio reference of the
        # missing-audio metrics (fedvida.training.evaluation); never a method's input
        self.oracle = load_features(cfg, self.plan, "test", withhold=False)
        self.dims = FeatureDims.from_features(self.test, len(self.plan.classes))
        self.dictionary = dictionary_for(cfg, digest)
        self._models: dict[tuple[str, int], Any] = {}

    def initial_state(self, cfg: Config, method: str) -> dict[str, np.ndarray]:
        """``method``'s shared parts of a freshly built model (seeded by ``train.seed``)."""
        from fedvida.models.container import build_model, select_state
        from fedvida.training.methods import shared_parts

        model = build_model(cfg, self.dims)
        shared = select_state(model, shared_parts(cfg, method))
        return {k: v.numpy() for k, v in shared.items()}

    def __call__(self, cfg: Config, arrays: dict[str, np.ndarray],
                 method: str) -> dict[str, Any]:
        """Test metrics of the global arrays (`fedvida.training.local.evaluate`).

        For a method whose fill-in weight is chosen on validation
        (`fedvida.training.local.chooses_fill_weight`) also ``by_fill_weight``: the metrics at
        each candidate weight, of which reports take the one the clients' validation chose
        (`fedvida.reporting.runlog.server_metrics_by_round`).
        """
        import torch

        from fedvida.models.container import build_model, load_state
        from fedvida.training.local import chooses_fill_weight, evaluate, fill_weight
        from fedvida.training.metrics import FILL_WEIGHTS

        # evaluation never changes the weights, so one model per (model config, seed) is reused:
        # the arrays overwrite the shared parts, the others keep their seeded initial values
        key = (cfg.section_hash("model"), cfg.train.seed)
        if key not in self._models:
            self._models[key] = build_model(cfg, self.dims)
        model = self._models[key]
        load_state(model, {k: torch.from_numpy(np.array(v)) for k, v in arrays.items()})
        metrics = evaluate(model, self.test, cfg, self.dictionary, method=method,
                           oracle=self.oracle)
        out: dict[str, Any] = {k: float(v) for k, v in metrics.items()}
        if cfg.train.val_fraction > 0 and chooses_fill_weight(model, cfg, method):
            received = float(model.classifier.fill_weight)  # already evaluated above
            by_weight = {}
            for w in FILL_WEIGHTS:
                if w == received:
                    by_weight[f"{w:g}"] = {k: v for k, v in out.items()}
                    continue
                with fill_weight(model, w):
                    at = evaluate(model, self.test, cfg, self.dictionary, method=method,
                                  oracle=self.oracle)
                by_weight[f"{w:g}"] = {k: float(v) for k, v in at.items()}
            out["by_fill_weight"] = by_weight
        return out


def serve(grid: Grid, cfg: Config, on_round: RoundHook | None = None) -> dict[str, dict[str, Any]]:
    """Run every method of ``cfg`` federated on ``grid``; returns final metrics per method.

    Parameters
    ----------
    grid
        The Flower grid of the ServerApp.
    cfg
        The resolved config (its ``name`` and ``train.runs_dir`` give the run folder).
    on_round
        Called with each round's log line (live progress).
    """
    folder = run_dir(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "config.yaml").is_file():
        (folder / "config.yaml").write_text(cfg.to_yaml())
    digest = dictionary_digest(cfg)
    evaluator = ServerEvaluator(cfg, digest)
    num_clients = evaluator.plan.num_clients
    nodes = discover(grid, num_clients, cfg.federation.client_timeout_s,
                     minimum=min(cfg.federation.min_train_clients, num_clients))
    if len(nodes) < min(cfg.federation.min_train_clients, num_clients):
        raise FedvidaError(f"only {len(nodes)} node(s) identified of the plan's {num_clients} "
                           f"clients; federation.min_train_clients is "
                           f"{cfg.federation.min_train_clients}")
    warning = coverage_warning(nodes, num_clients)
    if warning is not None and not cfg.federation.allow_fewer_nodes:
        raise FedvidaError(f"{warning}; set federation.allow_fewer_nodes=true to train with "
                           "the nodes that answered")
    if warning is not None:
        from fedvida.reporting.console import console

        _log.warning(warning)
        console.print(f"[yellow]warning:[/yellow] {warning}", soft_wrap=True, highlight=False)
    log = RunLog(folder)
    results: dict[str, dict[str, Any]] = {}
    for method in cfg.train.methods:
        run_method(grid, cfg, method, nodes, evaluator, digest, log, on_round)
        results[method] = final_metrics(log.rounds(method))
    write_report(folder, cfg.name)
    return results


def run_method(
    grid: Grid, cfg: Config, method: str, nodes: dict[int, int], evaluator: ServerEvaluator,
    digest: str, log: RunLog, on_round: RoundHook | None,
) -> None:
    """The rounds of one method, continuing from its newest checkpoint if there is one."""
    fed = cfg.federation
    folder = checkpoint_dir(log.run_dir, method)
    strategy = make_strategy(cfg, len(nodes))
    strategy.setup_nodes(nodes, cfg.train.seed)
    strategy = privatize(strategy, cfg, len(nodes))
    # privacy.secagg: the train step of every round runs SecAgg+ (checked against the nodes)
    secure = (secure_exchange(cfg, evaluator.plan, strategy, len(nodes))
              if cfg.privacy.secagg.enabled else None)
    arrays = evaluator.initial_state(cfg, method)
    start = 1
    ckpt = latest_checkpoint(folder)
    if ckpt is not None:
        arrays, start = ckpt.model, ckpt.server_round + 1
        strategy.load_state_arrays(ckpt.strategy_state)
        say(resume_message(method, ckpt.server_round, fed.rounds, log.run_dir))
    log.truncate(method, start - 1)
    record = R.numpy_to_arrays(arrays)
    base = {R.CFG_METHOD: method, R.CFG_EPOCHS: fed.local_epochs, R.CFG_DIGEST: digest,
            R.CFG_YAML: cfg.to_yaml(), **instruction_keys(cfg.communication)}
    communication = describe(cfg.communication, shared_parts(cfg, method))
    minimum = min(fed.min_train_clients, len(nodes))
    if fed.sampling == "poisson" and cfg.privacy.dp.mode in CENTRAL_MODES:
        minimum = 0  # DP-FedAvg releases a noisy aggregate every round, whoever was sampled
    nodes_entry = {"connected": len(nodes), "planned": evaluator.plan.num_clients}

    def finish(rnd: int, outcome: RoundOutcome, current: dict[str, np.ndarray],
               state: dict[str, np.ndarray], t0: float, privacy: dict[str, Any] | None,
               validation: dict[str, Any] | None = None) -> None:
        server: dict[str, Any] = {}
        e0 = time.perf_counter()
        if rnd % fed.eval_every == 0 or rnd == fed.rounds:
            server = evaluator(cfg, current, method)
        eval_seconds = time.perf_counter() - e0
        # the clients' pooled fill-weight scores of round rnd - 1's model (scored before training)
        fill = pool_fill_scores(outcome.train.per_client.values())
        # the round the run reports so far keeps its checkpoint (round rnd - 1's validation
        # score arrived with this round's training replies)
        chosen = selected_line([*log.rounds(method), {
            "round": rnd, "server": server, "train": outcome.train_metrics,
            "validation": validation, "select_round": fed.select_round, "fill_scores": fill}])
        protect = [int(chosen["round"])] if chosen is not None else []
        save_checkpoint(folder, rnd, method, fed.strategy, current, state, fed.keep_checkpoints,
                        protect)
        line = round_line(method, rnd, outcome, server, time.perf_counter() - t0, eval_seconds)
        line["communication"] = communication  # codecs and shared model parts of the bytes
        line["nodes"] = nodes_entry  # a run with fewer nodes than the plan says so per line
        line["select_round"] = fed.select_round  # how final_metrics picks the reported round
        if validation is not None:
            line["validation"] = validation
        if fill is not None:
            line["fill_scores"] = fill
        if privacy is not None:
            line["privacy"] = privacy
        line["finished_at"] = time.time()
        log.append(line)
        if on_round is not None:
            on_round({**line, "rounds": fed.rounds})

    # Round r's server evaluation, checkpoint and log line run in a helper thread while the
    # clients train round r + 1 (they only read round r's aggregate): the server's work overlaps
    # the clients' instead of idling them. Lines, checkpoints and hooks keep round order (each
    # waits for the previous), and a failure in them still ends the run.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fedvida-round") as pool:
        pending: Future[None] | None = None
        for rnd in range(start, fed.rounds + 1):
            t0 = time.perf_counter()
            outcome = run_round(strategy, grid, rnd, record, ConfigRecord(dict(base)),
                                ConfigRecord(dict(base)), fed.client_timeout_s, minimum,
                                train_exchange=secure)
            record = outcome.arrays
            current = R.arrays_to_numpy(record)
            state = {k: np.array(v) for k, v in strategy.state_arrays().items()}
            privacy = strategy.privacy_report() if hasattr(strategy, "privacy_report") else None
            validation = None
            if rnd == fed.rounds and fed.select_round == "validation":
                validation = validate(grid, record, base, nodes, fed.client_timeout_s)
            if pending is not None:
                pending.result()
            pending = pool.submit(finish, rnd, outcome, current, state, t0, privacy, validation)
        if pending is not None:
            pending.result()


def validate(grid: Grid, arrays: ArrayRecord, base: dict[str, Any], nodes: dict[int, int],
             timeout: float) -> dict[str, Any]:
    """Every node's validation top-1 of the final global model (``federation.select_round``).

    Rounds before the last are validated for free: the clients of round r + 1 score the global
    model of round r on their validation split before training. The last round's model gets
    this one evaluate exchange (no training). Returns ``val_top1`` (weighted by validation
    clips), the number of clients that answered, the bytes moved and, for a method whose fill-in
    weight is chosen on validation, ``fill_scores`` (`fedvida.training.metrics.pool_fill_scores`).
    """
    from fedvida.federation.strategy import weighted_metrics

    config = {**base, R.CFG_VALIDATE: True}
    messages = [Message(R.instruction(arrays, config), dst_node_id=node,
                        message_type=MessageType.EVALUATE) for node in sorted(nodes)]
    result = exchange(grid, compress_broadcast(messages), nodes, timeout)
    ok = [r.content for r in result.replies if not r.has_error()]
    metrics = weighted_metrics(ok) if ok else {}
    out: dict[str, Any] = {"clients": len(ok), "bytes_down": result.traffic.down,
                           "bytes_up": result.traffic.up}
    if "val_top1" in metrics:
        out["val_top1"] = float(metrics["val_top1"])  # type: ignore[arg-type]
    fill = pool_fill_scores(client_metrics(result.replies, nodes).values())
    if fill is not None:
        out["fill_scores"] = fill
    return out


def resume_message(method: str, done: int, rounds: int, folder: Path) -> str:
    """What a run that found a checkpoint of ``method`` (round ``done``) says before its rounds."""
    if done >= rounds:
        return f"{method}: all {rounds} rounds done in {folder}, nothing to run"
    return f"{method}: resuming {folder} after round {done}, rounds {done + 1}-{rounds} of {rounds}"


def say(text: str) -> None:
    """A line for the person running the federation (the terminal, or flwr run's stream)."""
    from fedvida.reporting.console import console

    _log.info(text)
    console.print(text, markup=False, soft_wrap=True)


def round_line(method: str, rnd: int, out: RoundOutcome, server: dict[str, float],
               seconds: float, eval_seconds: float) -> dict[str, Any]:
    """The ``metrics.jsonl`` line of one round."""
    traffic = Traffic()
    traffic.merge(out.train.traffic)
    if out.evaluate is not None:
        traffic.merge(out.evaluate.traffic)
    line: dict[str, Any] = {
        "method": method, "round": rnd, "seconds": seconds, "eval_seconds": eval_seconds,
        "exchange_seconds": out.train.seconds,
        "train_seconds": float(sum(c.get("fit-seconds", 0.0)
                                   for c in out.train.per_client.values())),
        "bytes_down": traffic.down, "bytes_up": traffic.up,
        "messages_down": traffic.messages_down, "messages_up": traffic.messages_up,
        "sampled": out.train.traffic.messages_down,
        "bytes_down_train": out.train.traffic.down, "bytes_up_train": out.train.traffic.up,
        "succeeded": len(out.train.per_client), "aggregated": out.aggregated,
        "failures": out.train.failures, "train": out.train_metrics, "server": server,
        "clients": {str(k): v for k, v in out.train.per_client.items()},
    }
    line.update(out.train.extra)  # SecAgg+: sampled clients and bytes per protocol stage
    if out.evaluate is not None:
        line["client_eval"] = out.evaluate_metrics
    return line
