"""The methods, trained and evaluated on small synthetic FeatureSets.

The synthetic clips have realistic shapes (T=18, D=1280, Da=1024, 527 tags). Unless a test says
otherwise, the video is pure noise and the audio carries the label, so a method can beat chance
only through audio.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from small_config import SmallConfig

from fedvida.config import METHODS, Config, load_config
from fedvida.features.cache import FeatureSet
from fedvida.models.container import FeatureDims, build_model, select_state
from fedvida.semantics import SemanticDictionary, build_dictionary, load_sentence_embedder
from fedvida.training.central import CentralData, run_central
from fedvida.training.data import concat_features, prepare
from fedvida.training.local import evaluate, predict, train_local
from fedvida.training.methods import METHOD_SPECS, MethodContext, method_forward
from fedvida.training.metrics import confusion_matrix, macro_f1, topk_accuracy

CLASSES = ["barking", "clapping", "drumming", "raining"]
CAPTIONS = ["a dog barking in a yard", "people clapping hands", "a man playing drums",
            "rain falling on a window"]
T, D, DA, K = 18, 1280, 1024, 527
pytestmark = pytest.mark.slow  # the dictionary fixture loads the real sentence model


def synthetic(
    n: int, seed: int, dictionary: SemanticDictionary, present_rate: float = 0.5,
    video_signal: float = 0.0,
) -> FeatureSet:
    """N clips of 4 classes: audio = class prototype + noise; tags = the top dictionary label."""
    rng = np.random.default_rng(seed)
    protos = np.random.default_rng(123).normal(size=(len(CLASSES), DA)).astype(np.float32)
    vprotos = np.random.default_rng(321).normal(size=(len(CLASSES), D)).astype(np.float32)
    labels = np.arange(n, dtype=np.int64) % len(CLASSES)
    rng.shuffle(labels)
    rgb = rng.normal(size=(n, T, D)).astype(np.float32) + video_signal * vprotos[labels][:, None]
    flow = rng.normal(size=(n, T, D)).astype(np.float32)
    audio = (protos[labels][:, None, :] + 0.5 * rng.normal(size=(n, T, DA))).astype(np.float32)
    present = rng.random(n) < present_rate
    audio[~present] = 0.0
    tags = np.zeros((n, K), dtype=np.float32)
    top = np.asarray(dictionary.topk_indices)[dictionary.indices(CLASSES), 0]  # (C,)
    tags[np.arange(n), top[labels]] = 0.9
    tags[~present] = 0.0
    rep = rng.random((n, T)) < 0.2
    return FeatureSet(
        relpaths=[f"training/{CLASSES[y]}/clip_{seed}_{i}.mp4" for i, y in enumerate(labels)],
        labels=labels,
        rgb=rgb,
        flow=flow,
        audio=audio,
        audio_present=present,
        audio_reason=["" if p else "withheld" for p in present],
        tags=tags,
        rep_steps=rep,
        captions=[CAPTIONS[y] for y in labels],
    )


@pytest.fixture(scope="module")
def dictionary(tmp_path_factory: pytest.TempPathFactory) -> SemanticDictionary:
    embedder = load_sentence_embedder("all-MiniLM-L6-v2")
    return build_dictionary(
        CLASSES, tmp_path_factory.mktemp("dict") / "dictionary", embedder=embedder,
        action_template="a video of someone {action}", audio_template="the sound of {label}",
    )


@pytest.fixture(scope="module")
def train_fs(dictionary: SemanticDictionary) -> FeatureSet:
    return synthetic(96, 0, dictionary)


@pytest.fixture(scope="module")
def test_fs(dictionary: SemanticDictionary) -> FeatureSet:
    return synthetic(48, 1, dictionary)


# on top of configs/smoke.yaml (the `small_config` fixture)
SMALL = ("model.tagger_hidden=32", "train.batch_size=16", "train.svdmap_threshold=0.5")


def dims(fs: FeatureSet) -> FeatureDims:
    return FeatureDims.from_features(fs, len(CLASSES))


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_without_nan(
    method: str, train_fs: FeatureSet, test_fs: FeatureSet, dictionary: SemanticDictionary,
    small_config: SmallConfig,
) -> None:
    # Arrange
    cfg = small_config(*SMALL)
    model = build_model(cfg, dims(train_fs))
    # Act
    out = train_local(model, train_fs, cfg, dictionary, method=method, epochs=1, seed=0,
                      class_names=CLASSES)
    metrics = evaluate(model, test_fs, cfg, dictionary, method=method, class_names=CLASSES)
    # Assert
    assert out["num-examples"] == len(train_fs.labels)
    assert all(np.isfinite(v) for v in out.values())
    assert all(np.isfinite(v) for v in metrics.values())
    assert all(torch.isfinite(p).all() for p in model.parameters())
    spec = METHOD_SPECS[method]
    assert ("gen_loss" in out) == spec.generates
    assert ("gen_cos" in metrics) == spec.generates
    assert ("svdmap_retention" in metrics) == spec.filtered
    assert 0.0 <= metrics["top1"] <= 1.0
    assert metrics["num-examples"] == len(test_fs.labels)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_forward_backward_shapes(
    method: str, train_fs: FeatureSet, dictionary: SemanticDictionary, small_config: SmallConfig
) -> None:
    cfg = small_config(*SMALL)
    model = build_model(cfg, dims(train_fs))
    spec = METHOD_SPECS[method]
    rows = dictionary.indices(CLASSES)
    batch = prepare(train_fs, cfg, dictionary, with_condition=spec.conditioned).take(
        torch.arange(8)
    )
    ctx = MethodContext(cfg=cfg, spec=spec, dictionary=dictionary, rows=rows)
    fwd = method_forward(model, batch, ctx, training=True, noise=torch.randn(8, T, 16))
    fwd.logits.sum().backward()
    assert fwd.logits.shape == (8, len(CLASSES))
    assert fwd.real.shape == (8, T, 128)
    assert (fwd.generated is not None) == spec.generates
    grads = [p.grad for p in model.classifier.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    if method == "video_only":
        assert not fwd.used.any()
    if method == "gt_audio":
        assert torch.equal(fwd.used, batch.present)
    if method in ("generated", "cafmap"):
        assert fwd.used.all()


def test_gt_audio_beats_chance_when_audio_carries_the_label(
    train_fs: FeatureSet, test_fs: FeatureSet, small_config: SmallConfig
) -> None:
    # Arrange
    cfg = small_config(*SMALL)
    results = {}
    # Act
    for method in ("video_only", "gt_audio"):
        model = build_model(cfg, dims(train_fs))
        train_local(model, train_fs, cfg, None, epochs=12, seed=0, method=method)
        results[method] = evaluate(model, test_fs, cfg, None, method=method)
    # Assert: chance is 0.25; only the clips with real audio can be recognised
    assert results["gt_audio"]["top1_with_audio"] >= 0.8
    assert results["gt_audio"]["top1_with_audio"] > results["video_only"]["top1_with_audio"] + 0.3
    assert results["video_only"]["top1"] < 0.5


def test_generated_audio_recovers_the_label_when_video_predicts_audio(
    dictionary: SemanticDictionary, small_config: SmallConfig
) -> None:
    # Arrange: the video weakly carries the label, so the generator can learn audio from it
    cfg = small_config(*SMALL)
    tr = synthetic(96, 2, dictionary, video_signal=0.2)
    te = synthetic(48, 3, dictionary, video_signal=0.2)
    model = build_model(cfg, dims(tr))
    # Act
    out = train_local(model, tr, cfg, None, epochs=12, seed=0, method="generated")
    metrics = evaluate(model, te, cfg, None, method="generated")
    # Assert: the generator output resembles the real projected audio
    assert out["gen_cos"] > 0.5
    assert metrics["gen_cos"] > 0.5
    assert metrics["top1_without_audio"] > 0.5


def test_same_seed_same_numbers(
    train_fs: FeatureSet, dictionary: SemanticDictionary, small_config: SmallConfig
) -> None:
    cfg = small_config(*SMALL)
    runs = []
    for seed in (0, 0, 1):
        model = build_model(cfg, dims(train_fs))
        out = train_local(model, train_fs, cfg, dictionary, method="svdmap", epochs=2,
                          seed=seed, class_names=CLASSES)
        runs.append((out, select_state(model, ["generator", "classifier"])))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(v, runs[1][1][k]) for k, v in runs[0][1].items())
    assert not all(torch.equal(v, runs[2][1][k]) for k, v in runs[0][1].items())


def test_svdmap_never_reads_the_test_labels(
    train_fs: FeatureSet, test_fs: FeatureSet, dictionary: SemanticDictionary,
    small_config: SmallConfig,
) -> None:
    # Arrange: a trained SVDMap model; the test set with its labels permuted
    cfg = small_config(*SMALL, "train.svdmap_threshold=0.3")
    model = build_model(cfg, dims(train_fs))
    train_local(model, train_fs, cfg, dictionary, method="svdmap", epochs=4, seed=0,
                class_names=CLASSES)
    shuffled = replace(test_fs, labels=np.random.default_rng(5).permutation(test_fs.labels))
    # Act
    a = predict(model, test_fs, cfg, dictionary, method="svdmap", class_names=CLASSES)
    b = predict(model, shuffled, cfg, dictionary, method="svdmap", class_names=CLASSES)
    # Assert: predictions, retention mask and agreement do not change
    assert a.agreement is not None and b.agreement is not None
    np.testing.assert_array_equal(a.logits, b.logits)
    np.testing.assert_array_equal(a.used, b.used)
    np.testing.assert_array_equal(a.agreement, b.agreement)
    for thr in cfg.train.svdmap_sweep:
        np.testing.assert_array_equal(a.sweep[thr][1], b.sweep[thr][1])
    assert not np.array_equal(a.labels, b.labels)


def test_svdmap_threshold_controls_retention(
    train_fs: FeatureSet, test_fs: FeatureSet, dictionary: SemanticDictionary,
    small_config: SmallConfig,
) -> None:
    cfg = small_config(*SMALL, "train.svdmap_sweep=[-1.0, 0.5, 1.0]")
    model = build_model(cfg, dims(train_fs))
    train_local(model, train_fs, cfg, dictionary, method="svdmap", epochs=4, seed=0,
                class_names=CLASSES)
    m = evaluate(model, test_fs, cfg, dictionary, method="svdmap", class_names=CLASSES)
    assert m["svdmap_retention@-1"] == 1.0
    assert m["svdmap_retention@-1"] >= m["svdmap_retention@0.5"] >= m["svdmap_retention@1"]


@pytest.mark.parametrize("mode", ["mixed", "real", "generated"])
def test_classifier_audio_modes(
    mode: str, train_fs: FeatureSet, small_config: SmallConfig
) -> None:
    cfg = small_config(*SMALL, f"train.classifier_audio={mode}")
    model = build_model(cfg, dims(train_fs))
    batch = prepare(train_fs, cfg, None, with_condition=False).take(torch.arange(16))
    ctx = MethodContext(cfg=cfg, spec=METHOD_SPECS["generated"])
    train = method_forward(model, batch, ctx, training=True)
    test = method_forward(model, batch, ctx, training=False)
    expected = {"mixed": torch.ones(16, dtype=torch.bool), "real": batch.present,
                "generated": torch.ones(16, dtype=torch.bool)}[mode]
    assert torch.equal(train.used, expected)
    assert test.used.all()  # evaluation always fills missing audio with generated audio


def test_fedprox_keeps_weights_near_the_reference(
    train_fs: FeatureSet, small_config: SmallConfig
) -> None:
    drift = {}
    for mu in (0.0, 100.0):
        cfg = small_config(*SMALL, f"federation.proximal_mu={mu}")
        model = build_model(cfg, dims(train_fs))
        ref = select_state(model, ["classifier"])
        out = train_local(model, train_fs, cfg, None, method="gt_audio", epochs=2, seed=0,
                          proximal_to=ref)
        drift[mu] = sum(float((p - ref[k]).pow(2).sum())
                        for k, p in model.state_dict().items() if k in ref)
        assert ("prox_loss" in out) == (mu > 0)
    assert drift[100.0] < 0.5 * drift[0.0]


def test_concat_features_pools_clients(train_fs: FeatureSet, test_fs: FeatureSet) -> None:
    pooled = concat_features([train_fs, test_fs])
    assert len(pooled.labels) == len(train_fs.labels) + len(test_fs.labels)
    assert pooled.rgb.shape == (len(pooled.labels), T, D)
    assert pooled.captions[: len(train_fs.captions)] == train_fs.captions


def test_central_run_writes_a_complete_run_folder(
    tmp_path: Path, train_fs: FeatureSet, test_fs: FeatureSet, dictionary: SemanticDictionary,
    small_config: SmallConfig,
) -> None:
    cfg = small_config(*SMALL, "train.epochs=1", f"train.runs_dir={tmp_path}")
    data = CentralData(train=train_fs, test=test_fs, classes=CLASSES, dictionary=dictionary)
    results, folder = run_central(cfg, ["video_only", "svdmap", "cafmap"], data=data)
    assert folder is not None
    names = {p.name for p in folder.iterdir()}
    assert {"config.yaml", "metrics.json", "metrics.csv", "comparison.png", "confusion.png",
            "svdmap_sweep.png", "model-video_only.safetensors", "model-svdmap.safetensors",
            "model-cafmap.safetensors", "missing_audio.md", "missing_audio.png"} <= names
    assert [r.method for r in results] == ["video_only", "svdmap", "cafmap", "linear_probe"]
    assert results[-1].model is None and "top1" in results[-1].test
    assert results[0].confusion.sum() == len(test_fs.labels)
    assert load_config(folder / "config.yaml") == cfg


def test_metric_helpers_on_known_values() -> None:
    labels = np.array([0, 0, 1, 2])
    preds = np.array([0, 1, 1, 2])
    cm = confusion_matrix(labels, preds, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
    # F1: class0 2*1/(2+1)=0.667, class1 2*1/(1+2)=0.667, class2 1.0
    assert macro_f1(labels, preds, 3) == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    logits = np.array([[3.0, 2.0, 1.0], [1.0, 3.0, 2.0]])
    assert topk_accuracy(logits, np.array([1, 2]), 1) == 0.0
    assert topk_accuracy(logits, np.array([1, 2]), 2) == 1.0


@pytest.mark.parametrize("method", ["svdmap", "cafmap"])
def test_semantic_methods_without_a_dictionary_fail_in_one_line(
    method: str, train_fs: FeatureSet, small_config: SmallConfig
) -> None:
    from fedvida.errors import FedvidaError

    cfg = small_config(*SMALL)
    model = build_model(cfg, dims(train_fs))
    with pytest.raises(FedvidaError, match="needs the semantic dictionary") as err:
        train_local(model, train_fs, cfg, None, method=method, epochs=1, seed=0)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_changes_exactly_the_parts_it_trains(
    method: str, train_fs: FeatureSet, dictionary: SemanticDictionary,
    small_config: SmallConfig
) -> None:
    # Arrange: weight decay on, so a part reached by a zero gradient would still move
    cfg = small_config(*SMALL, "train.weight_decay=0.01")
    model = build_model(cfg, dims(train_fs))
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    # Act
    train_local(model, train_fs, cfg, dictionary, method=method, epochs=1, seed=0,
                class_names=CLASSES)
    # Assert: what `trains` names changed (so it must travel), everything else is bit-identical
    # to its seeded initial value (so `shared_parts` may leave it on every node)
    changed = {k.split(".", 1)[0] for k, v in model.state_dict().items()
               if not torch.equal(v, before[k])}
    assert changed == set(METHOD_SPECS[method].trains)
    assert METHOD_SPECS["video_only"].trains == ("classifier",)


def test_shared_parts_default_to_the_trained_parts_and_a_list_overrides_them() -> None:
    from fedvida.training.methods import shared_parts

    assert shared_parts(Config(), "video_only") == ("classifier",)
    assert shared_parts(Config(), "gt_audio") == ("audio_proj", "classifier", "tagger")
    assert shared_parts(Config(), "generated") == (
        "audio_proj", "generator", "classifier", "tagger")
    assert shared_parts(Config(), "prototype") == (
        "audio_proj", "classifier", "tagger", "prototypes")
    listed = load_config(None, ["federation.shared_prefixes=[generator,classifier]"])
    assert shared_parts(listed, "video_only") == ("generator", "classifier")
