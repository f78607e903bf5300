"""Unit tests of the federation layer without Ray: strategies, rounds, metering, checkpoints.

Clients here are stand-in handlers (a small torch model trained on random arrays) behind an
in-process grid, so that sampling, aggregation, faults, timeouts and resume can be checked in
milliseconds. The real pipeline runs in tests/integration/test_simulation.py.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from fed_helpers import LocalGrid, _initial, stand_in_client
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict

from clients.client_app import guarded
from fedvida.config import Config
from fedvida.errors import ConfigError
from fedvida.federation import records as R
from fedvida.federation.checkpoints import (
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from fedvida.federation.metering import message_bytes, object_tree_bytes
from fedvida.federation.rounds import run_round
from fedvida.federation.run_config import localize, partition_of, split_overrides
from fedvida.federation.strategy import make_strategy, sample_partitions
from fedvida.reporting.runlog import RunLog, final_metrics, write_report


def _cfg(**fed: object) -> Config:
    cfg = Config()
    for k, v in {"min_train_clients": 2, "fraction_train": 1.0, **fed}.items():
        setattr(cfg.federation, k, v)
    return cfg


def _run(cfg: Config, grid: LocalGrid, rounds: range, arrays: dict[str, np.ndarray],
         strategy_state: dict[str, np.ndarray] | None = None, timeout: float = 30.0):
    strategy = make_strategy(cfg, len(grid.node_ids))
    nodes = {n: int(grid.contexts[n].node_config["partition-id"]) for n in grid.node_ids}
    strategy.setup_nodes(nodes, cfg.train.seed)
    if strategy_state:
        strategy.load_state_arrays(strategy_state)
    record = R.numpy_to_arrays(arrays)
    outcomes = []
    for rnd in rounds:
        conf = ConfigRecord({R.CFG_METHOD: "video_only", R.CFG_EPOCHS: 1})
        out = run_round(strategy, grid, rnd, record, conf, ConfigRecord(dict(conf)), timeout,
                        min(cfg.federation.min_train_clients, len(nodes)))
        record = out.arrays
        outcomes.append(out)
    return R.arrays_to_numpy(record), strategy, outcomes


def test_sampling_is_seeded_by_round_and_respects_fraction_and_minimum() -> None:
    a = sample_partitions(range(100), 0.1, 2, seed=3, server_round=5)
    b = sample_partitions(reversed(range(100)), 0.1, 2, seed=3, server_round=5)
    c = sample_partitions(range(100), 0.1, 2, seed=3, server_round=6)
    assert a == b and len(a) == 10 and a == sorted(a)
    assert a != c
    assert len(sample_partitions(range(10), 0.05, 3, 0, 1)) == 3
    assert sample_partitions(range(2), 1.0, 5, 0, 1) == [0, 1]


def test_fedavg_round_is_flowers_weighted_mean_in_partition_order() -> None:
    grid = LocalGrid({p: stand_in_client() for p in range(4)})
    init = _initial()
    final, _, outs = _run(_cfg(), grid, range(1, 2), init)
    replies = sorted(grid.seen, key=lambda m: int(m.content["metrics"]["partition-id"]))
    weights = np.array([10.0, 11.0, 12.0, 13.0]) / 46.0
    for key in init:
        manual = sum(w * r.content["arrays"][key].numpy() for w, r in zip(weights, replies,
                                                                           strict=True))
        np.testing.assert_allclose(final[key], manual, rtol=1e-6)
        assert final[key].dtype == np.float32
    out = outs[0]
    assert out.aggregated and out.train.failures == []
    assert set(out.train.per_client) == {0, 1, 2, 3}
    # metrics with keys only some clients report are averaged over those clients
    assert out.train_metrics["gen_loss"] == pytest.approx(0.5)
    # the loss is the weighted mean of what the clients reported
    losses = [float(r.content["metrics"]["train_loss"]) for r in replies]
    assert out.train_metrics["train_loss"] == pytest.approx(float(np.dot(weights, losses)))
    # identifiers are not metrics: no averaged partition id, but each client keeps its own
    assert "partition-id" not in out.train_metrics
    assert {c["partition-id"] for c in out.train.per_client.values()} == {0, 1, 2, 3}
    assert out.train.traffic.messages_down == 4 and out.train.traffic.messages_up == 4


def test_bytes_are_counted_from_serialized_messages() -> None:
    grid = LocalGrid({p: stand_in_client() for p in range(2)})
    _, _, outs = _run(_cfg(), grid, range(1, 2), _initial())
    traffic = outs[0].train.traffic
    payload = sum(v.nbytes for v in _initial().values())
    # each message carries the model once plus a few hundred bytes of structure
    assert 2 * payload < traffic.down < 2 * payload + 4000
    assert traffic.up == sum(message_bytes(m) for m in grid.seen)
    rec = RecordDict({"a": ArrayRecord({"x": Array(np.zeros(1000, np.float32)),
                                        "y": Array(np.zeros(1000, np.float32))})})
    assert object_tree_bytes(rec) < 4000 + 1000  # identical arrays travel once


def test_failing_and_slow_clients_are_recorded_and_the_round_goes_on() -> None:
    handlers = {0: stand_in_client(), 1: stand_in_client(fail=True),
                2: stand_in_client(sleep=3.0), 3: stand_in_client()}
    grid = LocalGrid(handlers)
    init = _initial()
    final, _, outs = _run(_cfg(), grid, range(1, 2), init, timeout=1.5)
    out = outs[0]
    reasons = {f["partition"]: f["reason"] for f in out.train.failures}
    assert set(reasons) == {1, 2}
    assert "timeout" in reasons[2]
    assert out.aggregated and set(out.train.per_client) == {0, 3}
    assert not np.allclose(final["classifier.weight"], init["classifier.weight"])


def test_round_with_too_few_results_keeps_the_global_model() -> None:
    grid = LocalGrid({0: stand_in_client(), 1: stand_in_client(fail=True)})
    init = _initial()
    final, _, outs = _run(_cfg(min_train_clients=2), grid, range(1, 2), init)
    assert not outs[0].aggregated
    for key in init:
        np.testing.assert_array_equal(final[key], init[key])


def test_reply_with_foreign_arrays_is_rejected_not_aggregated() -> None:
    def leaky(msg: Message, context: Context) -> Message:
        arrays = ArrayRecord({"frames": Array(np.ones((2, 3), np.float32))})
        return Message(R.reply(arrays, {R.WEIGHT_KEY: 5}), reply_to=msg)

    grid = LocalGrid({0: stand_in_client(), 1: stand_in_client(), 2: leaky})
    _, _, outs = _run(_cfg(), grid, range(1, 2), _initial())
    assert outs[0].aggregated
    assert [f["partition"] for f in outs[0].train.failures] == [2]


@pytest.mark.parametrize("strategy", ["fedavg", "fedprox", "fedadam"])
def test_resume_from_checkpoint_gives_identical_results(tmp_path: Path, strategy: str) -> None:
    cfg = _cfg(strategy=strategy, fraction_train=0.5)
    init = _initial()
    full, _, full_outs = _run(cfg, LocalGrid({p: stand_in_client() for p in range(6)}, seed=1),
                              range(1, 4), init)
    # interrupted after round 2: checkpoint, then a new process with new node ids continues
    part, strat, _ = _run(cfg, LocalGrid({p: stand_in_client() for p in range(6)}, seed=2),
                          range(1, 3), init)
    save_checkpoint(tmp_path, 2, "video_only", strategy, part, strat.state_arrays(), keep=2)
    ckpt = latest_checkpoint(tmp_path)
    assert ckpt is not None and ckpt.server_round == 2
    if strategy == "fedadam":
        assert any(k.startswith("v_t/") for k in ckpt.strategy_state)
    resumed, _, outs = _run(cfg, LocalGrid({p: stand_in_client() for p in range(6)}, seed=3),
                            range(3, 4), ckpt.model, ckpt.strategy_state)
    for key in full:
        np.testing.assert_array_equal(resumed[key], full[key])
    # the resumed round is round 3's: its clients and their metrics, not round 1's again
    (out,) = outs
    assert out.train.per_client == full_outs[2].train.per_client
    assert out.train.per_client != full_outs[0].train.per_client
    assert out.train_metrics == full_outs[2].train_metrics


def test_checkpoints_keep_the_last_k_and_skip_a_damaged_newest(tmp_path: Path) -> None:
    arrays = {"classifier.w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    for rnd in range(1, 6):
        save_checkpoint(tmp_path, rnd, "gt_audio", "fedavg", arrays, {}, keep=3)
    names = [p.name for p in list_checkpoints(tmp_path)]
    assert names == ["round_0003.safetensors", "round_0004.safetensors", "round_0005.safetensors"]
    loaded = load_checkpoint(tmp_path / names[-1])
    assert loaded.method == "gt_audio" and loaded.server_round == 5
    np.testing.assert_array_equal(loaded.model["classifier.w"], arrays["classifier.w"])
    (tmp_path / names[-1]).write_bytes(b"\x00garbage")
    latest = latest_checkpoint(tmp_path)
    assert latest is not None and latest.server_round == 4


def test_privacy_check_and_error_reasons_carry_no_paths() -> None:
    ok = R.reply(R.numpy_to_arrays(_initial()), {R.WEIGHT_KEY: 3, "train_loss": 0.5})
    assert R.check_reply(ok, _initial().keys()) == []
    bad = RecordDict({
        "arrays": ArrayRecord({"rgb": Array(np.zeros((2, 18, 4), np.float32))}),
        "metrics": MetricRecord({R.WEIGHT_KEY: 3}),
        "config": ConfigRecord({"file": "/data/cache/clip.npy"}),
    })
    problems = R.check_reply(bad, _initial().keys())
    assert any("config" in p for p in problems) and any("rgb" in p for p in problems)
    reason = R.sanitize_reason("InputError: /work/cache/0/part.npy: truncated\nTraceback")
    assert "/work" not in reason and "<path>" in reason and "Traceback" not in reason


def test_guarded_handler_reports_a_path_free_reason() -> None:
    grid = LocalGrid({0: guarded(stand_in_client(fail=True))})
    msg = Message(R.instruction(R.numpy_to_arrays(_initial()), {R.CFG_ROUND: 1}),
                  dst_node_id=grid.node_ids[0], message_type="train")
    grid.push_messages([msg])
    time.sleep(0.2)
    reply = grid.seen[0]
    assert reply.has_error()
    assert "RuntimeError" in reply.error.reason and "/home" not in reply.error.reason


def test_run_config_overrides_node_config_and_errors(tmp_path: Path) -> None:
    assert split_overrides("a.b=1; c=2\nd=[1, 2]") == ["a.b=1", "c=2", "d=[1, 2]"]
    cfg = localize(Config(), {"partition-id": 3, "data-dir": str(tmp_path)})
    assert cfg.extract.cache_dir == tmp_path / "cache"
    assert cfg.partition.plan == tmp_path / "plan.json"
    assert partition_of({"partition-id": "4"}) == 4
    with pytest.raises(ConfigError, match="partition-id"):
        partition_of({})
    with pytest.raises(ConfigError, match="partition-id"):
        partition_of({"partition-id": "x"})
    with pytest.raises(Exception, match="methods"):
        Config.model_validate({"train": {"methods": ["nope"]}})


def test_runlog_truncate_and_report(tmp_path: Path) -> None:
    log = RunLog(tmp_path)
    for method in ("video_only", "gt_audio"):
        for rnd in (1, 2, 3):
            log.append({"method": method, "round": rnd, "seconds": 1.0, "bytes_down": 1000,
                        "bytes_up": 900, "failures": [], "train": {"train_loss": 1.0 / rnd},
                        "server": {"top1": 0.1 * rnd, "macro_f1": 0.05 * rnd},
                        "sampled": 2, "succeeded": 2})
    log.truncate("gt_audio", 2)
    assert [ln["round"] for ln in log.rounds("gt_audio")] == [1, 2]
    assert len(log.rounds("video_only")) == 3
    final = final_metrics(log.rounds("video_only"))
    assert final["top1"] == pytest.approx(0.3) and final["bytes_down"] == 3000
    report = write_report(tmp_path, "t").read_text()
    assert "| video_only | 3 |" in report and "plots/accuracy.png" in report
    assert (tmp_path / "plots" / "accuracy.png").stat().st_size > 1000
    assert (tmp_path / "plots" / "bytes.png").stat().st_size > 1000


def test_client_model_cache_equals_a_fresh_build_under_partial_sharing() -> None:
    from fedvida.data.partition import Plan
    from fedvida.features.cache import FeatureSet
    from fedvida.federation import node
    from fedvida.models.container import FeatureDims, build_model, load_state

    cfg = _cfg(shared_prefixes=["classifier"])
    n, t = 2, 4
    fs = FeatureSet(
        relpaths=["a.mp4", "b.mp4"], labels=np.zeros(n, np.int64),
        rgb=np.zeros((n, t, 8), np.float32), flow=np.zeros((n, t, 8), np.float32),
        audio=np.zeros((n, t, 6), np.float32), audio_present=np.zeros(n, bool),
        audio_reason=["withheld"] * n, tags=np.zeros((n, 527), np.float32),
        rep_steps=np.zeros((n, t), bool), captions=["", ""],
    )
    plan = Plan(".", ["x", "y", "z"], [[]], [], [0.0], 0, "h")
    fresh = build_model(cfg, FeatureDims.from_features(fs, 3))
    rng = np.random.default_rng(0)

    def incoming() -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(rng.standard_normal(tuple(v.shape)).astype(np.float32))
                for k, v in fresh.state_dict().items() if k.startswith("classifier.")}

    first, entry = node._model(cfg, plan, fs, incoming())
    with torch.no_grad():  # local training changes every part, shared or not
        for p in first.parameters():
            p.add_(1.0)
    node._release(entry)
    second_in = incoming()
    second, entry = node._model(cfg, plan, fs, second_in)
    node._release(entry)
    assert second is first  # the cached skeleton was reused...
    expected = build_model(cfg, FeatureDims.from_features(fs, 3))
    load_state(expected, second_in)
    for key, value in expected.state_dict().items():  # ...and equals build + load, bit for bit
        assert torch.equal(second.state_dict()[key], value), key


def test_flower_child_environment_never_carries_a_simulations_config(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # a simulation earlier in the same process left its ServerApp settings in the environment
    from fedvida.federation.run_config import ENV_CONFIG, ENV_OVERRIDES
    from fedvida.federation.runner import process_env

    monkeypatch.setenv(ENV_CONFIG, "/elsewhere/config.yaml")
    monkeypatch.setenv(ENV_OVERRIDES, "name=other;train.runs_dir=/elsewhere")
    env = process_env(tmp_path / "flwr")
    assert ENV_CONFIG not in env and ENV_OVERRIDES not in env
    assert env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] == "1"


def test_engine_pickup_asks_only_nodes_with_pending_messages_in_flowers_order() -> None:
    import queue
    import threading
    from types import SimpleNamespace

    from fedvida.federation.flower_compat import pick_up_messages

    class State:
        """The in-memory link state's surface the pickup loop uses."""

        def __init__(self) -> None:
            self.message_ins_store: dict[str, SimpleNamespace] = {}
            self.asked: list[int] = []

        def get_message_ins(self, node_id: int, limit: int) -> list[SimpleNamespace]:
            self.asked.append(node_id)
            for msg in self.message_ins_store.values():
                if msg.metadata.dst_node_id == node_id and not msg.metadata.delivered_at:
                    msg.metadata.delivered_at = "now"
                    return [msg]
            return []

    state = State()
    for mid, node in [("a", 30), ("b", 10), ("c", 30)]:
        state.message_ins_store[mid] = SimpleNamespace(
            id=mid, metadata=SimpleNamespace(dst_node_id=node, delivered_at=""))
    out: queue.Queue[SimpleNamespace] = queue.Queue()
    stop = threading.Event()
    worker = threading.Thread(target=pick_up_messages,
                              args=(state, out, {10: 0, 20: 1, 30: 2}, stop))
    worker.start()
    got = [out.get(timeout=5).id for _ in range(3)]
    stop.set()
    worker.join(timeout=5)
    # one message per node per pass, nodes in the mapping's order; node 20 (nothing) never asked
    assert got == ["b", "a", "c"]
    assert 20 not in state.asked and out.empty()


