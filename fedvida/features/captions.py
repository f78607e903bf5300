"""A caption per clip from its representative (high-motion) frames.

- ``pseudo`` (default; no captioning model ships offline): the frame classifier's softmax,
  averaged over the representative frames, and its top-k ImageNet labels written as a sentence,
  e.g. ``"a video showing espresso, cup and table"``. When the frame encoder has no ImageNet head
  (a bare ``hf-vit``) an EfficientNet-Lite0 classifier runs on the representative frames only.
- ``hf-blip``: BLIP captions of up to ``caption_frames`` representative frames (most motion
  first), joined with ``"; "`` when they differ.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from fedvida.config import ExtractConfig
from fedvida.features.effnet import EffNetLite0
from fedvida.features.encoders import FrameEncoder, softmax


def pseudo_caption(probs: np.ndarray, names: tuple[str, ...], k: int) -> str:
    """Sentence from the top-``k`` classes of a probability vector ``(C,)``.

    Examples
    --------
    >>> pseudo_caption(np.array([0.1, 0.7, 0.2]), ("cup", "espresso", "table"), 2)
    'a video showing espresso and table'
    """
    top = [names[i] for i in np.argsort(-probs, kind="stable")[:k]]
    text = top[0] if len(top) == 1 else ", ".join(top[:-1]) + " and " + top[-1]
    return f"a video showing {text}"


class ClipCaptioner(Protocol):
    """Captions for a batch of clips."""

    def caption(
        self, frames: list[np.ndarray], logits: list[np.ndarray | None], motion: list[np.ndarray]
    ) -> list[str]:
        """Per clip: representative frames ``(R, S, S, 3)``, their logits ``(R, C)`` or None,
        and their motion ``(R,)`` -> one caption each."""
        ...


class PseudoCaptioner:
    """Top-k ImageNet labels of the representative frames."""

    def __init__(self, encoder: FrameEncoder, k: int, device: str = "cpu") -> None:
        self.k = k
        self.device = device
        self.encoder = encoder
        self._classifier: EffNetLite0 | None = None
        self.names = encoder.label_names

    def _logits(self, frames: np.ndarray) -> np.ndarray:
        if self._classifier is None:
            self._classifier = EffNetLite0(self.device)
        _, logits = self._classifier.encode(frames)
        assert logits is not None
        return logits

    def caption(
        self, frames: list[np.ndarray], logits: list[np.ndarray | None], motion: list[np.ndarray]
    ) -> list[str]:
        out = []
        for clip_frames, clip_logits in zip(frames, logits, strict=True):
            names = self.names
            if clip_logits is None or names is None:
                clip_logits = self._logits(clip_frames)  # (R, 1000)
                names = self._classifier.label_names if self._classifier else None
            assert names is not None
            out.append(pseudo_caption(softmax(clip_logits).mean(axis=0), names, self.k))
        return out


class BlipClipCaptioner:
    """BLIP captions of each clip's most-moving representative frames."""

    def __init__(self, cfg: ExtractConfig, device: str) -> None:
        from fedvida.features.hf import load_blip

        self.blip = load_blip(cfg, device)
        self.frames_per_clip = cfg.caption_frames

    def caption(
        self, frames: list[np.ndarray], logits: list[np.ndarray | None], motion: list[np.ndarray]
    ) -> list[str]:
        picks = [np.argsort(-m, kind="stable")[: self.frames_per_clip] for m in motion]
        flat = np.concatenate([f[p] for f, p in zip(frames, picks, strict=True)])  # (R*, S, S, 3)
        texts = iter(self.blip.caption(flat))
        out = []
        for p in picks:
            mine = [next(texts) for _ in range(len(p))]
            out.append("; ".join(dict.fromkeys(t for t in mine if t)))
        return out


def create_captioner(cfg: ExtractConfig, encoder: FrameEncoder, device: str) -> ClipCaptioner:
    """The captioner named by ``cfg.captioner`` ('pseudo' or 'hf-blip')."""
    if cfg.captioner == "hf-blip":
        return BlipClipCaptioner(cfg, device)
    return PseudoCaptioner(encoder, cfg.caption_topk, device)
