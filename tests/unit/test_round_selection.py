"""The reported round of a federated run: chosen on the clients' validation top-1, never the test.

`fedvida.reporting.runlog.final_metrics` reads it from the log lines the server writes
(`fedvida.federation.server.validate` scores the last round's model); hand-computed cases.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fed_helpers import LocalGrid, _initial
from flwr.app import Context, Message

from fedvida.federation import records as R
from fedvida.federation.server import validate
from fedvida.reporting.runlog import (
    fill_weight_by_round,
    final_metrics,
    selected_line,
    server_metrics_by_round,
    validation_by_round,
)
from fedvida.training.metrics import FILL_WEIGHTS, best_fill_weight, pool_fill_scores


def _lines(val_next: list[float | None], final_val: float | None, rule: str = "validation",
           evaluated: tuple[int, ...] = (1, 2, 3)) -> list[dict[str, Any]]:
    """Three rounds; round r's test top-1 is r / 10; ``val_next[r - 1]``: round r's clients'
    score of round r - 1's model; ``final_val``: the last round's validation exchange."""
    lines = []
    for rnd in (1, 2, 3):
        train: dict[str, float] = {"train_loss": float(rnd)}
        if val_next[rnd - 1] is not None:
            train["val_top1"] = val_next[rnd - 1]  # type: ignore[assignment]
        line: dict[str, Any] = {
            "method": "generated", "round": rnd, "seconds": 1.0, "bytes_down": 100,
            "bytes_up": 50, "failures": [], "train": train, "select_round": rule,
            "server": {"top1": rnd / 10, "top1_missing": rnd / 20} if rnd in evaluated else {},
        }
        if rnd == 3 and final_val is not None:
            line["validation"] = {"val_top1": final_val, "clients": 4, "bytes_down": 40,
                                  "bytes_up": 8}
        lines.append(line)
    return lines


def test_validation_scores_belong_to_the_model_before_the_round_that_reports_them() -> None:
    assert validation_by_round(_lines([0.2, 0.5, 0.4], 0.45)) == {0: 0.2, 1: 0.5, 2: 0.4,
                                                                   3: 0.45}


def test_the_round_with_the_best_validation_top1_is_reported_with_all_rounds_costs() -> None:
    final = final_metrics(_lines([0.2, 0.5, 0.4], 0.45))
    assert final["selected_round"] == 1 and final["selected_val_top1"] == 0.5
    assert final["top1"] == pytest.approx(0.1) and final["top1_missing"] == pytest.approx(0.05)
    assert final["train_loss"] == 1.0  # the reported round's, not the last round's
    # rounds, bytes and time cover every round run, the validation exchange included
    assert final["rounds"] == 3 and final["seconds"] == 3.0
    assert final["bytes_down"] == 3 * 100 + 40 and final["bytes_up"] == 3 * 50 + 8


def test_a_tie_goes_to_the_later_round_and_unevaluated_rounds_are_not_candidates() -> None:
    assert final_metrics(_lines([0.2, 0.5, 0.4], 0.5))["selected_round"] == 3
    # eval_every = 2: only rounds 2 and 3 have server metrics (3 is the last, always evaluated)
    final = final_metrics(_lines([0.2, 0.9, 0.4], 0.3, evaluated=(2, 3)))
    assert final["selected_round"] == 2  # round 1 scored 0.9 but was never evaluated
    line = selected_line(_lines([0.2, 0.9, 0.4], 0.3, evaluated=(2, 3)))
    assert line is not None and line["round"] == 2


def test_last_rule_old_runs_and_runs_without_validation_report_the_last_round() -> None:
    assert final_metrics(_lines([0.2, 0.9, 0.4], 0.3, rule="last"))["selected_round"] == 3
    old = _lines([0.2, 0.9, 0.4], None)
    for line in old:
        del line["select_round"]
    assert final_metrics(old)["selected_round"] == 3
    # no client had validation clips: nothing scored, the last evaluated round
    assert final_metrics(_lines([None, None, None], None))["selected_round"] == 3
    # a sweep compares the models its checkpoints end with
    assert final_metrics(_lines([0.2, 0.9, 0.4], 0.3), select=False)["selected_round"] == 3
    assert "selected_val_top1" not in final_metrics(_lines([0.2, 0.9, 0.4], 0.3, rule="last"))


def test_the_final_validation_exchange_asks_every_node_and_weights_by_validation_clips() -> None:
    asked: list[dict[str, Any]] = []

    def client(msg: Message, context: Context) -> Message:
        conf = msg.content.config_records[R.CONFIG_KEY]
        asked.append(dict(conf))
        part = int(context.node_config["partition-id"])
        if part == 2:
            raise RuntimeError("no features")  # a failing node is left out, not fatal
        # partition 0: 1 of 2 validation clips right, partition 1: 4 of 4
        metrics = {"val_top1": [0.5, 1.0][part], R.WEIGHT_KEY: [2, 4][part],
                   **_scores({}, {w: [1.0, 4.0][part] * (1 - w) + w for w in FILL_WEIGHTS},
                             [2, 4][part], 1)}
        return Message(R.reply(None, metrics), reply_to=msg)

    grid = LocalGrid({0: client, 1: client, 2: client})
    nodes = dict(zip(grid.node_ids, (0, 1, 2), strict=True))
    out = validate(grid, R.numpy_to_arrays(_initial()), {R.CFG_METHOD: "generated"}, nodes, 10.0)
    assert out["clients"] == 2 and out["val_top1"] == pytest.approx(5 / 6)
    # the fill-weight scores pooled over the answering nodes: (1 - w) 2.5 + w, lowest at w = 1
    assert out["fill_scores"]["val_fill_ce@0"] == pytest.approx(2.5)
    assert out["fill_scores"]["fill_weight"] == 1.0
    assert out["bytes_down"] > 0 and out["bytes_up"] > 0
    assert len(asked) == 3 and all(c[R.CFG_VALIDATE] is True for c in asked)
    assert all(c[R.CFG_METHOD] == "generated" for c in asked)


def test_the_reported_rounds_checkpoint_outlives_keep_checkpoints(tmp_path: Path) -> None:
    from fedvida.federation.checkpoints import list_checkpoints, load_checkpoint, save_checkpoint

    model = {"classifier.w": np.zeros((2, 3), np.float32)}
    for rnd in range(1, 7):  # round 2 is the one chosen on validation; keep the newest 2
        save_checkpoint(tmp_path, rnd, "generated", "fedavg",
                        {k: v + rnd for k, v in model.items()}, {}, keep=2, protect=[2])
    names = [p.name for p in list_checkpoints(tmp_path)]
    assert names == ["round_0002.safetensors", "round_0005.safetensors", "round_0006.safetensors"]
    assert float(load_checkpoint(tmp_path / names[0]).model["classifier.w"][0, 0]) == 2.0
    # without protection the usual pruning
    save_checkpoint(tmp_path, 7, "generated", "fedavg", model, {}, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "round_0006.safetensors", "round_0007.safetensors"]


def _scores(top1: dict[float, float], ce: dict[float, float], examples: int,
            missing: int) -> dict[str, float]:
    """One client's `fedvida.training.local.fill_weight_scores` (weights absent: NaN)."""
    out = {"val-examples": float(examples), "val-missing": float(missing)}
    for w in FILL_WEIGHTS:
        out[f"val_top1@{w:g}"] = top1.get(w, 0.0)
        out[f"val_fill_ce@{w:g}"] = ce.get(w, float("nan"))
    return out


