"""Train and evaluate one data set (a client's partition, or the pooled clips centrally).

`train_local` and `evaluate` are what the federated client calls each round and what the
centralised reference job (`central.py`) calls once per method. Both are deterministic for a seed
on CPU: shuffling, noise and dropout draw from generators seeded by `seed`, inside a forked RNG
state so that the caller's global RNG is untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from fedvida.devices import resolve
from fedvida.errors import FedvidaError
from fedvida.models.container import FedvidaModel
from fedvida.training.data import ClipTensors, batch_indices, prepare
from fedvida.training.losses import (
    classification_loss,
    generator_loss,
    proximal_term,
    tagger_loss,
)
from fedvida.training.methods import (
    MethodContext,
    action_rows,
    get_method,
    method_forward,
    video_only_logits,
)
from fedvida.training.metrics import FILL_WEIGHTS, macro_f1, topk_accuracy

if TYPE_CHECKING:
    from fedvida.config import Config
    from fedvida.features.cache import FeatureSet
    from fedvida.semantics.dictionary import SemanticDictionary

EpochCallback = Callable[[int, dict[str, float]], None]


@contextmanager
def cpu_threads(n: int) -> Iterator[None]:
    """Run with `n` torch CPU threads (0: unchanged), restoring the previous count afterwards.

    The models are small; on a machine shared with other processes OpenMP synchronisation
    dominates: one LSTM call measured 352 ms with 2 threads against 1.4 ms with 1
    (see docs/methods.md).
    """
    before = torch.get_num_threads()
    if n > 0 and n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def _context(
    model: FedvidaModel,
    cfg: Config,
    dictionary: SemanticDictionary | None,
    method: str,
    class_names: Sequence[str] | None,
) -> MethodContext:
    spec = get_method(method)
    rows = None
    if spec.filtered and dictionary is not None:
        rows = action_rows(dictionary, model.dims.num_classes, class_names)
    return MethodContext(cfg=cfg, spec=spec, dictionary=dictionary, rows=rows)


def train_local(
    model: FedvidaModel,
    data: FeatureSet,
    cfg: Config,
    dictionary: SemanticDictionary | None,
    *,
    method: str,
    epochs: int,
    seed: int,
    proximal_to: dict[str, torch.Tensor] | None = None,
    class_names: Sequence[str] | None = None,
    on_epoch: EpochCallback | None = None,
    val: FeatureSet | None = None,
) -> dict[str, float]:
    """Train `model` in place on `data` with `method`.

    Parameters
    ----------
    model
        The container (moved to ``cfg.train.device``).
    data
        The clips to train on.
    cfg
        Config (train.*, model.*, federation.proximal_mu).
    dictionary
        Semantic dictionary (needed by `svdmap` and `cafmap`).
    method
        The method's name (`fedvida.config.METHODS`).
    epochs
        Passes over `data`.
    seed
        Seeds shuffling, noise and dropout.
    proximal_to
        FedProx reference weights (the global model); adds ``mu/2 ||w - w_g||^2`` with
        ``mu = cfg.federation.proximal_mu``.
    class_names
        Class names in label order, to find each class in the dictionary (SVDMap).
    on_epoch
        Called as ``on_epoch(epoch, metrics)`` after each epoch.
    val
        Validation clips (carved from the training data, never the test split). With
        ``train.early_stopping`` the model ends with the weights of the epoch whose validation
        top-1 was best (ties: the earlier epoch).

    Returns
    -------
    dict[str, float]
        Averages over the last epoch: ``train_loss``, ``cls_loss``, ``gen_loss``, ``gen_mse``,
        ``gen_cos``, ``gen_tag_loss``, ``tag_loss``, ``prox_loss``, ``train_acc``; plus
        ``num-examples``; with `val`: ``val_top1`` (of the kept epoch) and ``best_epoch``
        (1-based).
    """
    ctx = _context(model, cfg, dictionary, method, class_names)
    spec, tcfg = ctx.spec, cfg.train
    device = torch.device(resolve(tcfg.device, "train.device"))
    tensors = prepare(data, cfg, dictionary, with_condition=spec.conditioned)
    n = len(tensors)
    if n == 0:
        return {"num-examples": 0.0, "train_loss": 0.0}
    model.to(device).train()
    optim = torch.optim.Adam(_param_groups(model, cfg), lr=tcfg.lr)
    mu = cfg.federation.proximal_mu
    steps, noise_dim = tensors.visual.shape[1], cfg.model.noise_dim
    sums: dict[str, float] = {}
    keep_best = val is not None and len(val) > 0 and tcfg.early_stopping
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None
    val_top1 = float("nan")
    if spec.prototype:  # the prototypes received (global ones in federation) back unseen classes
        protos = model.prototypes
        protos.prior = protos.means().detach().clone() if bool(protos.counts.sum() > 0) else None
    with cpu_threads(tcfg.num_threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        for epoch in range(epochs):
            sums = {}
            if spec.prototype and epoch == 0:  # later epochs start from the last epoch's end
                update_prototypes(model, tensors, device)
            model.train()
            for idx in batch_indices(n, tcfg.batch_size, gen):
                batch = tensors.take(idx).to(device)
                b = len(batch)
                noise = None
                if spec.generates and noise_dim > 0:
                    noise = torch.randn(b, steps, noise_dim, generator=gen).to(device)
                dropped = None
                if tcfg.modality_dropout > 0 and spec.real_audio:
                    dropped = (torch.rand(b, generator=gen) < tcfg.modality_dropout).to(device)
                fwd = method_forward(model, batch, ctx, training=True, noise=noise,
                                     dropped=dropped)
                parts = {"cls_loss": classification_loss(fwd.logits, batch.labels)}
                if model.classifier.fusion == "late" and tcfg.video_head_weight > 0 \
                        and spec.real_audio:
                    video = model.classifier.video_logits(batch.visual)
                    parts["video_loss"] = tcfg.video_head_weight * classification_loss(
                        video, batch.labels)
                if spec.generates and fwd.generated is not None:
                    g_loss, g_mse, g_cos = generator_loss(
                        fwd.generated, fwd.real.detach(), batch.gen_mask, tcfg.gen_cos_weight
                    )
                    parts["gen_loss"] = tcfg.gen_weight * g_loss
                    if tcfg.gen_tag_weight > 0:
                        parts["gen_tag_loss"] = tcfg.gen_tag_weight * tag_distillation_loss(
                            model, fwd.generated, batch.tags, batch.gen_mask
                        )
                    _add(sums, "gen_mse", float(g_mse), b)
                    _add(sums, "gen_cos", float(g_cos), b)
                if spec.real_audio:
                    tag_logits = model.tagger(fwd.real)
                    parts["tag_loss"] = tcfg.tag_weight * tagger_loss(
                        tag_logits, batch.tags, batch.present
                    )
                if proximal_to is not None and mu > 0:
                    parts["prox_loss"] = proximal_term(model, proximal_to, mu)
                loss = torch.stack(list(parts.values())).sum()
                optim.zero_grad(set_to_none=True)
                loss.backward()
                if tcfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
                optim.step()
                _add(sums, "train_loss", float(loss.detach()), b)
                for name, value in parts.items():
                    _add(sums, name, float(value.detach()), b)
                acc = (fwd.logits.argmax(dim=1) == batch.labels).float().mean()
                _add(sums, "train_acc", float(acc), b)
            if spec.prototype:
                update_prototypes(model, tensors, device)
            epoch_metrics = {k: v / n for k, v in sums.items()}
            if val is not None and len(val) > 0:
                val_top1 = validation_top1(model, val, cfg, dictionary, ctx.spec.name,
                                           class_names)
                epoch_metrics["val_top1"] = val_top1
                if keep_best and (best is None or val_top1 > best[0]):
                    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                    best = (val_top1, epoch, state)
                model.train()
            if on_epoch is not None:
                on_epoch(epoch, epoch_metrics)
    model.prototypes.prior = None
    out = {k: v / n for k, v in sums.items()}
    if best is not None:
        model.load_state_dict(best[2])
        out["val_top1"], out["best_epoch"] = best[0], float(best[1] + 1)
    elif val is not None and len(val) > 0:
        out["val_top1"], out["best_epoch"] = val_top1, float(epochs)
    out["num-examples"] = float(n)
    return out


def _param_groups(model: FedvidaModel, cfg: Config) -> list[dict[str, object]]:
    """Adam parameter groups: the generator with ``train.gen_weight_decay``, the rest with
    ``train.weight_decay``."""
    tcfg = cfg.train
    gen = list(model.generator.parameters())
    ids = {id(q) for q in gen}
    rest = [q for q in model.parameters() if id(q) not in ids]
    gen_wd = tcfg.weight_decay if tcfg.gen_weight_decay is None else tcfg.gen_weight_decay
    return [{"params": rest, "weight_decay": tcfg.weight_decay},
            {"params": gen, "weight_decay": gen_wd}]


def tag_distillation_loss(
    model: FedvidaModel, generated: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """BCE between the tagger's scores on generated audio and the real clip's AudioSet tags.

    The tagger is applied with its parameters detached, so this loss trains the generator only
    (the tagger itself learns from real audio). Distilling the audio encoder's semantically
    organised tag scores gives the generator a target besides the projected embedding.

    Parameters
    ----------
    generated
        (B, T, A) generated audio.
    tags
        (B, K) the audio encoder's tag scores of the real audio.
    mask
        (B,) clips with real audio.
    """
    frozen = {k: v.detach() for k, v in model.tagger.named_parameters()}
    logits = torch.func.functional_call(model.tagger, frozen, (generated,))  # (B, K)
    return tagger_loss(logits, tags, mask)


@torch.no_grad()
def update_prototypes(model: FedvidaModel, tensors: ClipTensors, device: torch.device) -> None:
    """Recompute the class prototypes from every clip with real audio (current `audio_proj`)."""
    mask = tensors.present
    audio = tensors.audio[mask]
    pooled = [model.audio_proj(audio[s : s + 512].to(device)).mean(dim=1)
              for s in range(0, audio.shape[0], 512)]  # (M, A) in chunks
    width = int(model.prototypes.sums.shape[1])
    cat = torch.cat(pooled) if pooled else torch.zeros(0, width)
    model.prototypes.update(cat.to(device), tensors.labels[mask].to(device), len(tensors))


def validation_top1(model: FedvidaModel, val: FeatureSet, cfg: Config,
                    dictionary: SemanticDictionary | None, method: str,
                    class_names: Sequence[str] | None = None) -> float:
    """Top-1 of the method on validation clips (no SVDMap threshold sweep, no other metric)."""
    p = predict(model, val, cfg, dictionary, method=method, class_names=class_names,
                sweep=False)
    return topk_accuracy(p.logits, p.labels, 1)


def chooses_fill_weight(model: FedvidaModel, cfg: Config, method: str) -> bool:
    """The fill-in weight of `method` is chosen on validation clips: the method fills in
    (generator or prototypes), the classifier fuses late and ``train.fill_weight`` is unset."""
    return (get_method(method).fills and model.classifier.fusion == "late"
            and cfg.train.fill_weight is None)


@contextmanager
def fill_weight(model: FedvidaModel, weight: float) -> Iterator[None]:
    """Run with the classifier's fill-in weight set to `weight`, restoring it afterwards."""
    before = model.classifier.fill_weight.clone()
    model.classifier.fill_weight.fill_(float(weight))
    try:
        yield
    finally:
        model.classifier.fill_weight.copy_(before)


