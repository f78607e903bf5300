"""`fedvida train`: the centralised reference: every method on the pooled client caches.

All clients' training clips (with the plan's withholding) are pooled into one FeatureSet; each
method trains a fresh model from the same seed and is evaluated on the plan's test split. A run
folder receives the resolved config, metrics (JSON + CSV), one safetensors checkpoint per method
and PNG figures.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fedvida.errors import FedvidaError
from fedvida.models.container import FeatureDims, FedvidaModel, build_model
from fedvida.training.data import concat_features, split_validation
from fedvida.training.local import (
    Predictions,
    fill_weight_scores,
    metrics_from_predictions,
    predict,
    train_local,
    validation_top1,
)
from fedvida.training.methods import get_method
from fedvida.training.metrics import best_fill_weight, confusion_matrix, topk_accuracy

if TYPE_CHECKING:
    from fedvida.config import Config
    from fedvida.features.cache import FeatureSet
    from fedvida.semantics.dictionary import SemanticDictionary

EpochHook = Callable[[str, int, dict[str, float]], None]


@dataclass
class CentralData:
    """The pooled training and validation clips, the test clips, class names and the dictionary.

    ``test_oracle`` is the test split with the withheld audio given back: only the evaluator's
    real-audio reference reads it (`Predictions.oracle_logits`).
    """

    train: FeatureSet
    test: FeatureSet
    classes: list[str]
    dictionary: SemanticDictionary | None
    val: FeatureSet | None = None
    test_oracle: FeatureSet | None = None


@dataclass
class MethodResult:
    """One method's outcome."""

    method: str
    train: dict[str, float]
    test: dict[str, float]
    confusion: np.ndarray
    seconds: float
    model: FedvidaModel | None = field(default=None, repr=False)
    correct: np.ndarray | None = field(default=None, repr=False)  # see `correct_missing`


def load_central_data(cfg: Config, methods: Sequence[str]) -> CentralData:
    """Load the plan, pool every client's features, load the test split and the dictionary.

    The dictionary is loaded (and verified) only when a method needs it (svdmap, cafmap).

    Raises
    ------
    FedvidaError
        When the plan, the feature cache or the dictionary is missing (one line, with the
        command that makes it).
    """
    from fedvida.data.partition import Plan
    from fedvida.features.cache import load_features

    if not Path(cfg.partition.plan).is_file():
        raise FedvidaError(f"no plan at {cfg.partition.plan}; run `fedvida partition` first")
    plan = Plan.load(Path(cfg.partition.plan))
    parts = [split_validation(load_features(cfg, plan, k), cfg.train.val_fraction,
                              cfg.partition.seed, k) for k in range(len(plan.clients))]
    train = concat_features([t for t, _ in parts])
    val = concat_features([v for _, v in parts]) if cfg.train.val_fraction > 0 else None
    test = load_features(cfg, plan, "test")
    oracle = load_features(cfg, plan, "test", withhold=False)
    dictionary = None
    if any(get_method(m).conditioned or get_method(m).filtered for m in methods):
        from fedvida.semantics.dictionary import SemanticDictionary

        if not Path(cfg.dictionary.out).is_dir():
            raise FedvidaError(
                f"no semantic dictionary at {cfg.dictionary.out}; run `fedvida dictionary build`"
            )
        dictionary = SemanticDictionary.load(Path(cfg.dictionary.out))
    return CentralData(train=train, test=test, classes=list(plan.classes), dictionary=dictionary,
                       val=val, test_oracle=oracle)


def train_method(
    cfg: Config, method: str, data: CentralData, on_epoch: EpochHook | None = None
) -> MethodResult:
    """Train a fresh model (seed ``train.seed``) with `method` and evaluate it on the test split.

    With ``train.modality_dropout_grid`` (and a method that sees real audio) one model per rate
    is trained and the one with the best validation top-1 (after its SVDMap threshold and
    fill-in weight were chosen; ties: the lower rate) is evaluated; its rate is reported as
    ``modality_dropout`` and every rate's validation top-1 as ``val_top1@dropout=r``. The test
    split is not used to choose.
    """
    grid = cfg.train.modality_dropout_grid
    if grid is None or not get_method(method).real_audio or data.val is None \
            or len(data.val) == 0:
        return _train_one(cfg, method, data, on_epoch)
    start = time.perf_counter()
    tried: list[tuple[float, float, MethodResult]] = []
    for rate in sorted(set(grid)):
        one = cfg.model_copy(deep=True)
        one.train.modality_dropout = rate
        res = _train_one(one, method, data, on_epoch)
        tried.append((res.train["final_val_top1"], -rate, res))
    _, neg_rate, best = max(tried, key=lambda t: (t[0], t[1]))
    best.train["modality_dropout"] = -neg_rate
    for val, neg, _ in tried:
        best.train[f"val_top1@dropout={-neg:g}"] = val
    best.seconds = time.perf_counter() - start
    return best


