"""SecAgg+ (privacy.secagg): Flower's protocol inside fedvida's round, without Ray.

Every node runs the product's SecAgg+ client chain (`secagg_mod` around Flower's
``secaggplus_mod``, then `dp_mod`, then a stand-in training handler) behind the in-process grid
of fed_helpers; each delivery is serialized and inflated again (`delivered`). The server side
is the product's `SecureExchange` driven by `run_round`. The real apps run in
tests/integration/test_secagg_sim.py (Ray) and test_deployment.py (gRPC).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from fed_helpers import Handler, LocalGrid, _initial, stand_in_client
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from clients.client_app import guarded
from fedvida.config import Config, SecAggConfig, load_config
from fedvida.errors import ConfigError
from fedvida.federation import records as R
from fedvida.federation.flower_compat import message_from_objects, message_objects, set_message_id
from fedvida.federation.keys import DP_WEIGHT_KEY, MASKED_KEY, SECAGG_ACTION
from fedvida.federation.privacy import dp_mod, privatize
from fedvida.federation.rounds import RoundOutcome, run_round
from fedvida.federation.secagg import (
    PROTOCOL_KEY,
    SecureExchange,
    check_secagg,
    check_secagg_reply,
    quantization_bound,
    secagg_mod,
)
from fedvida.federation.strategy import make_strategy

SECAGG = SecAggConfig(enabled=True, num_shares=5, reconstruction_threshold=3)
MAX_WEIGHT = 20.0  # stand-in clients report num-examples 10 + partition


def delivered(msg: Message) -> Message:
    """What a node receives: the message deflated and inflated again, as through a SuperLink."""
    contents = {oid: obj.deflate() for oid, obj in message_objects(msg).items()}
    out = message_from_objects(msg.object_id, contents)
    set_message_id(out, msg.metadata.message_id)  # set by the SuperLink
    return out  # type: ignore[return-value]


def secagg_node(handler: Handler) -> Handler:
    """A node whose ClientApp has the product's SecAgg+ handler chain around ``handler``."""
    app = ClientApp()

    @app.train(SECAGG_ACTION, mods=[secagg_mod, dp_mod])
    def _train(msg: Message, context: Context) -> Message:
        return guarded(handler)(msg, context)

    def run(msg: Message, context: Context) -> Message:
        return app(delivered(msg), context)  # nothing shared with the server's objects

    return run


def plain_node(handler: Handler) -> Handler:
    """The same node without SecAgg+: the ClientApp's default train handler behind `dp_mod`."""
    app = ClientApp()

    @app.train(mods=[dp_mod])
    def _train(msg: Message, context: Context) -> Message:
        return guarded(handler)(msg, context)

    def run(msg: Message, context: Context) -> Message:
        return app(delivered(msg), context)

    return run


def with_dp_weight(handler: Handler) -> Handler:
    """What fedvida's client adds under central DP: the uniform weight ``dp-weight = 1``."""

    def run(msg: Message, context: Context) -> Message:
        out = handler(msg, context)
        metrics = dict(out.content.metric_records[R.METRICS_KEY])
        metrics[DP_WEIGHT_KEY] = 1
        out.content[R.METRICS_KEY] = MetricRecord(metrics)
        return out

    return run


def heavy_client(msg: Message, context: Context) -> Message:
    """Claims more examples than the plan allows any client (SecAgg+'s max_weight)."""
    out = stand_in_client()(msg, context)
    metrics = dict(out.content.metric_records[R.METRICS_KEY])
    metrics[R.WEIGHT_KEY] = 10_000
    out.content[R.METRICS_KEY] = MetricRecord(metrics)
    return out


