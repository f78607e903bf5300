"""The five methods: what audio the classifier sees for each clip.

| method       | clip with real audio | clip without real audio                          |
|--------------|----------------------|--------------------------------------------------|
| `video_only` | absent               | absent                                           |
| `gt_audio`   | real                 | absent                                           |
| `generated`  | real                 | generated (Lee et al. 2019)                      |
| `svdmap`     | real                 | generated if the tagger's labels agree with the  |
|              |                      | dictionary (>= threshold, no true label), else absent |
| `cafmap`     | real                 | generated, conditioned on the caption's labels    |

"Absent" means zeros plus a present flag of 0. During training of the generating methods,
`train.classifier_audio` may replace this table (see `classifier_audio`). docs/methods.md explains
every choice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from fedvida.errors import ConfigError
from fedvida.models.container import FedvidaModel
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
        Config name (`train.method`).
    real_audio
        The classifier sees real audio where present.
    generates
        The generator fills in missing audio (and is trained).
    conditioned
        The generator gets the CAFMap caption condition.
    filtered
        Generated audio passes the SVDMap semantic filter.
    """

    name: str
    real_audio: bool
    generates: bool
    conditioned: bool = False
    filtered: bool = False


METHOD_SPECS: dict[str, MethodSpec] = {
    "video_only": MethodSpec("video_only", real_audio=False, generates=False),
    "gt_audio": MethodSpec("gt_audio", real_audio=True, generates=False),
    "generated": MethodSpec("generated", real_audio=True, generates=True),
    "svdmap": MethodSpec("svdmap", real_audio=True, generates=True, filtered=True),
    "cafmap": MethodSpec("cafmap", real_audio=True, generates=True, conditioned=True),
}


def get_method(name: str) -> MethodSpec:
    """The spec of a method by name; ConfigError naming the choices otherwise."""
    if name not in METHOD_SPECS:
        choices = list(METHOD_SPECS)
        raise ConfigError(f"train.method: unknown method '{name}'; choose from {choices}")
    return METHOD_SPECS[name]


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
    """

    logits: torch.Tensor
    real: torch.Tensor
    generated: torch.Tensor | None
    used: torch.Tensor
    agreement: torch.Tensor | None


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
            empty = torch.zeros_like(generated)
            video_logits = model.classifier(batch.visual, empty, torch.zeros(b, dtype=torch.bool))
            k = min(tcfg.svdmap_topk, video_logits.shape[1])
            top = video_logits.topk(k, dim=1).indices.cpu().numpy()  # (B, k)
            candidates = ctx.rows[top]  # (B, k) dictionary rows
    cands = np.ascontiguousarray(candidates)
    agree = svdmap_agreement(scores, ctx.dictionary, candidate_actions=cands)
    return torch.as_tensor(np.asarray(agree, dtype=np.float32)).to(generated.device)


def method_forward(
    model: FedvidaModel,
    batch: ClipTensors,
    ctx: MethodContext,
    *,
    training: bool,
    noise: torch.Tensor | None = None,
    threshold: float | None = None,
    agreement: torch.Tensor | None = None,
) -> Forward:
    """Run a method over a batch: project, generate, filter, classify.

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
    """
    spec, tcfg = ctx.spec, ctx.cfg.train
    present = batch.present  # (B,)
    pmask = present[:, None, None].to(batch.audio.dtype)  # (B, 1, 1)
    real = model.audio_proj(batch.audio) * pmask  # (B, T, A), zeros where absent
    zeros = torch.zeros_like(real)
    generated = None
    agree = None
    if not spec.real_audio:
        audio, used = zeros, torch.zeros_like(present)
    elif not spec.generates:
        audio, used = real, present
    else:
        cond = batch.cond if spec.conditioned else None
        generated = model.generator(batch.visual, cond, batch.rep_weights, noise)  # (B, T, A)
        gen_in = generated if (training and tcfg.generator_end_to_end) else generated.detach()
        fill = torch.ones_like(present)
        if spec.filtered:
            agree = agreement if agreement is not None else svdmap_agreement_for(
                model, batch, generated.detach(), ctx
            )
            thr = tcfg.svdmap_threshold if threshold is None else threshold
            fill = agree >= thr
        mode = tcfg.classifier_audio if training else "mixed"
        if mode == "real":
            audio, used = real, present
        elif mode == "generated":
            audio = gen_in * fill[:, None, None].to(real.dtype)
            used = fill
        else:  # mixed: real where present, (kept) generated elsewhere
            use_gen = ~present & fill
            audio = torch.where(present[:, None, None], real, gen_in * use_gen[:, None, None])
            used = present | use_gen
    logits = model.classifier(batch.visual, audio, used)
    return Forward(logits=logits, real=real, generated=generated, used=used, agreement=agree)