def fill_weight_scores(model: FedvidaModel, val: FeatureSet, cfg: Config,
                       dictionary: SemanticDictionary | None, method: str,
                       class_names: Sequence[str] | None = None) -> dict[str, float]:
    """Validation scores of each candidate fill-in weight (`FILL_WEIGHTS`).

    For every weight w: ``val_top1@w`` (top-1 over all validation clips) and ``val_fill_ce@w``
    (mean cross-entropy over the validation clips without real audio, where the fill-in is
    used; NaN when there is none), and ``val-missing``, the number of such clips (clients'
    scores are pooled by `fedvida.training.metrics.pool_fill_scores`). The model's own weight
    is restored.
    """
    missing = ~np.asarray(val.audio_present, dtype=bool)
    out: dict[str, float] = {"val-missing": float(missing.sum())}
    for w in FILL_WEIGHTS:
        with fill_weight(model, w):
            p = predict(model, val, cfg, dictionary, method=method, class_names=class_names,
                        sweep=False)
        out[f"val_top1@{w:g}"] = topk_accuracy(p.logits, p.labels, 1)
        ce = float("nan")
        if missing.any():
            ce = float(F.cross_entropy(torch.from_numpy(p.logits[missing]),
                                       torch.from_numpy(p.labels[missing])))
        out[f"val_fill_ce@{w:g}"] = ce
    return out