def test_instruction_config_is_parsed_once_for_every_virtual_client() -> None:
    from fedvida.federation.node import instruction_config

    cfg = Config()
    conf = ConfigRecord({R.CFG_YAML: cfg.to_yaml(), R.CFG_METHOD: "gt_audio"})
    first = instruction_config(conf, {"partition-id": 0})
    assert instruction_config(conf, {"partition-id": 7}) is first  # no path keys: same config
    other = instruction_config(conf, {"partition-id": 0, "data-dir": "/srv/node"})
    assert other is not first and str(other.extract.cache_dir) == "/srv/node/cache"
    # the method is an argument of the node's work, never written into the shared config
    assert first.train.methods == cfg.train.methods
    # so is FedProx's mu: the validated config stays as the server sent it
    prox = ConfigRecord({R.CFG_YAML: cfg.to_yaml(), R.CFG_METHOD: "gt_audio", R.CFG_PROX: 0.5})
    assert instruction_config(prox, {"partition-id": 0}) is first
    assert first.federation.proximal_mu == cfg.federation.proximal_mu


def test_reply_polling_backs_off_while_nothing_arrives_and_resets_on_a_reply() -> None:
    from fedvida.federation.flower_compat import in_memory_grid_class
    from fedvida.federation.rounds import PollBackoff, poll_backoff

    backoff = PollBackoff(0.02, 1.0)
    waits = [backoff.next_wait(False) for _ in range(9)]
    assert waits == pytest.approx([0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.0, 1.0, 1.0])
    assert backoff.next_wait(True) == 0.0  # a reply: pull again at once
    assert backoff.next_wait(False) == pytest.approx(0.02)  # and start over from 20 ms
    # a 60 s wait with no reply costs ~66 pulls, not 3000 at a steady 20 ms
    backoff, elapsed, pulls = PollBackoff(), 0.0, 0
    while elapsed < 60:
        elapsed, pulls = elapsed + backoff.next_wait(False), pulls + 1
    assert pulls < 70
    # the simulation's in-memory grid keeps the steady 20 ms (a pull is a dict lookup); any
    # other grid (a SuperLink) backs off
    grid_class = in_memory_grid_class()
    sim = poll_backoff(grid_class.__new__(grid_class))
    assert [sim.next_wait(False) for _ in range(3)] == pytest.approx([0.02] * 3)
    assert poll_backoff(LocalGrid({})).most == 1.0  # type: ignore[arg-type]


