"""The methods: what audio the classifier sees for each clip.

| method       | clip with real audio | clip without real audio                          |
|--------------|----------------------|--------------------------------------------------|
| `video_only` | absent               | absent                                           |
| `gt_audio`   | real                 | absent                                           |
| `generated`  | real                 | generated (Lee et al. 2019)                      |
| `svdmap`     | real                 | generated if the tagger's labels agree with the  |
|              |                      | dictionary (>= threshold, no true label), else absent |
| `cafmap`     | real                 | generated, conditioned on the caption's labels    |
| `prototype`  | real                 | class audio prototypes mixed by the classifier's  |
|              |                      | own video-only prediction (no generator)          |

"Absent" means zeros and the source code `ABSENT`; real audio has source `REAL`, any fill-in
(generated, prototype) `GENERATED` (see `fedvida.models.classifier`). During training of the
generating methods, `train.classifier_audio` may replace this table, and `train.modality_dropout`
treats some clips with real audio as missing. docs/methods.md explains every choice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from fedvida.errors import ConfigError
from fedvida.models.classifier import ABSENT, GENERATED, REAL
from fedvida.models.container import PREFIXES, FedvidaModel
from fedvida.training.data import ClipTensors

if TYPE_CHECKING:
    from fedvida.config import Config
    from fedvida.semantics.dictionary import SemanticDictionary


@dataclass(frozen=True)
class MethodSpec:
    """What one method uses.

    Attributes
    ----------
    name
        Config name (an entry of `train.methods`; `fedvida.config.METHODS`).
    real_audio
        The classifier sees real audio where present.
    generates
        The generator fills in missing audio (and is trained).
    conditioned
        The generator gets the CAFMap caption condition.
    filtered
        Generated audio passes the SVDMap semantic filter.
    prototype
        Missing audio is filled with class prototypes mixed by the video-only prediction.
    """

    name: str
    real_audio: bool
    generates: bool
    conditioned: bool = False
    filtered: bool = False
    prototype: bool = False

    @property
    def fills(self) -> bool:
        """The method fills in missing audio (generator or prototypes)."""
        return self.generates or self.prototype

    @property
    def trains(self) -> tuple[str, ...]:
        """The model parts (`fedvida.models.container.PREFIXES`) local training changes.

        The classifier always; with real audio the audio projection and the tagger (its
        loss on real audio); the generator when the method generates; the prototype buffers
        when it fills with prototypes. Every other part keeps its seeded initial value
        through `fedvida.training.local.train_local` (a test checks it per method), so it
        need not travel.
        """
        parts = ["classifier"]
        if self.real_audio:
            parts += ["audio_proj", "tagger"]
        if self.generates:
            parts.append("generator")
        if self.prototype:
            parts.append("prototypes")
        return tuple(p for p in PREFIXES if p in parts)


METHOD_SPECS: dict[str, MethodSpec] = {
    "video_only": MethodSpec("video_only", real_audio=False, generates=False),
    "gt_audio": MethodSpec("gt_audio", real_audio=True, generates=False),
    "generated": MethodSpec("generated", real_audio=True, generates=True),
    "svdmap": MethodSpec("svdmap", real_audio=True, generates=True, filtered=True),
    "cafmap": MethodSpec("cafmap", real_audio=True, generates=True, conditioned=True),
    "prototype": MethodSpec("prototype", real_audio=True, generates=False, prototype=True),
}


def get_method(name: str) -> MethodSpec:
    """The spec of a method by name; ConfigError naming the choices otherwise."""
    if name not in METHOD_SPECS:
        choices = list(METHOD_SPECS)
        raise ConfigError(f"unknown method '{name}'; choose from {choices}")
    return METHOD_SPECS[name]


def shared_parts(cfg: Config, method: str) -> tuple[str, ...]:
    """The model parts a method sends and the server averages every round.

    ``federation.shared_prefixes`` when the config lists them (the same for every method;
    trained parts left out stay on the nodes), else the parts the method trains
    (`MethodSpec.trains`): `video_only` sends the classifier only.

    Raises
    ------
    ConfigError
        Unknown method.
    """
    listed = cfg.federation.shared_prefixes
    return tuple(listed) if listed is not None else get_method(method).trains


def action_rows(
    dictionary: SemanticDictionary, num_classes: int, class_names: Sequence[str] | None
) -> np.ndarray:
    """Row of the dictionary for each class (by dataset name or normalised text).

    Without class names the dictionary must list exactly `num_classes` actions; they are then
    taken in class order (both are sorted by name).

    Returns
    -------
    np.ndarray
        (C,) int64 dictionary row per class.

    Raises
    ------
    ConfigError
        Naming the first class the dictionary lacks, or the size mismatch.
    """
    if class_names is None:
        if len(dictionary.actions) != num_classes:
            raise ConfigError(
                f"dictionary has {len(dictionary.actions)} actions but the model {num_classes} "
                "classes; pass class_names to map them"
            )
        return np.arange(num_classes, dtype=np.int64)
    missing = [c for c in class_names if c not in dictionary]
    if missing:
        raise ConfigError(f"class '{missing[0]}' is not in the semantic dictionary; rebuild it")
    return np.asarray(dictionary.indices(list(class_names)), dtype=np.int64)


@dataclass
class MethodContext:
    """Everything besides the batch that a method's forward pass needs."""

    cfg: Config
    spec: MethodSpec
    dictionary: SemanticDictionary | None = None
    rows: np.ndarray | None = None  # (C,) dictionary row per class (SVDMap)


