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
from fedvida.training.data import concat_features
from fedvida.training.local import metrics_from_predictions, predict, train_local
from fedvida.training.methods import get_method
from fedvida.training.metrics import confusion_matrix

if TYPE_CHECKING:
    from fedvida.config import Config
    from fedvida.features.cache import FeatureSet
    from fedvida.semantics.dictionary import SemanticDictionary

EpochHook = Callable[[str, int, dict[str, float]], None]


@dataclass
class CentralData:
    """The pooled training clips, the test clips, class names and the dictionary."""

    train: FeatureSet
    test: FeatureSet
    classes: list[str]
    dictionary: SemanticDictionary | None


@dataclass
class MethodResult:
    """One method's outcome."""

    method: str
    train: dict[str, float]
    test: dict[str, float]
    confusion: np.ndarray
    seconds: float
    model: FedvidaModel | None = field(default=None, repr=False)


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
    parts = [load_features(cfg, plan, k) for k in range(len(plan.clients))]
    train = concat_features(parts)
    test = load_features(cfg, plan, "test")
    dictionary = None
    if any(get_method(m).conditioned or get_method(m).filtered for m in methods):
        from fedvida.semantics.dictionary import SemanticDictionary

        if not Path(cfg.dictionary.out).is_dir():
            raise FedvidaError(
                f"no semantic dictionary at {cfg.dictionary.out}; run `fedvida dictionary build`"
            )
        dictionary = SemanticDictionary.load(Path(cfg.dictionary.out))
    return CentralData(train=train, test=test, classes=list(plan.classes), dictionary=dictionary)


def train_method(
    cfg: Config, method: str, data: CentralData, on_epoch: EpochHook | None = None
) -> MethodResult:
    """Train a fresh model (seed ``train.seed``) with `method` and evaluate it on the test split."""
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
    )
    preds = predict(model, data.test, cfg, data.dictionary, method=method,
                    class_names=data.classes)
    test_metrics = metrics_from_predictions(preds, cfg)
    cm = confusion_matrix(preds.labels, preds.logits.argmax(axis=1), len(data.classes))
    return MethodResult(method, train_metrics, test_metrics, cm, time.perf_counter() - start,
                        model)


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
    plot_comparison({r.method: r.test for r in results}, folder / "comparison.png")
    plot_confusions({r.method: r.confusion for r in results}, classes, folder / "confusion.png")
    for r in results:
        if get_method(r.method).filtered:
            plot_svdmap_sweep(r.test, folder / "svdmap_sweep.png")


def run_central(
    cfg: Config,
    methods: Sequence[str],
    *,
    data: CentralData | None = None,
    on_epoch: EpochHook | None = None,
    write: bool = True,
) -> tuple[list[MethodResult], Path | None]:
    """Train and evaluate each method in turn; write the run folder.

    Returns
    -------
    tuple
        The results in method order and the run folder (None when `write` is False).
    """
    data = data if data is not None else load_central_data(cfg, methods)
    results = [train_method(cfg, m, data, on_epoch) for m in methods]
    folder = None
    if write:
        folder = run_folder(cfg)
        write_run(cfg, results, data.classes, folder)
    return results, folder