def one_round(cfg: Config, grid: LocalGrid, secure: bool, min_results: int = 2,
              secagg: SecAggConfig = SECAGG) -> tuple[dict[str, np.ndarray], RoundOutcome]:
    """Round 1 from `_initial()` with fedvida's strategy (DP-wrapped if the config says so)."""
    strategy: Any = make_strategy(cfg, len(grid.node_ids))
    nodes = {n: int(grid.contexts[n].node_config["partition-id"]) for n in grid.node_ids}
    strategy.setup_nodes(nodes, cfg.train.seed)
    strategy = privatize(strategy, cfg, len(nodes))
    weight_key = str(strategy.weighted_by_key)
    train = (SecureExchange(secagg, 1.0 if weight_key == DP_WEIGHT_KEY else MAX_WEIGHT,
                            weight_key) if secure else None)
    conf = ConfigRecord({R.CFG_METHOD: "video_only", R.CFG_EPOCHS: 1, R.CFG_YAML: cfg.to_yaml()})
    out = run_round(strategy, grid, 1, R.numpy_to_arrays(_initial()), conf,
                    ConfigRecord(dict(conf)), 30.0, min_results, train_exchange=train)
    return R.arrays_to_numpy(out.arrays), out


def _max_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    return max(float(np.abs(a[k].astype(np.float64) - b[k]).max()) for k in a)


def _float32(a: dict[str, np.ndarray]) -> float:
    """Slack for float32 rounding (FedAvg's weighted sum, the cast of the SecAgg+ aggregate)."""
    return 8 * max(float(np.abs(v).max()) for v in a.values()) * float(np.finfo(np.float32).eps)


def test_secagg_round_is_fedavg_within_the_quantisation_bound_and_only_masked_data_leaves(
) -> None:
    # Arrange: five clients, the same seeded training with and without SecAgg+
    cfg = Config()
    cfg.federation.min_train_clients = 2
    plain_grid = LocalGrid({p: stand_in_client() for p in range(5)})
    secure_grid = LocalGrid({p: secagg_node(stand_in_client()) for p in range(5)})
    # Act
    plain, plain_out = one_round(cfg, plain_grid, secure=False)
    secured, out = one_round(cfg, secure_grid, secure=True)
    # Assert: FedAvg's aggregate (weights 10..14) within the rounding bound, not bit-equal
    bound = quantization_bound(SECAGG, [10, 11, 12, 13, 14], MAX_WEIGHT)
    assert 0 < _max_diff(secured, plain) <= bound + _float32(plain)
    assert _max_diff(plain, _initial()) > 1000 * bound  # training moved the model
    assert out.aggregated and out.train.failures == [] and set(out.train.per_client) == set(
        range(5))
    assert out.train_metrics == pytest.approx(plain_out.train_metrics)
    # Assert: four metered stages of five messages each, summed into the train traffic
    info = out.train.extra["secagg"]
    assert out.train.extra["sampled"] == 5 and info["completed"]
    assert list(info["stages"]) == ["setup", "share_keys", "collect_masked_vectors", "unmask"]
    stages = info["stages"].values()
    assert all(s["messages_down"] == s["messages_up"] == 5 for s in stages)
    assert out.train.traffic.down == sum(s["bytes_down"] for s in stages)
    assert out.train.traffic.up == sum(s["bytes_up"] for s in stages)
    # the masked vector holds int64 entries: about twice the float32 update
    payload = sum(a.nbytes for a in _initial().values())
    assert info["stages"]["collect_masked_vectors"]["bytes_up"] > 5 * 2 * payload
    # Assert: every reply holds protocol bytes/ints, masked integers and numbers only
    assert len(secure_grid.seen) == 20
    for reply in secure_grid.seen:
        assert not reply.has_error()
        assert check_secagg_reply(reply.content) == []
        assert set(reply.content.array_records) <= {MASKED_KEY}