@dataclass
class Forward:
    """One forward pass of a method over a batch.

    Attributes
    ----------
    logits
        (B, C) class logits.
    real
        (B, T, A) projected real audio (zeros where absent).
    generated
        (B, T, A) generated audio, or None for methods that do not generate.
    used
        (B,) bool, the audio slot was filled (real or generated).
    agreement
        (B,) SVDMap agreement of the generated audio, or None.
    source
        (B,) int64 source of the audio slot (`ABSENT`, `REAL`, `GENERATED`).
    """

    logits: torch.Tensor
    real: torch.Tensor
    generated: torch.Tensor | None
    used: torch.Tensor
    agreement: torch.Tensor | None
    source: torch.Tensor | None = None


def svdmap_agreement_for(
    model: FedvidaModel, batch: ClipTensors, generated: torch.Tensor, ctx: MethodContext
) -> torch.Tensor:
    """SVDMap agreement of generated audio with the dictionary, without any true label.

    The tagger's sigmoid scores on the generated features are compared with the dictionary
    entries of the candidate actions: every class (`train.svdmap_candidates = all`) or the
    classifier's video-only top-k (`topk`, the classifier run with the audio slot empty).

    Returns
    -------
    torch.Tensor
        (B,) float32 agreement (best similarity over the candidates).
    """
    from fedvida.semantics.mapping import svdmap_agreement

    if ctx.dictionary is None or ctx.rows is None:
        raise ConfigError("method 'svdmap' needs the semantic dictionary (dictionary.out)")
    tcfg = ctx.cfg.train
    with torch.no_grad():
        scores = torch.sigmoid(model.tagger(generated)).cpu().numpy()  # (B, K)
        b = generated.shape[0]
        if tcfg.svdmap_candidates == "all":
            candidates = np.broadcast_to(ctx.rows, (b, len(ctx.rows)))  # (B, C)
        else:
            video_logits = video_only_logits(model, batch, generated)
            k = min(tcfg.svdmap_topk, video_logits.shape[1])
            top = video_logits.topk(k, dim=1).indices.cpu().numpy()  # (B, k)
            candidates = ctx.rows[top]  # (B, k) dictionary rows
    cands = np.ascontiguousarray(candidates)
    agree = svdmap_agreement(scores, ctx.dictionary, candidate_actions=cands)
    return torch.as_tensor(np.asarray(agree, dtype=np.float32)).to(generated.device)


