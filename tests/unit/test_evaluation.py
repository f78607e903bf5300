"""The oracle-gap evaluation, the source indicator, the prototype artifact, the validation split
and the linear probe (issue: generated audio must recover accuracy where audio is missing)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict
from small_config import SmallConfig

from fedvida.features.cache import FeatureSet
from fedvida.federation.flower_compat import aggregate_arrayrecords
from fedvida.models.classifier import ABSENT, GENERATED, REAL, ActionClassifier
from fedvida.models.container import FeatureDims, build_model
from fedvida.models.heads import ClassPrototypes
from fedvida.training.data import prepare, split_validation
from fedvida.training.evaluation import gap_closed, gap_row, paired_bootstrap, seed_summary
from fedvida.training.local import Predictions, missing_metrics, predict, train_local
from fedvida.training.methods import METHOD_SPECS, MethodContext, method_forward
from fedvida.training.probe import linear_probe

T, D, DA, K, C = 6, 16, 12, 527, 3


def clips(n: int, seed: int, withheld: int = 0, video_signal: float = 0.0) -> FeatureSet:
    """N small clips of C classes: the audio carries the label; the first `withheld` clips have
    their audio withheld (zeroed, reason "withheld"); the video carries `video_signal`."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n, dtype=np.int64) % C
    aproto = np.random.default_rng(1).normal(size=(C, DA)).astype(np.float32)
    vproto = np.random.default_rng(2).normal(size=(C, D)).astype(np.float32)
    audio = (aproto[labels][:, None] + 0.3 * rng.normal(size=(n, T, DA))).astype(np.float32)
    rgb = (rng.normal(size=(n, T, D)) + video_signal * vproto[labels][:, None]).astype(np.float32)
    present = np.ones(n, bool)
    present[:withheld] = False
    audio[~present] = 0.0
    return FeatureSet(
        relpaths=[f"validation/c{y}/clip_{seed}_{i}.mp4" for i, y in enumerate(labels)],
        labels=labels, rgb=rgb, flow=rng.normal(size=(n, T, D)).astype(np.float32),
        audio=audio, audio_present=present,
        audio_reason=["withheld" if not p else "" for p in present],
        tags=np.zeros((n, K), np.float32), rep_steps=np.zeros((n, T), bool),
        captions=[""] * n)


# on top of configs/smoke.yaml (the `small_config` fixture): a smaller model still
SMALLER = ("model.hidden=16", "model.visual_dim=16", "model.tagger_hidden=16", "model.audio_dim=8")


def test_missing_metrics_and_gap_closed_on_a_hand_computed_case() -> None:
    # Arrange: 4 clips, clips 0-2 have their audio withheld; one-hot logits make predictions exact
    eye = np.eye(C, dtype=np.float32)
    labels = np.array([0, 1, 2, 0])
    p = Predictions(
        logits=eye[[0, 1, 0, 0]],  # fill-in: right on clips 0, 1 (2 of 3 missing clips)
        labels=labels, present=np.array([False, False, False, True]),
        used=np.ones(4, bool),
        video_logits=eye[[0, 0, 0, 0]],  # video only: right on clip 0 (1 of 3)
        missing=np.array([True, True, True, False]),
        oracle_logits=eye[[0, 1, 2, 1]],  # real audio back: 3 of 3
    )
    # Act
    m = missing_metrics(p, C)
    row = gap_row("generated", {
        "generated": {"top1_missing": m["top1_missing"], "top1_with_audio": 0.5},
        "video_only": {"top1_missing": m["top1_missing_video"]},
        "gt_audio": {"top1_missing_oracle": m["top1_missing_oracle"], "top1_with_audio": 0.75},
    })
    # Assert: (2/3 - 1/3) / (3/3 - 1/3) = 0.5
    assert m["n_missing"] == 3
    assert m["top1_missing"] == pytest.approx(2 / 3)
    assert m["top1_missing_video"] == pytest.approx(1 / 3)
    assert m["top1_missing_oracle"] == pytest.approx(1.0)
    assert m["f1_missing_oracle"] == pytest.approx(1.0)
    assert m["f1_missing"] == pytest.approx((2 / 3 + 1 + 0) / 3)  # F1 of classes 0, 1, 2
    assert row["gap_closed"] == pytest.approx(0.5)
    assert row["delta_with_audio"] == pytest.approx(-0.25)
    assert np.isnan(gap_closed(0.5, 0.4, 0.4))  # no gap: undefined, not a division by zero