def test_clients_dropping_out_are_unmasked_from_their_neighbours_shares() -> None:
    # Arrange: partition 2 fails while training, partition 4 claims an impossible weight
    cfg = Config()
    handlers = {p: stand_in_client() for p in range(5)}
    grid = LocalGrid({p: secagg_node(heavy_client if p == 4 else
                                     stand_in_client(fail=p == 2)) for p in range(5)})
    plain_grid = LocalGrid({p: handlers[p] for p in (0, 1, 3)})
    # Act
    secured, out = one_round(cfg, grid, secure=True)
    plain, _ = one_round(cfg, plain_grid, secure=False)
    # Assert: the mean of the three that finished (their pairwise masks with the two dropped
    # clients were rebuilt from shares), with path-free reasons for the two that did not
    assert out.aggregated and set(out.train.per_client) == {0, 1, 3}
    assert _max_diff(secured, plain) <= (quantization_bound(SECAGG, [10, 11, 13], MAX_WEIGHT)
                                         + _float32(plain))
    reasons = {f["partition"]: f["reason"] for f in out.train.failures}
    assert set(reasons) == {2, 4}
    assert reasons[2].startswith("secagg collect_masked_vectors:") and "<path>" in reasons[2]
    assert "alice" not in reasons[2]
    assert "max_weight=20" in reasons[4]


def test_a_client_dropping_before_masking_is_left_out_and_the_round_goes_on() -> None:
    # Arrange: partition 3 answers the SecAgg+ setup without the protocol record (Flower 1.39's
    # workflow alone would halt the round in its unmask stage: no shares exist for it)
    def mute(msg: Message, context: Context) -> Message:
        return Message(R.reply(None, {R.WEIGHT_KEY: 13}), reply_to=msg)

    cfg = Config()
    handlers = {p: stand_in_client() for p in range(5)}
    grid = LocalGrid({p: mute if p == 3 else secagg_node(handlers[p]) for p in range(5)})
    plain_grid = LocalGrid({p: handlers[p] for p in (0, 1, 2, 4)})
    # Act
    secured, out = one_round(cfg, grid, secure=True)
    plain, _ = one_round(cfg, plain_grid, secure=False)
    # Assert: dropped at setup, never part of the sum
    assert out.aggregated and set(out.train.per_client) == {0, 1, 2, 4}
    assert out.train.failures == [
        {"partition": 3, "reason": "secagg setup: reply without the protocol record"}]
    assert _max_diff(secured, plain) <= (quantization_bound(SECAGG, [10, 11, 12, 14], MAX_WEIGHT)
                                         + _float32(plain))


def test_too_few_clients_halt_the_protocol_and_keep_the_global_model() -> None:
    cfg = Config()
    grid = LocalGrid({p: secagg_node(stand_in_client(fail=p > 1)) for p in range(5)})
    final, out = one_round(cfg, grid, secure=True, min_results=1)
    assert not out.aggregated and out.train.per_client == {}
    assert any("halted in the collect_masked_vectors stage" in f["reason"]
               for f in out.train.failures)
    assert out.train.extra["secagg"]["completed"] is False
    for key, value in _initial().items():
        np.testing.assert_array_equal(final[key], value)


def test_client_side_clipping_happens_before_masking() -> None:
    # Arrange: client-side fixed clipping (clip 0.05, seeded server noise) with and without
    # SecAgg+; the clipped updates are weighted uniformly (dp-weight), max_weight 1
    sets = ["privacy.dp.mode=client-fixed", "privacy.dp.clipping_norm=0.05",
            "privacy.dp.noise_multiplier=0.5", "privacy.dp.noise_seed=3",
            "federation.min_train_clients=2", "partition.num_clients=5"]
    cfg = load_config(None, sets)
    plain_grid = LocalGrid({p: plain_node(with_dp_weight(stand_in_client())) for p in range(5)})
    grid = LocalGrid({p: secagg_node(with_dp_weight(stand_in_client())) for p in range(5)})
    # Act
    plain, _ = one_round(cfg, plain_grid, secure=False)
    secured, out = one_round(cfg, grid, secure=True)
    unclipped, _ = one_round(Config(), LocalGrid({p: stand_in_client() for p in range(5)}),
                             secure=False)
    # Assert: the same clipped, noised mean; clipping changed it
    assert out.train.extra["secagg"]["weight_key"] == DP_WEIGHT_KEY
    assert _max_diff(secured, plain) <= quantization_bound(SECAGG, [1.0] * 5, 1.0) + _float32(plain)
    assert _max_diff(plain, unclipped) > 0.01