def validation_metrics(model: FedvidaModel, val: FeatureSet, cfg: Config,
                       dictionary: SemanticDictionary | None, method: str) -> dict[str, float]:
    """What a federated client reports about the global model on its validation clips.

    ``val_top1`` (the model as received) and ``val-examples``; when the method's fill-in weight
    is chosen on validation (`chooses_fill_weight`), also `fill_weight_scores`.
    """
    scores = (fill_weight_scores(model, val, cfg, dictionary, method)
              if chooses_fill_weight(model, cfg, method) else {})
    received = f"val_top1@{float(model.classifier.fill_weight):g}"  # scored already, if any
    top1 = scores[received] if received in scores else validation_top1(
        model, val, cfg, dictionary, method)
    return {"val_top1": top1, "val-examples": float(len(val)), **scores}


def _add(sums: dict[str, float], key: str, value: float, weight: int) -> None:
    sums[key] = sums.get(key, 0.0) + value * weight


@dataclass
class Predictions:
    """Per-clip outputs of one evaluation pass (numpy, in clip order).

    Attributes
    ----------
    logits
        (N, C) logits of the method.
    labels
        (N,) true labels (used only to score, never to predict).
    present
        (N,) real audio available.
    used
        (N,) audio slot filled (real or generated, after the SVDMap filter).
    video_logits
        (N, C) the same classifier with the audio slot empty for every clip.
    agreement
        (N,) SVDMap agreement of the generated audio (svdmap only).
    gen_mse, gen_cos
        (N,) per-clip generator error vs the projected real audio (generating methods; NaN where
        the clip has no real audio).
    sweep
        SVDMap threshold -> ((N, C) logits, (N,) used).
    missing
        (N,) clips whose real audio exists but is withheld (the oracle-gap clips).
    oracle_logits
        (N, C) the same classifier given the real audio back (source real) where it exists,
        absent elsewhere; None when no oracle view was given.
    """

    logits: np.ndarray
    labels: np.ndarray
    present: np.ndarray
    used: np.ndarray
    video_logits: np.ndarray
    missing: np.ndarray | None = None
    oracle_logits: np.ndarray | None = None
    agreement: np.ndarray | None = None
    gen_mse: np.ndarray | None = None
    gen_cos: np.ndarray | None = None
    sweep: dict[float, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


def predict(
    model: FedvidaModel,
    data: FeatureSet,
    cfg: Config,
    dictionary: SemanticDictionary | None,
    *,
    method: str,
    class_names: Sequence[str] | None = None,
    oracle: FeatureSet | None = None,
    sweep: bool = True,
) -> Predictions:
    """Run the method over `data` in evaluation mode (no noise, no dropout, no labels used).

    Parameters
    ----------
    oracle
        The same clips as `data` with the withheld audio given back (``load_features(...,
        withhold=False)``): the evaluator's real-audio reference. The method never sees it; it
        only yields `Predictions.oracle_logits`.
    sweep
        Also evaluate every threshold of ``train.svdmap_sweep`` (svdmap).
    """
    with cpu_threads(cfg.train.num_threads), torch.no_grad():
        return _predict(model, data, cfg, dictionary, method, class_names, oracle, sweep)


def _predict(
    model: FedvidaModel,
    data: FeatureSet,
    cfg: Config,
    dictionary: SemanticDictionary | None,
    method: str,
    class_names: Sequence[str] | None,
    oracle: FeatureSet | None = None,
    sweep: bool = True,
) -> Predictions:
    ctx = _context(model, cfg, dictionary, method, class_names)
    spec = ctx.spec
    device = torch.device(resolve(cfg.train.device, "train.device"))
    tensors = prepare(data, cfg, dictionary, with_condition=spec.conditioned)
    reasons = np.asarray(data.audio_reason, dtype=object)
    missing = reasons == "withheld"
    real = None
    if oracle is not None:
        if list(oracle.relpaths) != list(data.relpaths):
            raise FedvidaError("oracle view and evaluated clips differ (not the same partition)")
        real = prepare(oracle, cfg, None, with_condition=False)
    model.to(device).eval()
    chunks: dict[str, list[np.ndarray]] = {}
    sweep_chunks: dict[float, list[tuple[np.ndarray, np.ndarray]]] = {}
    for idx in batch_indices(len(tensors), cfg.train.eval_batch_size, None):
        batch = tensors.take(idx).to(device)
        fwd = method_forward(model, batch, ctx, training=False)
        video = video_only_logits(model, batch, fwd.real)
        out = {"logits": fwd.logits, "used": fwd.used, "video_logits": video}
        if real is not None:
            given = real.take(idx).to(device)
            audio = model.audio_proj(given.audio) * given.present[:, None, None].to(
                given.audio.dtype)
            out["oracle_logits"] = model.classifier(batch.visual, audio, given.present)
        if fwd.generated is not None:
            out["gen_mse"] = (fwd.generated - fwd.real).pow(2).mean(dim=(1, 2))
            out["gen_cos"] = F.cosine_similarity(fwd.generated, fwd.real, dim=2).mean(dim=1)
        if fwd.agreement is not None:
            out["agreement"] = fwd.agreement
            for thr in cfg.train.svdmap_sweep if sweep else ():
                s = method_forward(
                    model, batch, ctx, training=False, threshold=thr, agreement=fwd.agreement
                )
                sweep_chunks.setdefault(thr, []).append(
                    (s.logits.cpu().numpy(), s.used.cpu().numpy())
                )
        for key, value in out.items():
            chunks.setdefault(key, []).append(value.cpu().numpy())
    num_classes = model.dims.num_classes
    cat = {k: np.concatenate(v) for k, v in chunks.items()}
    present = tensors.present.numpy().copy()
    for key in ("gen_mse", "gen_cos"):
        if key in cat:
            cat[key] = np.where(present, cat[key], np.nan)
    return Predictions(
        logits=cat.get("logits", np.zeros((0, num_classes), np.float32)),
        labels=tensors.labels.numpy().copy(),
        present=present,
        used=cat.get("used", np.zeros(0, bool)),
        video_logits=cat.get("video_logits", np.zeros((0, num_classes), np.float32)),
        missing=missing,
        oracle_logits=cat.get("oracle_logits"),
        agreement=cat.get("agreement"),
        gen_mse=cat.get("gen_mse"),
        gen_cos=cat.get("gen_cos"),
        sweep={
            t: (np.concatenate([c[0] for c in v]), np.concatenate([c[1] for c in v]))
            for t, v in sweep_chunks.items()
        },
    )


def evaluate(
    model: FedvidaModel,
    data: FeatureSet,
    cfg: Config,
    dictionary: SemanticDictionary | None,
    *,
    method: str,
    class_names: Sequence[str] | None = None,
    oracle: FeatureSet | None = None,
) -> dict[str, float]:
    """Evaluate the method on `data` (e.g. the test split, with the plan's test withholding).

    With `oracle` (the same clips, withheld audio given back) the missing-audio metrics are
    added: on the clips whose real audio exists but is withheld, ``top1_missing`` /
    ``f1_missing`` (the method's own fill-in), ``top1_missing_video`` / ``f1_missing_video``
    (the same classifier, audio slot empty), ``top1_missing_oracle`` / ``f1_missing_oracle``
    (the same classifier given the real audio back) and ``n_missing``. Without it the first
    two pairs and ``n_missing`` are still reported.

    Returns
    -------
    dict[str, float]
        ``num-examples``, ``loss``, ``top1``, ``top5``, ``macro_f1``, ``top1_with_audio`` /
        ``top1_without_audio`` (clips with / without real audio; a key is left out when its
        subset is empty), ``audio_used_rate``, ``top1_video_input`` (same classifier, audio slot
        empty); generating methods add ``gen_mse`` and ``gen_cos`` (clips with real audio);
        `svdmap` adds ``svdmap_retention`` (share of clips without real audio whose generated
        audio is kept) and ``svdmap_top1@T`` / ``svdmap_retention@T`` per swept threshold T.
    """
    p = predict(model, data, cfg, dictionary, method=method, class_names=class_names,
                oracle=oracle)
    with cpu_threads(cfg.train.num_threads):
        return metrics_from_predictions(p, cfg)


def metrics_from_predictions(p: Predictions, cfg: Config) -> dict[str, float]:
    """The metrics of `evaluate` from a `Predictions` (see there)."""
    n, num_classes = p.logits.shape
    out: dict[str, float] = {"num-examples": float(n)}
    if n == 0:
        return out
    preds = p.logits.argmax(axis=1)
    logits_t = torch.from_numpy(p.logits)
    out["loss"] = float(F.cross_entropy(logits_t, torch.from_numpy(p.labels)))
    out["top1"] = topk_accuracy(p.logits, p.labels, 1)
    out["top5"] = topk_accuracy(p.logits, p.labels, 5)
    out["macro_f1"] = macro_f1(p.labels, preds, num_classes)
    for name, mask in (("with_audio", p.present), ("without_audio", ~p.present)):
        if mask.any():
            out[f"top1_{name}"] = topk_accuracy(p.logits[mask], p.labels[mask], 1)
            out[f"top5_{name}"] = topk_accuracy(p.logits[mask], p.labels[mask], 5)
    out["audio_used_rate"] = float(p.used.mean())
    out["top1_video_input"] = topk_accuracy(p.video_logits, p.labels, 1)
    out.update(missing_metrics(p, num_classes))
    if p.gen_mse is not None and p.gen_cos is not None and p.present.any():
        out["gen_mse"] = float(np.nanmean(p.gen_mse))
        out["gen_cos"] = float(np.nanmean(p.gen_cos))
    if p.agreement is not None:
        missing = ~p.present
        kept = p.agreement >= cfg.train.svdmap_threshold
        out["svdmap_agreement_mean"] = float(p.agreement[missing].mean()) if missing.any() else 0.0
        out["svdmap_retention"] = float(kept[missing].mean()) if missing.any() else 0.0
        for thr, (logits, used) in sorted(p.sweep.items()):
            out[f"svdmap_top1@{thr:g}"] = topk_accuracy(logits, p.labels, 1)
            out[f"svdmap_retention@{thr:g}"] = (
                float(used[missing].mean()) if missing.any() else 0.0
            )
    return out


def missing_metrics(p: Predictions, num_classes: int) -> dict[str, float]:
    """Top-1 and macro-F1 on the clips whose real audio is withheld (see `evaluate`)."""
    if p.missing is None or not p.missing.any():
        return {}
    m = p.missing
    labels = p.labels[m]
    out = {"n_missing": float(m.sum())}
    views = [("", p.logits), ("_video", p.video_logits)]
    if p.oracle_logits is not None:
        views.append(("_oracle", p.oracle_logits))
    for suffix, logits in views:
        out[f"top1_missing{suffix}"] = topk_accuracy(logits[m], labels, 1)
        out[f"f1_missing{suffix}"] = macro_f1(labels, logits[m].argmax(axis=1), num_classes)
    return out