def test_predict_gives_the_oracle_view_only_to_the_reference(small_config: SmallConfig) -> None:
    # Arrange: the same clips with and without their withheld audio
    cfg = small_config(*SMALLER)
    held = clips(12, 0, withheld=6)
    oracle = clips(12, 0, withheld=0)
    model = build_model(cfg, FeatureDims.from_features(held, C))
    # Act
    p = predict(model, held, cfg, None, method="gt_audio", oracle=oracle)
    q = predict(model, held, cfg, None, method="gt_audio")
    # Assert: the method's own logits do not depend on the oracle; the oracle logits do
    assert np.array_equal(p.logits, q.logits)
    assert p.missing is not None and p.missing.sum() == 6
    assert p.oracle_logits is not None and not np.allclose(p.oracle_logits[:6], p.logits[:6])
    assert np.allclose(p.oracle_logits[6:], p.logits[6:], atol=1e-6)  # real audio both ways


@pytest.mark.parametrize("method", ["video_only", "gt_audio", "generated", "prototype"])
def test_the_classifier_is_told_the_source_of_its_audio(
    method: str, small_config: SmallConfig
) -> None:
    # Arrange: clips 0-3 lack real audio
    cfg = small_config(*SMALLER)
    fs = clips(8, 0, withheld=4)
    model = build_model(cfg, FeatureDims.from_features(fs, C))
    batch = prepare(fs, cfg, None, with_condition=False)
    ctx = MethodContext(cfg=cfg, spec=METHOD_SPECS[method])
    dropped = torch.tensor([False] * 6 + [True, True])
    # Act
    fwd = method_forward(model, batch, ctx, training=False)
    fwd_drop = method_forward(model, batch, ctx, training=True, dropped=dropped)
    # Assert
    spec = METHOD_SPECS[method]
    fill = GENERATED if spec.fills else ABSENT
    real = REAL if spec.real_audio else ABSENT
    assert fwd.source is not None and fwd_drop.source is not None
    assert fwd.source.tolist() == [fill] * 4 + [real] * 4
    assert fwd_drop.source.tolist() == [fill] * 4 + [real] * 2 + [fill] * 2  # treated as missing


def test_source_indicator_is_a_one_hot_that_changes_the_output() -> None:
    # Arrange
    torch.manual_seed(0)
    clf = ActionClassifier(2 * D, 8, 4, 8, C, 0.0, source_indicator=True).eval()
    flag = ActionClassifier(2 * D, 8, 4, 8, C, 0.0, source_indicator=False)
    visual, audio = torch.randn(2, T, 2 * D), torch.randn(2, T, 4)
    # Act
    real = clf(visual, audio, torch.tensor([REAL, REAL]))
    gen = clf(visual, audio, torch.tensor([GENERATED, GENERATED]))
    # Assert: real and generated audio are told apart; the old flag model cannot
    assert clf.source_features(torch.tensor([0, 1, 2]), torch.float32).tolist() == \
        np.eye(3).tolist()
    assert not torch.allclose(real, gen)
    assert flag.source_features(torch.tensor([REAL, GENERATED]), torch.float32).tolist() == \
        [[1.0], [1.0]]
    assert clf.lstm.input_size == flag.lstm.input_size + 2