def video_only_logits(
    model: FedvidaModel, batch: ClipTensors, like: torch.Tensor
) -> torch.Tensor:
    """(B, C) logits of the classifier with the audio slot empty (source `ABSENT`)."""
    empty = torch.zeros_like(like)
    absent = torch.full((empty.shape[0],), ABSENT, dtype=torch.int64, device=empty.device)
    return model.classifier(batch.visual, empty, absent)


def method_forward(
    model: FedvidaModel,
    batch: ClipTensors,
    ctx: MethodContext,
    *,
    training: bool,
    noise: torch.Tensor | None = None,
    threshold: float | None = None,
    agreement: torch.Tensor | None = None,
    dropped: torch.Tensor | None = None,
) -> Forward:
    """Run a method over a batch: project, generate or fill, filter, classify.

    Parameters
    ----------
    model
        The container.
    batch
        Clips on the model's device.
    ctx
        Method, config, dictionary.
    training
        Training applies `train.classifier_audio`; evaluation always fills missing audio only.
    noise
        (B, T, noise_dim) generator noise (None: zeros).
    threshold
        SVDMap threshold (default `train.svdmap_threshold`).
    agreement
        Precomputed (B,) SVDMap agreement (to sweep thresholds without recomputing it).
    dropped
        (B,) bool, clips whose real audio is hidden from the classifier (modality dropout in
        training): they are treated as missing audio. The generator still learns from them.
    """
    spec, tcfg = ctx.spec, ctx.cfg.train
    present = batch.present  # (B,) real audio available
    pmask = present[:, None, None].to(batch.audio.dtype)  # (B, 1, 1)
    real = model.audio_proj(batch.audio) * pmask  # (B, T, A), zeros where absent
    shown = present if dropped is None else present & ~dropped  # real audio the classifier sees
    zeros = torch.zeros_like(real)
    generated = None
    agree = None
    fill = None  # (B, T, A) fill-in for clips without shown real audio
    keep = torch.ones_like(present)  # (B,) fill-in accepted (SVDMap)
    if spec.generates:
        cond = batch.cond if spec.conditioned else None
        generated = model.generator(batch.visual, cond, batch.rep_weights, noise)  # (B, T, A)
        fill = generated if (training and tcfg.generator_end_to_end) else generated.detach()
        if spec.filtered:
            agree = agreement if agreement is not None else svdmap_agreement_for(
                model, batch, generated.detach(), ctx
            )
            thr = tcfg.svdmap_threshold if threshold is None else threshold
            keep = agree >= thr
    elif spec.prototype:
        with torch.no_grad():
            probs = torch.softmax(video_only_logits(model, batch, real), dim=1)  # (B, C)
            fill = model.prototypes.fill(probs, real.shape[1])  # (B, T, A)
    if not spec.real_audio:
        audio, source = zeros, torch.full_like(present, ABSENT, dtype=torch.int64)
    elif fill is None:
        audio = real * shown[:, None, None].to(real.dtype)
        source = torch.where(shown, REAL, ABSENT)
    else:
        mode = tcfg.classifier_audio if (training and spec.generates) else "mixed"
        if mode == "real":
            use_fill = torch.zeros_like(present)
        elif mode == "generated":
            use_fill, shown = keep, torch.zeros_like(present)
        else:  # mixed: real where shown, (kept) fill-in elsewhere
            use_fill = ~shown & keep
        audio = torch.where(shown[:, None, None], real, fill * use_fill[:, None, None])
        source = torch.where(shown, REAL, torch.where(use_fill, GENERATED, ABSENT))
    used = source != ABSENT
    logits = model.classifier(batch.visual, audio, source)
    return Forward(logits=logits, real=real, generated=generated, used=used, agreement=agree,
                   source=source)