def _train_one(
    cfg: Config, method: str, data: CentralData, on_epoch: EpochHook | None = None
) -> MethodResult:
    """`train_method` at the config's own modality-dropout rate."""
    start = time.perf_counter()
    dims = FeatureDims.from_features(data.train, len(data.classes))
    model = build_model(cfg, dims)
    hook = None if on_epoch is None else (lambda e, m: on_epoch(method, e, m))
    train_metrics = train_local(
        model,
        data.train,
        cfg,
        data.dictionary,
        epochs=cfg.train.epochs,
        seed=cfg.train.seed,
        method=method,
        class_names=data.classes,
        on_epoch=hook,
        val=data.val,
    )
    if get_method(method).filtered and data.val is not None and len(data.val) > 0:
        cfg = choose_svdmap_threshold(model, cfg, data, method)
        train_metrics["svdmap_threshold"] = cfg.train.svdmap_threshold
    if get_method(method).fills and model.classifier.fusion == "late":
        train_metrics["fill_weight"] = choose_fill_weight(model, cfg, data, method)
    if cfg.train.modality_dropout_grid is not None and data.val is not None \
            and len(data.val) > 0:  # the model as it will be tested, to compare the rates
        train_metrics["final_val_top1"] = validation_top1(
            model, data.val, cfg, data.dictionary, method, class_names=data.classes)
    preds = predict(model, data.test, cfg, data.dictionary, method=method,
                    class_names=data.classes, oracle=data.test_oracle)
    test_metrics = metrics_from_predictions(preds, cfg)
    cm = confusion_matrix(preds.labels, preds.logits.argmax(axis=1), len(data.classes))
    return MethodResult(method, train_metrics, test_metrics, cm, time.perf_counter() - start,
                        model, correct_missing(preds))


def correct_missing(preds: Predictions) -> np.ndarray:
    """(N_test,) int8 per test clip: 1 correct, 0 wrong (for paired bootstrap over clips), with
    -1 where the clip is not a missing-audio clip."""
    ok = (preds.logits.argmax(axis=1) == preds.labels).astype(np.int8)
    if preds.missing is None:
        return np.full_like(ok, -1)
    return np.where(preds.missing, ok, -1).astype(np.int8)


def choose_fill_weight(model: FedvidaModel, cfg: Config, data: CentralData,
                       method: str) -> float:
    """Set (and return) the late-fusion weight of the audio head on fill-ins.

    ``train.fill_weight`` when set; otherwise the weight of
    `fedvida.training.metrics.FILL_WEIGHTS` with the lowest cross-entropy on the validation
    clips that have no real audio (where the fill-in is used;
    `fedvida.training.metrics.best_fill_weight`, the rule federated runs apply to their
    clients' pooled scores). 1.0 when there is no such clip. The test split is not used.
    """
    fixed = cfg.train.fill_weight
    best = 1.0 if fixed is None else float(fixed)
    val = data.val
    if fixed is None and val is not None and len(val) > 0:
        chosen = best_fill_weight(fill_weight_scores(model, val, cfg, data.dictionary, method,
                                                     class_names=data.classes))
        best = best if chosen is None else chosen
    model.classifier.fill_weight.fill_(best)
    return best


def choose_svdmap_threshold(model: FedvidaModel, cfg: Config, data: CentralData,
                            method: str) -> Config:
    """A copy of `cfg` whose ``train.svdmap_threshold`` is the swept threshold with the best
    validation top-1 (ties: the higher threshold); the test split is not used."""
    assert data.val is not None
    p = predict(model, data.val, cfg, data.dictionary, method=method, class_names=data.classes)
    scores = [(topk_accuracy(logits, p.labels, 1), t) for t, (logits, _) in p.sweep.items()]
    if not scores:
        return cfg
    _, best = max(scores)
    out = cfg.model_copy(deep=True)
    out.train.svdmap_threshold = best
    return out


def probe_result(cfg: Config, data: CentralData) -> MethodResult:
    """The linear-probe video baseline on the same training clips (`fedvida.training.probe`)."""
    from fedvida.training.evaluation import PROBE
    from fedvida.training.probe import linear_probe

    start = time.perf_counter()
    res = linear_probe(data.train, data.val, data.test, len(data.classes), cfg.train.seed)
    cm = confusion_matrix(np.asarray(data.test.labels), res.preds, len(data.classes))
    return MethodResult(PROBE, {"C": res.c}, res.metrics, cm, time.perf_counter() - start,
                        None, res.correct)