@pytest.mark.parametrize(
    ("sets", "field"),
    [
        (["privacy.secagg.num_shares=4"], "num_shares must be odd"),
        (["privacy.secagg.reconstruction_threshold=3"], "reconstruction_threshold must be less"),
        (["privacy.secagg.modulus_range=5000000"], "modulus_range must be a power of 2"),
        (["partition.num_clients=4", "privacy.secagg.num_shares=5",
          "privacy.secagg.reconstruction_threshold=3"], "privacy.secagg.num_shares: 5 shares"),
        (["privacy.secagg.modulus_range=8388608"], "privacy.secagg.modulus_range: the masked"),
        (["privacy.dp.mode=server-fixed"], "privacy.dp.mode"),
        (["communication.uplink=int8"], "communication.uplink"),
        (["communication.downlink=float16"], "communication.downlink"),
    ],
)
def test_settings_secagg_cannot_honour_fail_with_one_line(sets: list[str], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, ["privacy.secagg.enabled=true", *sets])
    assert field in str(err.value) and "\n" not in str(err.value)


def test_run_checks_the_shares_against_the_connected_nodes() -> None:
    check_secagg(SECAGG, 5)
    with pytest.raises(ConfigError, match=r"num_shares: 5 shares .* 3 are sampled \(of 3 conn"):
        check_secagg(SECAGG, 3, " (of 3 connected nodes)")


def test_reply_boundary_flags_arrays_strings_and_foreign_keys() -> None:
    good = RecordDict({PROTOCOL_KEY: ConfigRecord({"masked_params": [b"\x00\x01"],
                                                   "nids": [1, 2]}),
                       R.METRICS_KEY: MetricRecord({R.WEIGHT_KEY: 3})})
    assert check_secagg_reply(good) == []
    good[MASKED_KEY] = ArrayRecord({"00000": Array(np.arange(4, dtype=np.int64))})
    assert check_secagg_reply(good) == []
    leaky = RecordDict({PROTOCOL_KEY: ConfigRecord({"masked_params": ["clip.mp4"],
                                                    "caption": [b"x"]}),
                        "fitres.parameters": ArrayRecord({"w": Array(np.ones(2))}),
                        MASKED_KEY: ArrayRecord({"00000": Array(np.ones(2))})})
    problems = " | ".join(check_secagg_reply(leaky))
    assert "'masked_params' holds other than bytes" in problems
    assert "'caption' is not a SecAgg+ reply key" in problems
    assert "'fitres.parameters' travels unmasked" in problems
    assert f"'{MASKED_KEY}' holds other than the masked integers" in problems


