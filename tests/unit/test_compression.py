"""Update compression's Flower wiring (fedvida.federation.compression): bytes, the mod, rounds.

The codecs alone (no Flower) are tests/unit/test_codecs.py. Byte counts on Flower's serialized
records of the real model's shapes; the client mod and the server's decode step through
`run_round` on an in-process grid (real Flower messages, no Ray).
The real ClientApp in a Ray simulation is tests/integration/test_compression_simulation.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fed_helpers import LocalGrid
from flwr.app import ConfigRecord, Context, Message
from flwr.clientapp.mod import fixedclipping_mod

from fedvida.config import CommunicationConfig, Config, load_config
from fedvida.errors import ConfigError
from fedvida.federation import codecs
from fedvida.federation import compression as C
from fedvida.federation import keys as K
from fedvida.federation import records as R
from fedvida.federation.metering import object_tree_bytes
from fedvida.federation.node import ClientFailure
from fedvida.federation.rounds import run_round
from fedvida.federation.strategy import make_strategy

Handler = Callable[[Message, Context], Message]


def test_codec_suffixes_and_the_privacy_boundary() -> None:
    named = {codecs.F16, codecs.D_F16, codecs.D_F32, codecs.D_I8, codecs.D_I8_AFFINE,
             codecs.D_TOPK_IDX, codecs.D_TOPK_VAL}
    assert named == set(R.CODEC_SUFFIXES)
    packed = codecs.compress_update({"gen.w": np.ones((8, 8), np.float32)},
                               {"gen.w": np.zeros((8, 8), np.float32)}, "int8")
    reply = R.reply(R.numpy_to_arrays(packed.arrays), {R.WEIGHT_KEY: 3})
    assert R.check_reply(reply, ["gen.w"]) == []
    assert R.check_reply(reply, ["cls.w"]) != []  # derived keys of a non-shared tensor
    odd = R.reply(R.numpy_to_arrays({"gen.w::secret": np.zeros(2, np.float32)}), {})
    assert R.check_reply(odd, ["gen.w"]) != []  # unknown part: not a shared key


# --- bytes -----------------------------------------------------------------------------------

def _model_state() -> dict[str, np.ndarray]:
    from fedvida.models.container import FeatureDims, build_model

    model = build_model(Config(), FeatureDims(rgb=1280, flow=1280, audio=1024, steps=18,
                                              num_classes=10))
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}


def test_compressed_reply_bytes_on_the_wire() -> None:
    # Arrange: the demo model's shapes (27 tensors, 5.2 MB), an update of every entry
    ref = _model_state()
    rng = np.random.default_rng(4)
    new = {k: (v + rng.standard_normal(v.shape) * 0.01).astype(np.float32)
           for k, v in ref.items()}

    def size(arrays: dict[str, np.ndarray]) -> int:
        return object_tree_bytes(R.reply(R.numpy_to_arrays(arrays), {R.WEIGHT_KEY: 10}))

    plain = size(new)
    ratios = {codec: plain / size(codecs.compress_update(new, ref, codec, 0.1).arrays)
              for codec in ("float16", "int8", "topk")}
    down = plain / size(codecs.encode_weights(ref, "float16"))
    # Assert: payload ratios minus Flower's per-array overhead (~370 B per array)
    assert 1.98 <= ratios["float16"] <= 2.0, ratios
    assert 3.9 <= ratios["int8"] <= 4.0, ratios
    assert 4.8 <= ratios["topk"] <= 5.0, ratios  # values + int32 indices: 1 / (2 * 0.1)
    assert 1.95 <= down <= 2.02
    assert plain > sum(v.nbytes for v in new.values())


# --- the mod and the server's decode step through run_round ----------------------------------

SHAPES = {"classifier.w": (64, 256), "classifier.b": (64,), "generator.w": (128, 64)}


def _initial() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}


def drift_client(log: dict[tuple[int, int], dict[str, np.ndarray]]) -> Handler:
    """A client whose update is seeded noise by (round, partition), scaled per tensor."""

    def handle(msg: Message, context: Context) -> Message:
        part = int(context.node_config["partition-id"])
        rnd = int(msg.content.config_records[R.CONFIG_KEY][R.CFG_ROUND])  # type: ignore[arg-type]
        got = R.arrays_to_numpy(msg.content.array_records[R.ARRAYS_KEY])
        assert all(v.dtype == np.float32 for v in got.values())  # the mod decoded the downlink
        rng = np.random.default_rng([rnd, part])
        out = {k: (v + rng.standard_normal(v.shape) * 0.02 * (1 + i)).astype(np.float32)
               for i, (k, v) in enumerate(sorted(got.items()))}
        log[(rnd, part)] = {k: out[k] - got[k] for k in out}  # the update, float32 as sent
        metrics = {R.WEIGHT_KEY: 10 + part, "partition-id": part}
        return Message(R.reply(R.numpy_to_arrays(out), metrics), reply_to=msg)

    return handle


def _chain(handler: Handler, *mods: Any) -> Handler:
    for mod in reversed(mods):
        handler = (lambda h, m: (lambda msg, ctx: m(msg, ctx, h)))(handler, mod)
    return handler


def _rounds(grid: LocalGrid, rounds: int, conf: dict[str, Any],
            seen: list[dict[str, np.ndarray]] | None = None) -> tuple[dict[str, np.ndarray], list]:
    cfg = Config()
    cfg.federation.min_train_clients = 2
    strategy = make_strategy(cfg, len(grid.node_ids))
    nodes = {n: int(grid.contexts[n].node_config["partition-id"]) for n in grid.node_ids}
    strategy.setup_nodes(nodes, 0)
    record = R.numpy_to_arrays(_initial())
    outs = []
    for rnd in range(1, rounds + 1):
        base = {R.CFG_METHOD: "generated", R.CFG_EPOCHS: 1, **conf}
        if seen is not None:
            seen.append(R.arrays_to_numpy(record))
        out = run_round(strategy, grid, rnd, record, ConfigRecord(dict(base)),
                        ConfigRecord(dict(base)), 30.0, 2)
        assert out.aggregated and not out.train.failures
        record = out.arrays
        outs.append(out)
    return R.arrays_to_numpy(record), outs


def test_int8_round_matches_the_uncompressed_round_within_half_a_step() -> None:
    # Arrange: the same four clients with and without the mod (int8 uplink, float16 downlink
    # off so that both start from identical weights)
    plain_log: dict[tuple[int, int], dict[str, np.ndarray]] = {}
    int8_log: dict[tuple[int, int], dict[str, np.ndarray]] = {}
    plain = LocalGrid({p: drift_client(plain_log) for p in range(4)})
    packed = LocalGrid({p: _chain(drift_client(int8_log), C.compression_mod) for p in range(4)})
    keys = C.instruction_keys(CommunicationConfig(uplink="int8", error_feedback=False))
    # Act
    ref_final, ref_outs = _rounds(plain, 1, {})
    final, outs = _rounds(packed, 1, keys)
    # Assert: the aggregate differs by at most the largest half step (weighted mean of errors)
    for k in SHAPES:
        half_steps = [(max(u[k].max(), 0) - min(u[k].min(), 0)) / 253 / 2
                      for u in int8_log.values()]
        assert np.abs(final[k] - ref_final[k]).max() <= max(half_steps) * 1.001, k
        assert not np.array_equal(final[k], ref_final[k])  # it was compressed...
    up, ref_up = outs[0].train.traffic.up, ref_outs[0].train.traffic.up
    assert 3.5 < ref_up / up < 4.0  # ...and metered compressed as it arrived
    down, ref_down = outs[0].train.traffic.down, ref_outs[0].train.traffic.down
    assert 1.0 < down / ref_down < 1.01  # the broadcast is not compressed (codec keys only)
    for ctx in packed.contexts.values():  # no error feedback asked: nothing kept
        assert not ctx.state.array_records


def test_topk_error_feedback_over_rounds_with_float16_downlink() -> None:
    # Arrange: top-k 5 % with feedback, float16 broadcast
    log: dict[tuple[int, int], dict[str, np.ndarray]] = {}
    grid = LocalGrid({p: _chain(drift_client(log), C.compression_mod) for p in range(3)})
    comm = CommunicationConfig(uplink="topk", topk_fraction=0.05, downlink="float16")
    globals_seen: list[dict[str, np.ndarray]] = []
    # Act
    final, outs = _rounds(grid, 3, C.instruction_keys(comm), globals_seen)
    # Assert: each client's residual (in its Context.state, per method) + everything the
    # server decoded from it == everything it computed
    assert len(grid.seen) == 9  # replies in round order, decoded in place by the server
    sent: dict[int, dict[str, np.ndarray]] = {}
    for i, reply in enumerate(grid.seen):
        part = int(reply.content.metric_records[R.METRICS_KEY]["partition-id"])  # type: ignore[arg-type]
        weights = R.arrays_to_numpy(reply.content.array_records[R.ARRAYS_KEY])
        for k in SHAPES:  # decoded weights = the round's float32 global + the decoded update
            delta = weights[k].astype(np.float64) - globals_seen[i // 3][k]
            sent.setdefault(part, {}).setdefault(k, np.zeros(SHAPES[k]))
            sent[part][k] += delta
    for ctx in grid.contexts.values():
        part = int(ctx.node_config["partition-id"])
        assert list(ctx.state.array_records) == ["fedvida-residual:generated"]
        residual = R.arrays_to_numpy(ctx.state.array_records["fedvida-residual:generated"])
        for k in SHAPES:
            computed = sum(log[(r, part)][k].astype(np.float64) for r in (1, 2, 3))
            np.testing.assert_allclose(sent[part][k] + residual[k], computed, atol=1e-4)
            assert np.count_nonzero(sent[part][k]) < 0.2 * sent[part][k].size  # sparse sends
    model_bytes = sum(int(np.prod(s)) * 4 for s in SHAPES.values())
    overhead = 4000  # Flower's record structure: ~370 B per array, metrics, config
    for out in outs:  # 3 replies of 5 % values + indices; 3 float16 broadcasts
        assert out.train.traffic.up < 3 * (0.1 * model_bytes + overhead)
        assert out.train.traffic.down < 3 * (0.5 * model_bytes + overhead)
    assert all(np.isfinite(v).all() for v in final.values())


def test_client_side_clipping_bounds_what_is_sent_after_error_feedback() -> None:
    # Arrange: Flower's fixedclipping_mod inside the compression mod, a small clipping norm,
    # int8 with error feedback (the residual would push the sent update above the norm)
    log: dict[tuple[int, int], dict[str, np.ndarray]] = {}
    grid = LocalGrid({p: _chain(drift_client(log), C.compression_mod, fixedclipping_mod)
                      for p in range(3)})
    norm = 0.5
    conf = {**C.instruction_keys(CommunicationConfig(uplink="int8", downlink="float16")),
            C.CLIPPING_NORM_KEY: norm}
    globals_seen: list[dict[str, np.ndarray]] = []
    # Act
    _rounds(grid, 3, conf, globals_seen)
    sent_norms = []
    for i, reply in enumerate(grid.seen):  # decoded in place: round's global + sent update
        weights = R.arrays_to_numpy(reply.content.array_records[R.ARRAYS_KEY])
        sent_norms.append(float(np.sqrt(sum(
            np.sum((weights[k].astype(np.float64) - globals_seen[i // 3][k]) ** 2)
            for k in SHAPES))))
    # Assert: every update the server decoded respects the norm, though each client's raw
    # update was much larger (clipping acted) and feedback carried residuals between rounds
    assert len(sent_norms) == 9
    assert max(sent_norms) <= norm * (1 + 1e-5), sent_norms
    assert min(sent_norms) > 0.9 * norm
    raw = [np.sqrt(sum(np.sum(u[k].astype(np.float64) ** 2) for k in u)) for u in log.values()]
    assert min(raw) > 10 * norm


def test_mod_is_a_no_op_without_codec_keys_and_fails_cleanly_on_bad_ones() -> None:
    log: dict[tuple[int, int], dict[str, np.ndarray]] = {}
    plain = LocalGrid({p: drift_client(log) for p in range(2)})
    wrapped = LocalGrid({p: _chain(drift_client(log), C.compression_mod) for p in range(2)})
    a, outs_a = _rounds(plain, 1, {})
    b, outs_b = _rounds(wrapped, 1, {})
    for k in SHAPES:
        np.testing.assert_array_equal(a[k], b[k])
    assert outs_a[0].train.traffic.up == outs_b[0].train.traffic.up
    assert C.instruction_keys(CommunicationConfig()) == {}
    # a codec this client does not know: one clear, path-free line (what the server records)
    conf = ConfigRecord({R.CFG_METHOD: "generated", R.CFG_ROUND: 1, K.CFG_UPLINK: "zstd"})
    msg = Message(R.instruction(R.numpy_to_arrays(_initial()), dict(conf)), dst_node_id=1,
                  message_type="train")
    ctx = next(iter(wrapped.contexts.values()))
    with pytest.raises(ClientFailure, match=r"^CodecError: communication.uplink: unknown codec"):
        C.compression_mod(msg, ctx, drift_client(log))


def test_undecodable_reply_is_recorded_and_left_out() -> None:
    log: dict[tuple[int, int], dict[str, np.ndarray]] = {}

    def broken(msg: Message, ctx: Context) -> Message:
        reply = _chain(drift_client(log), C.compression_mod)(msg, ctx)
        arrays = R.arrays_to_numpy(reply.content.array_records[R.ARRAYS_KEY])
        arrays.pop("classifier.b::d-i8-affine")
        reply.content[R.ARRAYS_KEY] = R.numpy_to_arrays(arrays)
        return reply

    handlers: dict[int, Handler] = {p: _chain(drift_client(log), C.compression_mod)
                                    for p in range(3)}
    handlers[3] = broken
    grid = LocalGrid(handlers)
    cfg = Config()
    strategy = make_strategy(cfg, 4)
    strategy.setup_nodes({n: int(grid.contexts[n].node_config["partition-id"])
                          for n in grid.node_ids}, 0)
    keys = C.instruction_keys(CommunicationConfig(uplink="int8"))
    conf = ConfigRecord({R.CFG_METHOD: "generated", **keys})
    out = run_round(strategy, grid, 1, R.numpy_to_arrays(_initial()), conf, conf, 30.0, 2)
    assert out.aggregated
    (failure,) = out.train.failures
    assert failure["partition"] == 3 and "undecodable" in failure["reason"]
    assert "classifier.b" in failure["reason"]


def test_secagg_with_uplink_compression_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="communication.uplink"):
        load_config(None, ["privacy.secagg.enabled=true", "communication.uplink=int8"])
    with pytest.raises(ConfigError, match="topk_fraction"):
        load_config(None, ["communication.topk_fraction=0"])


@pytest.mark.parametrize("codec", ["float16", "int8", "topk"])
def test_norm_bound_rescales_what_feedback_and_rounding_push_above_it(codec: str) -> None:
    rng = np.random.default_rng(6)
    ref = {"a": rng.standard_normal((50, 40)).astype(np.float32)}
    update = rng.standard_normal((50, 40))
    update *= 1.0 / np.linalg.norm(update)  # clipped to norm 1, as the DP mod leaves it
    new = {"a": (ref["a"] + update).astype(np.float32)}
    residual = {"a": (rng.standard_normal((50, 40)) * 0.05).astype(np.float32)}
    free = codecs.compress_update(new, ref, codec, 0.3, residual)
    bound = codecs.compress_update(new, ref, codec, 0.3, residual, max_norm=1.0)
    assert np.linalg.norm(free.sent["a"]) > 1.0 and free.rescaled == 1.0
    assert np.linalg.norm(bound.sent["a"].astype(np.float64)) <= 1.0 and bound.rescaled < 1.0
    decoded = codecs.decode(bound.arrays, ref)["a"].astype(np.float64) - ref["a"]
    np.testing.assert_allclose(decoded, bound.sent["a"], atol=1e-6)
    corrected = new["a"] - ref["a"] + residual["a"]  # what was scaled off stays in the residual
    np.testing.assert_allclose(bound.sent["a"] + bound.residual["a"], corrected, atol=1e-6)


def test_node_state_files_give_a_resume_the_state_before_its_round(tmp_path: Path) -> None:
    from fedvida.federation import nodestate

    cfg = Config()
    cfg.name, cfg.train.runs_dir = "run", tmp_path / "runs"
    cfg.federation.keep_checkpoints = 3  # + 1: the newest 4 rounds stay
    cfg.federation.rounds = 8
    for rnd in (1, 3, 4, 6, 7):  # the rounds this node was sampled in
        nodestate.save_state(cfg, {}, 5, "generated", nodestate.RESIDUAL, rnd,
                             {"w": np.full(3, rnd, np.float32)})
    folder = tmp_path / "runs" / "run" / "node-state" / "partition-5" / "generated" / "residual"
    assert sorted(p.name for p in folder.iterdir()) == [
        "round_0003.safetensors", "round_0004.safetensors", "round_0006.safetensors",
        "round_0007.safetensors"]

    def before(rnd: int) -> float | None:
        got = nodestate.load_state(cfg, {}, 5, "generated", nodestate.RESIDUAL, rnd)
        return None if got is None else float(got["w"][0])

    # a resume at round r uses the newest state of a round < r (later files are rounds it redoes)
    assert [before(r) for r in (4, 5, 7, 8)] == [3.0, 4.0, 6.0, 7.0]
    assert before(3) is None  # pruned: older than the rounds a kept checkpoint can resume from
    (folder / "round_0007.safetensors").write_bytes(b"torn")
    assert before(8) == 6.0  # a damaged file is skipped
    # per method: another method starts from nothing
    assert nodestate.load_state(cfg, {}, 5, "gt_audio", nodestate.RESIDUAL, 8) is None
    nodestate.save_state(cfg, {}, 5, "generated", nodestate.RESIDUAL, 8,
                         {"w": np.full(3, 8, np.float32)})
    assert sorted(p.name for p in folder.iterdir()) == [  # after the last round: it and the
        "round_0007.safetensors", "round_0008.safetensors"]  # one a redo of it would need
    deployed = nodestate.state_dir(cfg, {"data-dir": str(tmp_path / "node")}, 5)
    assert deployed == tmp_path / "node" / "node-state" / "run" / "partition-5"
    # federation.node_state off: nothing written, nothing read back (memory only)
    off = cfg.model_copy(deep=True)
    off.federation.node_state = False
    off.name = "memory-only"
    assert nodestate.save_state(off, {}, 5, "generated", nodestate.RESIDUAL, 1,
                                {"w": np.zeros(3)}) is None
    assert not (tmp_path / "runs" / "memory-only").exists()
    assert nodestate.load_state(off, {}, 5, "generated", nodestate.RESIDUAL, 8) is None