def run_folder(cfg: Config) -> Path:
    """A new folder ``<train.runs_dir>/train-<name>-<timestamp>`` (suffixed if it exists)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(cfg.train.runs_dir) / f"train-{cfg.name}-{stamp}"
    folder, i = base, 1
    while folder.exists():
        folder, i = base.with_name(f"{base.name}-{i}"), i + 1
    folder.mkdir(parents=True)
    return folder


def write_run(
    cfg: Config, results: list[MethodResult], classes: Sequence[str], folder: Path
) -> None:
    """Write config.yaml, metrics.json, metrics.csv, model-<method>.safetensors and PNGs."""
    from safetensors.torch import save_file

    from fedvida.reporting.central_plots import plot_comparison, plot_confusions, plot_svdmap_sweep

    (folder / "config.yaml").write_text(cfg.to_yaml())
    payload = {
        r.method: {
            "train": r.train,
            "test": r.test,
            "seconds": r.seconds,
            "confusion": r.confusion.tolist(),
        }
        for r in results
    }
    payload_all = {"classes": list(classes), "seed": cfg.train.seed, "methods": payload}
    (folder / "metrics.json").write_text(json.dumps(payload_all, indent=2, allow_nan=False))
    keys = sorted({k for r in results for k in r.test})
    with (folder / "metrics.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["method", *keys, "seconds"])
        for r in results:
            writer.writerow([r.method, *[r.test.get(k, "") for k in keys], f"{r.seconds:.2f}"])
    for r in results:
        if r.model is not None:
            state = {k: v.detach().cpu().contiguous() for k, v in r.model.state_dict().items()}
            save_file(state, str(folder / f"model-{r.method}.safetensors"),
                      metadata={"method": r.method, "seed": str(cfg.train.seed)})
    from fedvida.reporting.missing import markdown as missing_markdown
    from fedvida.reporting.missing import plot_missing_bars
    from fedvida.training.evaluation import PROBE

    tests = {r.method: r.test for r in results}
    (folder / "missing_audio.md").write_text("\n".join(missing_markdown(tests)))
    plot_missing_bars(tests, folder / "missing_audio.png")
    trained = [r for r in results if r.method != PROBE]
    plot_comparison({r.method: r.test for r in trained}, folder / "comparison.png")
    plot_confusions({r.method: r.confusion for r in trained}, classes, folder / "confusion.png")
    for r in trained:
        if get_method(r.method).filtered:
            plot_svdmap_sweep(r.test, folder / "svdmap_sweep.png")


def run_central(
    cfg: Config,
    methods: Sequence[str],
    *,
    data: CentralData | None = None,
    on_epoch: EpochHook | None = None,
    write: bool = True,
    probe: bool = True,
) -> tuple[list[MethodResult], Path | None]:
    """Train and evaluate each method in turn (and the linear probe); write the run folder.

    With `probe` the last result is the linear-probe video baseline (`PROBE`, no model).

    Returns
    -------
    tuple
        The results in method order and the run folder (None when `write` is False).
    """
    data = data if data is not None else load_central_data(cfg, methods)
    results = [train_method(cfg, m, data, on_epoch) for m in methods]
    if probe:
        results.append(probe_result(cfg, data))
    folder = None
    if write:
        folder = run_folder(cfg)
        write_run(cfg, results, data.classes, folder)
    return results, folder


@dataclass
class SeedRuns:
    """Every method trained once per seed (`run_seeds`)."""

    seeds: list[int]
    per_seed: list[dict[str, dict[str, float]]]  # seed -> method -> test metrics
    summary: list[dict[str, object]]  # `fedvida.training.evaluation.seed_summary`


def run_seeds(
    cfg: Config,
    methods: Sequence[str],
    seeds: Sequence[int],
    folder: Path | None = None,
    on_seed: Callable[[int, list[MethodResult]], None] | None = None,
) -> SeedRuns:
    """Train `methods` (plus video_only and gt_audio, the references) once per seed.

    Each seed trains from ``train.seed = s`` on the same plan, validation split and test
    split; the linear probe is added. With `folder`, seed s is written to ``folder/seed-<s>``.

    Returns
    -------
    SeedRuns
        Per-seed test metrics and the missing-audio summary (mean +- std, paired bootstrap CI).
    """
    from fedvida.training.evaluation import PROBE, seed_summary

    names = list(dict.fromkeys(["video_only", "gt_audio", *methods]))
    per_seed: list[dict[str, dict[str, float]]] = []
    correct = []
    for seed in seeds:
        scfg = cfg.model_copy(deep=True)
        scfg.train.seed = seed
        data = load_central_data(scfg, names)
        results, _ = run_central(scfg, names, data=data, write=False)
        if folder is not None:
            (folder / f"seed-{seed}").mkdir(parents=True)
            write_run(scfg, results, data.classes, folder / f"seed-{seed}")
        per_seed.append({r.method: r.test for r in results})
        correct.append({r.method: r.correct for r in results if r.correct is not None})
        if on_seed is not None:
            on_seed(seed, results)
    summary = seed_summary(per_seed, correct, [*names, PROBE])
    return SeedRuns(list(seeds), per_seed, summary)