def test_what_leaves_a_client_is_independent_of_its_update_and_only_the_sum_unmasks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # "Updates leave the client only masked": a check that the reply holds integers (any
    # integers: an unmasked quantised update would pass) cannot show it. Here every client's
    # quantised update (what Flower's mod masks, spied on) is compared with the vector that
    # actually leaves: they must differ in almost every entry and be uncorrelated, the same
    # update masked in two rounds must give uncorrelated vectors, and the round's aggregate
    # must still be the mean update (only the sum unmasks).
    import importlib
    import threading

    # the module (its package re-exports a function of the same name)
    flower_mod = importlib.import_module("flwr.client.mod.secure_aggregation.secaggplus_mod")

    size, parts = 3000, range(5)
    init = {"classifier.weight": np.zeros(size, np.float32)}
    deltas = {p: np.random.default_rng(p).normal(0.0, 0.05, size).astype(np.float32)
              for p in parts}
    where = threading.local()
    quantised: dict[tuple[int, int], np.ndarray] = {}
    real = flower_mod.factor_combine

    def spy(factor: int, params: list[np.ndarray]) -> list[np.ndarray]:
        out = real(factor, params)
        quantised[(where.round, where.part)] = np.concatenate([a.ravel() for a in out])
        return out

    monkeypatch.setattr(flower_mod, "factor_combine", spy)

    def constant_update(msg: Message, context: Context) -> Message:
        # the same update every round (a stand-in for a client whose data says the same)
        part = int(context.node_config["partition-id"])
        where.round = int(msg.content.config_records[R.CONFIG_KEY][R.CFG_ROUND])  # type: ignore[arg-type]
        where.part = part
        arrays = R.arrays_to_numpy(msg.content.array_records[R.ARRAYS_KEY])
        out = {"classifier.weight": arrays["classifier.weight"] + deltas[part]}
        return Message(R.reply(R.numpy_to_arrays(out), {R.WEIGHT_KEY: 10}), reply_to=msg)

    cfg = Config()
    cfg.federation.min_train_clients = 2
    grid = LocalGrid({p: secagg_node(constant_update) for p in parts})
    strategy: Any = make_strategy(cfg, len(grid.node_ids))
    nodes = {n: int(grid.contexts[n].node_config["partition-id"]) for n in grid.node_ids}
    strategy.setup_nodes(nodes, cfg.train.seed)
    record, outs = R.numpy_to_arrays(init), []
    for rnd in (1, 2):
        conf = ConfigRecord({R.CFG_METHOD: "video_only", R.CFG_EPOCHS: 1,
                             R.CFG_YAML: cfg.to_yaml()})
        out = run_round(strategy, grid, rnd, record, conf, ConfigRecord(dict(conf)), 30.0, 2,
                        train_exchange=SecureExchange(SECAGG, MAX_WEIGHT, R.WEIGHT_KEY))
        outs.append((record, out))
        record = out.arrays
    # what left each client in the collect stage, by (round, partition), in Flower's order
    sent: dict[tuple[int, int], np.ndarray] = {}
    for reply in grid.seen:
        if MASKED_KEY in reply.content.array_records:
            masked = reply.content.array_records[MASKED_KEY]
            rnd = 1 if len(sent) < len(parts) else 2
            sent[(rnd, nodes[reply.metadata.src_node_id])] = np.concatenate(
                [masked[k].numpy().ravel() for k in sorted(masked.keys())])
    assert set(sent) == set(quantised) == {(r, p) for r in (1, 2) for p in parts}
    mod = SECAGG.modulus_range

    def corr(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.corrcoef(a.astype(np.float64), b.astype(np.float64))[0, 1])

    for p in parts:
        for rnd in (1, 2):
            plain, masked = quantised[(rnd, p)] % mod, sent[(rnd, p)]
            assert plain.shape == masked.shape and plain.size > size
            assert np.mean(plain == masked) < 0.01  # not the update: almost every entry differs
            assert abs(corr(plain[1:], masked[1:])) < 0.1  # and nothing of it shows through
        # the same update, masked twice: the quantised vectors agree, the sent ones do not
        assert corr(quantised[(1, p)][1:], quantised[(2, p)][1:]) > 0.99
        assert abs(corr(sent[(1, p)][1:], sent[(2, p)][1:])) < 0.1
    # only the aggregate unmasks: each round moved the model by the mean update
    mean = np.mean([deltas[p] for p in parts], axis=0)
    for before, out in outs:
        assert out.aggregated and out.train.failures == []
        moved = (R.arrays_to_numpy(out.arrays)["classifier.weight"]
                 - R.arrays_to_numpy(before)["classifier.weight"])
        assert corr(moved, mean) > 0.999
        assert float(np.abs(moved - mean).max()) <= quantization_bound(
            SECAGG, [10] * 5, MAX_WEIGHT) + 1e-6
