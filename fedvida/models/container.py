"""One container for every trainable part, so that one prefixed `state_dict` travels.

`FedvidaModel` holds `audio_proj`, `generator`, `classifier` and `tagger`; its state_dict keys are
prefixed by those names (``generator.lstm.weight_ih_l0``...). `federation.shared_prefixes` picks
the prefixes that go through FedAvg (`select_state`), the rest stays local (partial sharing).
The frozen feature encoders are never part of it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from fedvida.errors import FedvidaError
from fedvida.models.classifier import ActionClassifier
from fedvida.models.generator import AudioGenerator
from fedvida.models.heads import AudioProjection, AudioTagger, ClassPrototypes

if TYPE_CHECKING:
    from fedvida.config import Config
    from fedvida.features.cache import FeatureSet

PREFIXES: tuple[str, ...] = (
    "audio_proj", "generator", "classifier", "tagger", "prototypes",
)


class ModelStateError(FedvidaError):
    """A state dict that does not fit the model (unknown key or wrong shape)."""


@dataclass(frozen=True)
class FeatureDims:
    """Input sizes of the model, read from the features.

    Attributes
    ----------
    rgb, flow, audio
        Per-step widths of the RGB, flow and audio encoder features (D, D, Da).
    steps
        Steps per clip T (18).
    num_classes
        Number of action classes.
    num_tags
        AudioSet labels (527).
    """

    rgb: int
    flow: int
    audio: int
    steps: int
    num_classes: int
    num_tags: int = 527

    @classmethod
    def from_features(cls, fs: FeatureSet, num_classes: int) -> FeatureDims:
        """Read the sizes from a `FeatureSet` (any partition; shapes are shared by all)."""
        return cls(
            rgb=int(fs.rgb.shape[2]),
            flow=int(fs.flow.shape[2]),
            audio=int(fs.audio.shape[2]),
            steps=int(fs.rgb.shape[1]),
            num_classes=int(num_classes),
            num_tags=int(fs.tags.shape[1]),
        )


class FedvidaModel(nn.Module):
    """Every trainable part of fedvida in one module.

    Attributes
    ----------
    audio_proj
        (B, T, Da) real audio -> (B, T, A).
    generator
        (B, T, 2D) video (+ condition + noise) -> (B, T, A) generated audio.
    classifier
        video + audio + present flag -> (B, C) logits.
    tagger
        (B, T, A) audio -> (B, num_tags) AudioSet logits.
    prototypes
        Per-class mean projected real audio (buffers only; the `prototype` fill-in).
    """

    def __init__(self, cfg: Config, dims: FeatureDims) -> None:
        super().__init__()
        m = cfg.model
        self.dims = dims
        visual_in = dims.rgb + dims.flow
        self.audio_proj = AudioProjection(dims.audio, m.audio_dim)
        self.generator = AudioGenerator(
            visual_in=visual_in,
            hidden=m.hidden,
            audio_dim=m.audio_dim,
            num_tags=dims.num_tags,
            cond_dim=m.cond_dim,
            noise_dim=m.noise_dim,
            dropout=m.dropout,
        )
        self.classifier = ActionClassifier(
            visual_in=visual_in,
            visual_dim=m.visual_dim,
            audio_dim=m.audio_dim,
            hidden=m.hidden,
            num_classes=dims.num_classes,
            dropout=m.dropout,
            source_indicator=m.source_indicator,
            fusion=m.fusion,
        )
        self.tagger = AudioTagger(m.audio_dim, m.tagger_hidden, dims.num_tags)
        self.prototypes = ClassPrototypes(dims.num_classes, m.audio_dim)

    def num_parameters(self) -> dict[str, int]:
        """Trainable parameter count per part."""
        return {p: sum(t.numel() for t in getattr(self, p).parameters()) for p in PREFIXES}


def build_model(cfg: Config, dims: FeatureDims) -> FedvidaModel:
    """Build the container with weights drawn from ``cfg.train.seed`` (same seed, same weights)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed)
        return FedvidaModel(cfg, dims)


def select_state(model: nn.Module, prefixes: Iterable[str]) -> dict[str, torch.Tensor]:
    """The state entries whose key starts with one of `prefixes` (the arrays that travel).

    Returns detached CPU copies, so that later training does not change what was selected.

    Raises
    ------
    ModelStateError
        If a prefix names no part of the model.
    """
    wanted = tuple(prefixes)
    known = {k.split(".", 1)[0] for k in model.state_dict()}
    unknown = [p for p in wanted if p not in known]
    if unknown:
        raise ModelStateError(f"unknown model prefix(es) {unknown}; known: {sorted(known)}")
    return {
        k: v.detach().cpu().clone()
        for k, v in model.state_dict().items()
        if k.split(".", 1)[0] in wanted
    }


def load_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load the given entries into `model`; keys not in `state` are left as they are.

    Strict on the given keys: every key must exist in the model with the same shape.

    Raises
    ------
    ModelStateError
        Naming the first unknown key or shape mismatch.
    """
    own = model.state_dict()
    for key, value in state.items():
        if key not in own:
            raise ModelStateError(f"state key '{key}' is not in the model")
        if tuple(own[key].shape) != tuple(value.shape):
            raise ModelStateError(
                f"state key '{key}': shape {tuple(value.shape)} != model {tuple(own[key].shape)}"
            )
    with torch.no_grad():
        for key, value in state.items():
            own[key].copy_(value.to(own[key].device, own[key].dtype))