def test_clients_fill_weight_scores_pool_as_one_split_and_the_lowest_cross_entropy_wins() -> None:
    # client a: 4 validation clips, 2 without audio; client b: 6 clips, 1 without audio
    a = _scores({0.0: 0.5, 1.0: 0.25}, {w: 2.0 - w for w in FILL_WEIGHTS}, 4, 2)
    b = _scores({0.0: 1.0, 1.0: 0.5}, {w: 1.0 + 3 * w for w in FILL_WEIGHTS}, 6, 1)
    nothing = _scores({}, {}, 3, 0)  # no clip without audio: its NaN cross-entropy is skipped
    pooled = pool_fill_scores([a, b, nothing, {"val_top1": 0.3}])
    assert pooled is not None
    assert pooled["val-examples"] == 13 and pooled["val-missing"] == 3
    # top-1 weighted by validation clips: (4 * 0.5 + 6 * 1.0 + 3 * 0) / 13
    assert pooled["val_top1@0"] == pytest.approx(8 / 13)
    # cross-entropy weighted by clips without audio: (2 (2 - w) + (1 + 3w)) / 3 = (5 + w) / 3
    for w in FILL_WEIGHTS:
        assert pooled[f"val_fill_ce@{w:g}"] == pytest.approx((5 + w) / 3)
    assert pooled["fill_weight"] == 0.0
    # a tie goes to the smaller weight; no finite score: no weight; no scores at all: None
    assert best_fill_weight({"val_fill_ce@0.5": 1.0, "val_fill_ce@0.25": 1.0}) == 0.25
    assert best_fill_weight(_scores({}, {}, 3, 0)) is None
    assert pool_fill_scores([{"val_top1": 0.3}]) is None


def test_each_rounds_test_metrics_are_taken_at_the_fill_weight_its_validation_chose() -> None:
    lines = _lines([0.2, 0.5, 0.4], 0.45)
    for line in lines:  # test metrics at every weight: top1 = round / 10 + weight / 100
        line["server"]["by_fill_weight"] = {f"{w:g}": {"top1": line["round"] / 10 + w / 100}
                                            for w in FILL_WEIGHTS}
    # the clients of round 2 score round 1's model: weight 0.5 wins with val top-1 0.9 there
    lines[1]["fill_scores"] = {**_scores({0.5: 0.9}, {0.5: 0.1, 1.0: 0.2}, 5, 2),
                               "fill_weight": 0.5}
    lines[2]["fill_scores"] = {**_scores({0.25: 0.3}, {0.25: 0.1}, 5, 2), "fill_weight": 0.25}
    assert fill_weight_by_round(lines) == {1: 0.5, 2: 0.25}
    assert validation_by_round(lines) == {0: 0.2, 1: 0.9, 2: 0.3, 3: 0.45}
    final = final_metrics(lines)
    assert final["selected_round"] == 1 and final["fill_weight"] == 0.5
    assert final["top1"] == pytest.approx(0.1 + 0.005) and "top1_missing" not in final
    assert server_metrics_by_round(lines)[3] == {"top1": 0.3, "top1_missing": 0.15}  # as run
    # the last round's weight comes with the final validation exchange
    lines[2]["validation"]["fill_scores"] = {**_scores({0.0: 0.95}, {0.0: 0.1}, 5, 2),
                                             "fill_weight": 0.0}
    final = final_metrics(lines)
    assert final["selected_round"] == 3 and final["fill_weight"] == 0.0
    assert final["top1"] == pytest.approx(0.3)
