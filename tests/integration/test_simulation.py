"""Federated training in Flower's simulation engine (Ray) on real demo features.

Real pipeline (tiny demo -> plan -> features -> dictionary, see conftest.py), the real
ClientApp/ServerApp, Ray with 2 CPUs. Checks the run folder, byte counts, identical results
after a resume, fault tolerance, the privacy boundary, and that no Ray process survives.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid
from sim_helpers import RecordingGrid, assert_resumed_log, simulate_server

from clients import client_app as fc
from fedvida.config import Config
from fedvida.data.partition import Plan
from fedvida.errors import InputError
from fedvida.federation.checkpoints import checkpoint_dir, load_checkpoint
from fedvida.federation.records import check_reply
from fedvida.federation.runner import run_federated
from fedvida.federation.server import serve
from fedvida.reporting.runlog import RunLog, final_metrics
from fedvida.training.methods import get_method
from fedvida.training.metrics import FILL_WEIGHTS

pytestmark = pytest.mark.slow


def _of_this_environment(proc: psutil.Process, text: str) -> bool:
    """Started from this project's environment: its command line names it, or it inherited the
    PATH the simulation sets (this interpreter's bin first). Other checkouts' Ray processes on
    a shared machine are not this run's leftovers."""
    bindir = str(Path(sys.executable).parent)
    if str(Path(sys.prefix)) in text:
        return True
    try:
        return proc.environ().get("PATH", "").split(os.pathsep)[0] == bindir
    except psutil.Error:
        return False


def ray_leftovers() -> list[str]:
    """Command lines of this environment's Ray processes still running on this machine."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline", "status"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE:  # exited, awaiting its parent
            continue
        text = " ".join([proc.info["name"] or "", *(proc.info["cmdline"] or [])])
        if ("ray::" in text or "raylet" in text or "gcs_server" in text) \
                and _of_this_environment(proc, text):
            found.append(text[:120])
    return found


def _cfg(base: Config, runs: Path, methods: list[str] | None = None, **fed: Any) -> Config:
    """A copy of ``base`` writing runs under ``runs``; ``methods`` -> train.methods, the other
    keywords are federation fields."""
    cfg = base.model_copy(deep=True)
    cfg.train.runs_dir = runs
    if methods is not None:
        cfg.train.methods = methods  # type: ignore[assignment]
    for key, value in fed.items():
        setattr(cfg.federation, key, value)
    return cfg


def test_simulation_writes_a_run_folder_and_resumes_identically(
    fed_pipeline: Config, tmp_path: Path
) -> None:
    # Arrange: 4 clients, half of them per round (seeded sampling), two methods
    cfg = _cfg(fed_pipeline, tmp_path / "runs", fraction_train=0.5)
    # Act
    results = run_federated(cfg, ["video_only", "gt_audio"], "full")
    # Assert: final metrics, one line per method and round, checkpoints, report
    assert list(results) == ["video_only", "gt_audio"]
    for res in results.values():
        assert res["rounds"] == 2 and 0.0 <= res["top1"] <= 1.0 and res["failures"] == 0
    folder = tmp_path / "runs" / "full"
    lines = RunLog(folder).read()
    assert [(ln["method"], ln["round"]) for ln in lines] == [
        ("video_only", 1), ("video_only", 2), ("gt_audio", 1), ("gt_audio", 2)]
    ckpt = load_checkpoint(checkpoint_dir(folder, "gt_audio") / "round_0002.safetensors")
    # a method sends what it trains: video_only the classifier, gt_audio also the audio
    # projection and the tagger; the generator and the prototypes never travel
    trained = {m: load_checkpoint(checkpoint_dir(folder, m) / "round_0002.safetensors").model
               for m in ("video_only", "gt_audio")}
    for method, arrays in trained.items():
        assert {k.split(".", 1)[0] for k in arrays} == set(get_method(method).trains), method
    assert sum(a.nbytes for a in trained["video_only"].values()) \
        < 0.6 * sum(a.nbytes for a in trained["gt_audio"].values())
    for ln in lines:
        assert ln["sampled"] == ln["succeeded"] == 2 and ln["aggregated"]
        assert {"top1", "macro_f1", "top1_with_audio", "top1_without_audio"} <= set(ln["server"])
        assert np.isfinite(ln["train"]["train_loss"])
        # two messages each way, each the method's trained parts (identical arrays, e.g. zero
        # biases, travel once) plus the config and record structure
        model_bytes = sum(a.nbytes for a in trained[ln["method"]].values())
        assert 1.9 * model_bytes < ln["bytes_down"] < 2 * model_bytes + 60_000
        assert 1.9 * model_bytes < ln["bytes_up"] < 2 * model_bytes + 60_000
    assert lines[0]["clients"].keys() == lines[2]["clients"].keys()  # same seeded sampling
    assert (folder / "config.yaml").is_file() and (folder / "plots" / "accuracy.png").is_file()
    report = (folder / "report.md").read_text()
    for method, res in results.items():  # the reported round of the 2 run
        assert f"| {method} | {res['selected_round']} | 2 |" in report
    # the reported round is chosen on the clients' validation top-1: round 1's model scored by
    # round 2's clients before training, round 2's by every client after the last round
    for method in ("video_only", "gt_audio"):
        mlines = [ln for ln in lines if ln["method"] == method]
        assert 0.0 <= mlines[1]["train"]["val_top1"] <= 1.0
        assert mlines[1]["validation"]["clients"] == 4
        val = {1: mlines[1]["train"]["val_top1"], 2: mlines[1]["validation"]["val_top1"]}
        best = max(val, key=lambda r: (val[r], r))
        assert results[method]["selected_round"] == best
        assert results[method]["top1"] == mlines[best - 1]["server"]["top1"]
        assert results[method]["bytes_down"] == sum(ln["bytes_down"] for ln in mlines) \
            + mlines[1]["validation"]["bytes_down"]
    assert ray_leftovers() == []

    # Act: a copy "interrupted" after round 1 of gt_audio, resumed in a fresh simulation
    resumed = tmp_path / "runs" / "resumed"
    shutil.copytree(folder, resumed)
    (checkpoint_dir(resumed, "gt_audio") / "round_0002.safetensors").unlink()
    RunLog(resumed).truncate("gt_audio", 1)
    again = run_federated(cfg, [], "", resume=resumed)
    # Assert: identical model and metrics
    redo = load_checkpoint(checkpoint_dir(resumed, "gt_audio") / "round_0002.safetensors")
    for key, value in ckpt.model.items():
        np.testing.assert_array_equal(redo.model[key], value)
    assert again["gt_audio"]["top1"] == results["gt_audio"]["top1"]
    # every line, not only the last: the resumed log has each (method, round) once, in order,
    # round 1 kept and round 2 rerun with the same clients, losses, bytes and accuracy (a resume
    # that replayed round 1, or ran a round twice, differs here)
    assert_resumed_log(RunLog(resumed).read(), lines, ("gt_audio", 2),
                       len("resumed") - len("full"))
    assert again["gt_audio"]["rounds"] == 2
    assert ray_leftovers() == []



# --- faults and the privacy boundary: the product handlers behind a test ClientApp -------------
faulty_app = ClientApp()


@faulty_app.train()
def _train(msg: Message, context: Context) -> Message:
    def broken(m: Message, c: Context) -> Message:
        where = Path("/srv") / "clients" / "1" / "cache" / "shard_0003.npy"  # a private path
        raise InputError(f"{where}: truncated")

    handler = broken if int(context.node_config["partition-id"]) == 1 else fc.handle_train
    return fc.guarded(handler)(msg, context)


@faulty_app.evaluate()
def _evaluate(msg: Message, context: Context) -> Message:
    return fc.guarded(fc.handle_evaluate)(msg, context)


@faulty_app.query()
def _query(msg: Message, context: Context) -> Message:
    return fc.guarded(fc.handle_query)(msg, context)


def test_faulty_client_no_audio_client_and_privacy_boundary(
    fed_pipeline: Config, tmp_path: Path
) -> None:
    # Arrange: client 0 has no audio at all, client 1 fails; clients also evaluate
    cfg = _cfg(fed_pipeline, tmp_path / "runs", rounds=1, fraction_evaluate=1.0,
               methods=["generated"])
    cfg.name = "faults"
    plan = Plan.load(fed_pipeline.partition.plan)
    for clip in plan.clients[0]:
        clip.withheld = True
    cfg.partition.plan = tmp_path / "plan.json"
    plan.save(cfg.partition.plan)
    recording: list[RecordingGrid] = []

    def main(grid: Grid) -> None:
        recording.append(RecordingGrid(grid))
        serve(recording[0], cfg)  # type: ignore[arg-type]

    # Act
    simulate_server(main, cfg, faulty_app)
    # Assert: the round went on without client 1; client 0 trained without any audio
    (line,) = RunLog(tmp_path / "runs" / "faults").read()
    assert line["aggregated"] and sorted(line["clients"]) == ["0", "2", "3"]
    (failure,) = line["failures"]
    assert failure["partition"] == 1 and failure["reason"] == "InputError: <path>: truncated"
    assert np.isfinite(line["clients"]["0"]["train_loss"])
    assert line["client_eval"] and line["server"]
    # Assert: every message a client sent holds shared model arrays and numbers only
    grid = recording[0]
    broadcast = next(m for m in grid.sent if m.metadata.message_type == "train")
    shapes = {k: a.shape for k, a in broadcast.content["arrays"].items()}
    # query, train, evaluate and (federation.select_round) the last round's validation replies
    assert len(grid.received) == 4 + 4 + 4 + 4
    assert line["validation"]["clients"] == 4 and 0 <= line["validation"]["val_top1"] <= 1
    # the fill-in weight is chosen per round on the clients' pooled validation scores (the
    # initial model's from round 1's trainers, round 1's from the validation exchange), and the
    # run reports the test metrics at the weight chosen for its round
    assert line["fill_scores"]["val-examples"] > 0  # 3 trainers (client 1 failed)
    chosen = line["validation"]["fill_scores"]["fill_weight"]
    assert chosen in FILL_WEIGHTS and line["validation"]["fill_scores"]["val-missing"] > 0
    assert sorted(line["server"]["by_fill_weight"]) == sorted(f"{w:g}" for w in FILL_WEIGHTS)
    final = final_metrics([line])
    assert final["fill_weight"] == chosen
    assert final["top1"] == line["server"]["by_fill_weight"][f"{chosen:g}"]["top1"]
    assert final["selected_val_top1"] == line["validation"]["fill_scores"][f"val_top1@{chosen:g}"]
    for reply in grid.received:
        if reply.has_error():  # in simulation Ray adds a traceback of code, not of data
            assert "/srv/clients" not in reply.error.reason
            continue
        assert check_reply(reply.content, shapes) == []
        for record in reply.content.array_records.values():
            assert {k: a.shape for k, a in record.items()} == shapes
        text = json.dumps({k: dict(v) for k, v in reply.content.metric_records.items()})
        assert "/" not in text
    assert ray_leftovers() == []


# --- a client worker dies (what an OOM kill does) ------------------------------------------------
dying_app = ClientApp()
KILL_AT = (1, 2)  # (partition, round): this client's Ray actor process is killed mid-message


@dying_app.train()
def _dying_train(msg: Message, context: Context) -> Message:
    import os
    import signal

    rnd = int(msg.content.config_records["config"]["server-round"])  # type: ignore[arg-type]
    if (int(context.node_config["partition-id"]), rnd) == KILL_AT:
        os.kill(os.getpid(), signal.SIGKILL)
    return fc.guarded(fc.handle_train)(msg, context)


@dying_app.query()
def _dying_query(msg: Message, context: Context) -> Message:
    return fc.guarded(fc.handle_query)(msg, context)


def test_a_killed_client_actor_is_replaced_and_later_rounds_aggregate(
    fed_pipeline: Config, tmp_path: Path
) -> None:
    # Arrange: 4 clients on 2 Ray actors, all train every round; partition 1's actor is killed
    # in round 2 (Flower 1.39 put the dead actor back into its pool: ActorDiedError every round)
    cfg = _cfg(fed_pipeline, tmp_path / "runs", rounds=3, fraction_train=1.0,
               methods=["video_only"])
    cfg.name = "dying"

    def main(grid: Grid) -> None:
        serve(grid, cfg)

    # Act
    simulate_server(main, cfg, dying_app)
    # Assert: round 2 lost only the killed client and aggregated the other three; round 3 ran
    # on a fresh actor with every client
    lines = RunLog(tmp_path / "runs" / "dying").read()
    assert [ln["round"] for ln in lines] == [1, 2, 3]
    assert lines[0]["aggregated"] and lines[0]["failures"] == []
    assert [f["partition"] for f in lines[1]["failures"]] == [1]
    assert lines[1]["aggregated"] and sorted(lines[1]["clients"]) == ["0", "2", "3"]
    assert lines[2]["aggregated"] and lines[2]["failures"] == []
    assert lines[2]["succeeded"] == 4
    assert ray_leftovers() == []


def test_federated_models_learn_and_real_audio_helps(
    learnable_pipeline: Config, tmp_path: Path
) -> None:
    # Arrange: 2 clients, 3 rounds of 3 local epochs; 4 classes (chance 0.25) in two visual
    # pairs that the audio tells apart
    cfg = _cfg(learnable_pipeline, tmp_path / "runs", rounds=3, local_epochs=3)
    cfg.train.lr = 3e-3
    # Act
    results = run_federated(cfg, ["video_only", "gt_audio"], "learn")
    lines = RunLog(tmp_path / "runs" / "learn").read()
    video, audio = results["video_only"], results["gt_audio"]
    # Assert: the global models learned (16 test clips, never trained on; measured: gt_audio
    # 0.688, video_only 0.375, i.e. 11 and 6 clips right where chance gets 4)
    assert audio["top1"] >= 0.5 and video["top1"] > 0.25
    # Assert: with the real audio there (8 test clips), the audio model tells the visual pairs
    # apart (measured 1.0 against video_only's 0.375)
    assert audio["top1_with_audio"] >= 0.75
    assert audio["top1_with_audio"] >= video["top1_with_audio"] + 0.25
    # and training lowered the loss from round 1 to the last
    for method in ("video_only", "gt_audio"):
        losses = [ln["train"]["train_loss"] for ln in lines if ln["method"] == method]
        assert losses[-1] < 0.8 * losses[0]