def test_prototype_artifact_averages_to_the_count_weighted_class_means() -> None:
    # Arrange: two clients with different numbers of clips per class
    rng = np.random.default_rng(0)
    a_audio, a_labels = torch.tensor(rng.normal(size=(5, 4)), dtype=torch.float32), \
        torch.tensor([0, 0, 0, 1, 2])
    b_audio, b_labels = torch.tensor(rng.normal(size=(3, 4)), dtype=torch.float32), \
        torch.tensor([0, 1, 1])
    na, nb = 9, 4  # training clips of each client (with or without audio)
    pa, pb = ClassPrototypes(C, 4), ClassPrototypes(C, 4)
    pa.update(a_audio, a_labels, na)
    pb.update(b_audio, b_labels, nb)
    replies = [RecordDict({"arrays": ArrayRecord({k: Array(v.numpy()) for k, v in
                                                 p.state_dict().items()}),
                           "metrics": MetricRecord({"num-examples": n})})
               for p, n in ((pa, na), (pb, nb))]
    # Act: Flower's FedAvg aggregation, weighted by num-examples
    agg = aggregate_arrayrecords(replies, "num-examples")
    merged = ClassPrototypes(C, 4)
    merged.load_state_dict({k: torch.from_numpy(a.numpy()) for k, a in agg.items()})
    # Assert: exactly the per-class mean over both clients' clips
    audio, labels = torch.cat([a_audio, b_audio]), torch.cat([a_labels, b_labels])
    expected = torch.stack([audio[labels == c].mean(dim=0) for c in range(C)])
    assert torch.allclose(merged.means(), expected, atol=1e-6)


def test_prototype_fill_mixes_class_means_by_probability() -> None:
    protos = ClassPrototypes(C, 2)
    protos.update(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1]), 2)
    out = protos.fill(torch.tensor([[0.25, 0.75, 0.0]]), steps=3)
    assert out.shape == (1, 3, 2)
    assert torch.allclose(out[0, 0], torch.tensor([0.25, 0.75]))


def test_validation_split_is_seeded_disjoint_and_never_holds_test_clips() -> None:
    # Arrange
    fs = clips(20, 3)
    test = clips(10, 4)
    # Act
    train, val = split_validation(fs, 0.2, seed=0, partition=3)
    again, val2 = split_validation(fs, 0.2, seed=0, partition=3)
    _, other = split_validation(fs, 0.2, seed=0, partition=4)
    # Assert
    assert len(val.relpaths) == 4 and len(train.relpaths) == 16
    assert set(train.relpaths).isdisjoint(val.relpaths)
    assert set(train.relpaths) | set(val.relpaths) == set(fs.relpaths)
    assert not set(val.relpaths) & set(test.relpaths)
    assert val.relpaths == val2.relpaths and train.relpaths == again.relpaths
    assert other.relpaths != val.relpaths  # per client
    i = fs.relpaths.index(val.relpaths[0])
    assert np.array_equal(val.rgb[0], fs.rgb[i]) and val.labels[0] == fs.labels[i]
    assert len(split_validation(clips(1, 0), 0.5, 0, 0)[1].relpaths) == 0


def test_early_stopping_keeps_the_best_validation_epoch(small_config: SmallConfig) -> None:
    cfg = small_config(*SMALLER)
    fs, val = clips(24, 0, video_signal=1.0), clips(12, 1, video_signal=1.0)
    model = build_model(cfg, FeatureDims.from_features(fs, C))
    seen: list[float] = []
    out = train_local(model, fs, cfg, None, method="video_only", epochs=4, seed=0, val=val,
                      on_epoch=lambda e, m: seen.append(m["val_top1"]))
    assert out["val_top1"] == max(seen)
    assert out["best_epoch"] == 1 + seen.index(max(seen))
    final = predict(model, val, cfg, None, method="video_only")
    assert (final.logits.argmax(1) == final.labels).mean() == pytest.approx(max(seen))