def test_resources_no_client_fits_in_are_a_one_line_config_error() -> None:
    from fedvida.federation.runner import check_resources

    cfg = _cfg(num_cpus_per_client=4.0, ray_num_cpus=2)
    with pytest.raises(ConfigError) as err:
        check_resources(cfg)
    text = str(err.value)
    assert "\n" not in text
    assert "federation.num_cpus_per_client=4" in text and "federation.ray_num_cpus=2" in text
    check_resources(_cfg(num_cpus_per_client=2.0, ray_num_cpus=2))  # fits: no error
    with pytest.raises(ConfigError, match=r"num_gpus_per_client=0\.5 .* 0 GPU"):
        check_resources(_cfg(num_gpus_per_client=0.5), gpus=0)
    check_resources(_cfg(num_gpus_per_client=0.5), gpus=1)


def test_on_a_ray_cluster_the_backend_joins_it_and_its_nodes_decide_what_fits() -> None:
    from fedvida.federation.runner import backend_config, check_resources, clients_that_fit

    # Arrange: a cluster of a 1-CPU node and a 4-CPU node with one GPU
    cfg = _cfg(ray_address="10.0.0.5:6379", ray_num_cpus=2, num_cpus_per_client=2.0)
    nodes = [{"CPU": 1.0}, {"CPU": 4.0, "GPU": 1.0}]
    # Act / Assert: Flower's ray.init gets the address and no CPU/GPU counts (Ray refuses them
    # when joining a cluster); a local Ray gets them
    init = backend_config(cfg)["init_args"]
    assert init["address"] == "10.0.0.5:6379" and "num_cpus" not in init \
        and "num_gpus" not in init
    assert backend_config(_cfg(ray_num_cpus=2))["init_args"]["num_cpus"] == 2
    # per node, as Flower sizes its actor pool: 0 + 2 clients of 2 CPUs, 0 + 1 with a GPU each
    assert clients_that_fit(nodes, 2.0, 0.0) == 2
    assert clients_that_fit(nodes, 1.0, 1.0) == 1
    assert clients_that_fit(nodes, 0.5, 0.25) == 0 + 4  # the GPU-less node hosts none
    assert "up to 2 client(s)" in str(check_resources(cfg, nodes=nodes))
    # 5 CPUs in all, but no single node has 5: nothing fits
    with pytest.raises(ConfigError) as err:
        check_resources(_cfg(ray_address="10.0.0.5:6379", num_cpus_per_client=5.0), nodes=nodes)
    assert "\n" not in str(err.value) and "federation.ray_address=10.0.0.5:6379" in str(err.value)
    assert "CPUs per node: 1, 4" in str(err.value)
    with pytest.raises(ConfigError, match="GPUs: 0, 1"):
        check_resources(_cfg(ray_address="auto", num_gpus_per_client=2.0), nodes=nodes)