def test_paired_bootstrap_and_seed_summary() -> None:
    a = np.array([[1, 1, 1, 0, 1, 1, 1, 1]])
    b = np.array([[0, 1, 0, 0, 1, 0, 1, 0]])
    diff, lo, hi = paired_bootstrap(a, b, n_boot=2000)
    assert diff == pytest.approx(0.5)
    assert lo <= diff <= hi and lo > 0
    assert paired_bootstrap(a, a)[1:] == (0.0, 0.0)
    with pytest.raises(ValueError):
        paired_bootstrap(a, b[:, :3])
    res = {"video_only": {"top1_missing": 0.5}, "gt_audio": {"top1_missing_oracle": 1.0},
           "generated": {"top1_missing": 0.75}}
    ok = {"video_only": np.array([1, 0, -1]), "generated": np.array([1, 1, -1])}
    rows = seed_summary([res, res], [ok, ok], ["generated"])
    assert rows[0]["gap_closed_mean"] == pytest.approx(0.5)
    assert rows[0]["diff"] == pytest.approx(0.5)


def test_linear_probe_learns_the_video_signal_and_scores_missing_clips() -> None:
    train, val = clips(60, 0, video_signal=2.0), clips(15, 1, video_signal=2.0)
    test = clips(30, 2, withheld=10, video_signal=2.0)
    res = linear_probe(train, val, test, C)
    assert res.metrics["top1"] > 0.8
    assert res.metrics["n_missing"] == 10
    assert (res.correct[:10] >= 0).all() and (res.correct[10:] == -1).all()


def test_central_choices_use_the_validation_split_only(small_config: SmallConfig) -> None:
    """The fill-in weight (lowest validation cross-entropy on clips without audio) and the
    modality-dropout rate (best validation top-1 over ``train.modality_dropout_grid``) are
    chosen on validation clips; the test clips' labels change nothing."""
    from fedvida.training.central import CentralData, choose_fill_weight, train_method
    from fedvida.training.local import fill_weight_scores
    from fedvida.training.metrics import FILL_WEIGHTS

    cfg = small_config(*SMALLER, "train.epochs=2", "model.fusion=late",
                       "train.modality_dropout_grid=[0.5, 0.0]")
    train, val = clips(24, 0, withheld=8, video_signal=1.0), clips(12, 1, withheld=6)
    test = clips(12, 2, withheld=6)
    data = CentralData(train=train, test=test, classes=[f"c{i}" for i in range(C)],
                       dictionary=None, val=val)
    res = train_method(cfg, "prototype", data)
    # Assert: every rate was tried, the best validation top-1 kept (ties: the lower rate)
    tried = {r: res.train[f"val_top1@dropout={r:g}"] for r in (0.0, 0.5)}
    best = max(tried.values())
    assert res.train["modality_dropout"] == min(r for r, v in tried.items() if v == best)
    assert res.train["final_val_top1"] == best
    # the fill-in weight is the lowest validation cross-entropy over the candidates
    assert res.model is not None
    scores = fill_weight_scores(res.model, val, cfg, None, "prototype")
    ces = {w: scores[f"val_fill_ce@{w:g}"] for w in FILL_WEIGHTS}
    assert res.train["fill_weight"] == min(FILL_WEIGHTS, key=lambda w: (ces[w], w))
    assert float(res.model.classifier.fill_weight) == res.train["fill_weight"]
    assert scores["val-missing"] == 6
    # a method without real audio has nothing to drop: one model, no rate reported
    assert "modality_dropout" not in train_method(cfg, "video_only", data).train
    # the test split chooses nothing: other test labels, the same choices
    flipped = clips(12, 2, withheld=6)
    flipped.labels = (flipped.labels + 1) % C
    again = train_method(cfg, "prototype", CentralData(
        train=train, test=flipped, classes=data.classes, dictionary=None, val=val))
    assert again.train == res.train
    # a fixed train.fill_weight is used as given
    fixed = small_config(*SMALLER, "model.fusion=late", "train.fill_weight=0.25")
    assert choose_fill_weight(res.model, fixed, data, "prototype") == 0.25