def test_an_unreachable_ray_address_is_a_one_line_config_error() -> None:
    from fedvida.federation.runner import ray_cluster_nodes

    with pytest.raises(ConfigError, match=r"^federation.ray_address='127.0.0.1:1': no Ray "):
        ray_cluster_nodes("127.0.0.1:1")


def test_an_engine_failure_ends_a_waiting_server_and_the_command_fails(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    # Flower's engine fails (e.g. an empty actor pool) after the ServerApp thread started: the
    # thread waits for replies that never come. The launcher must end it and fail at once,
    # not after every round's client_timeout_s
    import threading

    import flwr.simulation

    from fedvida.errors import FedvidaError
    from fedvida.federation import runner
    from fedvida.federation.rounds import exchange

    class SilentGrid(LocalGrid):
        def pull_messages(self, message_ids):  # type: ignore[no-untyped-def]
            return []

    server_done = threading.Event()
    server_error: list[BaseException] = []

    def fake_run_simulation(**kwargs: object) -> None:
        def server() -> None:
            grid = SilentGrid({0: stand_in_client()})
            msg = Message(RecordDict(), dst_node_id=grid.node_ids[0], message_type="train")
            try:
                exchange(grid, [msg], {}, timeout=600.0)
            except BaseException as exc:  # noqa: BLE001
                server_error.append(exc)
            finally:
                server_done.set()

        threading.Thread(target=server, name="fake-serverapp").start()
        time.sleep(0.3)
        raise RuntimeError("An error was encountered. Ending simulation.") from ValueError(
            "ActorPool is empty. Stopping Simulation.")

    monkeypatch.setattr(flwr.simulation, "run_simulation", fake_run_simulation)
    cfg = _cfg(ray_num_cpus=1)
    t0 = time.monotonic()
    with pytest.raises(FedvidaError, match="simulation failed: RuntimeError.*ActorPool is empty"):
        runner.simulate_config(Path("unused.yaml"), 1, cfg)
    assert time.monotonic() - t0 < 20
    assert server_done.is_set()
    assert isinstance(server_error[0], FedvidaError)
    from fedvida.federation.rounds import ENGINE_STOPPED

    assert not ENGINE_STOPPED.is_set()  # a later run in this process is not affected


def test_fewer_nodes_than_the_plan_is_said_with_both_numbers() -> None:
    # `flwr run .` on Flower's default local federation starts 2 SuperNodes; a 10-client plan
    # then trains 2 partitions only: discovery finds 2, and the warning names 2, 10 and the
    # partitions that will not train
    from clients.client_app import handle_query as identify
    from fedvida.federation.server import coverage_warning, discover

    grid = LocalGrid({0: identify, 1: identify})
    nodes = discover(grid, expected=10, timeout=5.0, minimum=2, settle=0.0)  # type: ignore[arg-type]
    assert sorted(nodes.values()) == [0, 1]
    text = coverage_warning(nodes, 10)
    assert text is not None and "only 2 of the plan's 10 clients" in text
    assert "partitions 2, 3, 4, 5, 6, 7, 8, 9 will not train" in text
    assert "num-supernodes=10" in text
    assert coverage_warning({11: 0, 12: 1}, 2) is None


def test_unaggregated_rounds_are_named_for_the_summary(tmp_path: Path) -> None:
    from fedvida.federation.runner import describe_unaggregated, unaggregated_rounds

    log = RunLog(tmp_path)
    for rnd in range(1, 6):
        log.append({"method": "gt_audio", "round": rnd, "aggregated": rnd == 1})
        log.append({"method": "video_only", "round": rnd, "aggregated": True})
    skipped = unaggregated_rounds(log, ["gt_audio", "video_only"])
    assert skipped == {"gt_audio": [2, 3, 4, 5]}
    assert describe_unaggregated(skipped) == "gt_audio rounds 2-5"
    assert describe_unaggregated({"a": [1, 3, 4, 7]}) == "a rounds 1, 3-4, 7"


def test_a_run_whose_rounds_were_not_aggregated_fails_with_their_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A dead client worker (or any fault) can leave every later round unaggregated: the run
    # then ends with the round-1 model; the command must not report it as a success
    from fedvida.data.partition import Plan
    from fedvida.errors import FedvidaError
    from fedvida.federation import runner

    cfg = _cfg(rounds=3)
    cfg.train.runs_dir = tmp_path

    def fake_simulation(config_path: Path, num_clients: int, run_cfg: Config, *a: object,
                        **k: object) -> None:
        log = RunLog(config_path.parent)
        for rnd in (1, 2, 3):
            log.append({"method": "video_only", "round": rnd, "aggregated": rnd == 1,
                        "server": {"top1": 0.5}})

    monkeypatch.setattr(runner, "simulate_config", fake_simulation)
    monkeypatch.setattr(Plan, "load", staticmethod(lambda path: type("P", (), {"num_clients": 4})))
    with pytest.raises(FedvidaError, match=r"rounds not aggregated \(video_only rounds 2-3\)"):
        runner.run_federated(cfg, ["video_only"], "faulty")


def test_an_engine_that_returns_under_a_waiting_server_fails_the_command(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    # the engine returns without raising (e.g. it stopped its workers) while the ServerApp
    # thread still waits: the command must fail, not return as if the run had finished
    import threading

    import flwr.simulation

    from fedvida.errors import FedvidaError
    from fedvida.federation import runner
    from fedvida.federation.rounds import ENGINE_STOPPED, check_engine

    def fake_run_simulation(**kwargs: object) -> None:
        def server() -> None:
            with contextlib.suppress(FedvidaError):
                while True:
                    check_engine()
                    time.sleep(0.05)

        threading.Thread(target=server, name="fake-serverapp").start()

    monkeypatch.setattr(flwr.simulation, "run_simulation", fake_run_simulation)
    with pytest.raises(FedvidaError, match="engine stopped while the server still waited"):
        runner.simulate_config(Path("unused.yaml"), 1, _cfg(ray_num_cpus=1))
    assert not ENGINE_STOPPED.is_set()
    # a ServerApp that finished before the engine returned is a normal end
    monkeypatch.setattr(flwr.simulation, "run_simulation", lambda **kwargs: None)
    runner.simulate_config(Path("unused.yaml"), 1, _cfg(ray_num_cpus=1))
