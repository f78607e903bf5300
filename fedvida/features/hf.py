"""Hugging Face encoders loaded from local directories only (``local_files_only=True``).

- ``hf-vit``: any `AutoModel` image backbone with an image processor (ViT in the research);
  feature = ``pooler_output`` (or the CLS token when the model has no pooler). A directory holding
  a classification head (``ViTForImageClassification``) also yields logits and label names.
- ``hf-ast``: an Audio Spectrogram Transformer with its `ASTFeatureExtractor`; per step, the
  window centred on the step's segment (0.96 s, as for YAMNet) -> ``pooler_output``. A directory
  holding ``ASTForAudioClassification`` whose labels are AudioSet display names also gives tags.
- `BlipCaptioner` (``extract.captioner: hf-blip``): captions for representative frames.

Nothing here reaches a hub: a missing or incomplete directory is a `ConfigError` naming it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedvida.config import ExtractConfig
from fedvida.data.audio import segment_windows
from fedvida.errors import ConfigError
from fedvida.features.encoders import (
    AudioEncoder,
    FrameEncoder,
    hf_identity,
    register_audio_encoder,
    register_frame_encoder,
    sigmoid,
)
from fedvida.resources import audioset_labels

AST_WINDOW_S = 0.96


def _quiet() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def _need_dir(path: Path | None, field: str) -> Path:
    if path is None:
        raise ConfigError(f"extract.{field}: not set (a local model directory is required)")
    if not (Path(path) / "config.json").is_file():
        raise ConfigError(f"extract.{field}: {path} holds no config.json (not a saved model)")
    return Path(path)


def _load_model(path: Path, field: str, device: str) -> Any:
    """Load the architecture named in config.json (head included), else the bare AutoModel."""
    import transformers
    from transformers import AutoConfig, AutoModel

    _quiet()
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        arch = (config.architectures or [None])[0]
        cls = getattr(transformers, arch, None) if arch else None
        model = (cls or AutoModel).from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"extract.{field}: cannot load {path} ({str(exc).splitlines()[0]})") \
            from None
    return model.eval().requires_grad_(False).to(device)


def _embedding(out: Any) -> torch.Tensor:
    pooled = getattr(out, "pooler_output", None)
    if pooled is not None:
        return pooled  # (N, H)
    hidden = out.hidden_states[-1] if getattr(out, "hidden_states", None) else out.last_hidden_state
    return hidden[:, 0]  # (N, H) CLS token


class HfVit:
    """A local Hugging Face image backbone (ViT-like) as a frame encoder."""

    name = "hf-vit"

    def __init__(self, path: Path, device: str = "cpu") -> None:
        from transformers import AutoImageProcessor

        self.model = _load_model(path, "hf_vit_path", device)
        self.processor = AutoImageProcessor.from_pretrained(path, local_files_only=True)
        self.device = device
        self.dim = int(self.model.config.hidden_size)
        has_head = hasattr(self.model, "classifier")
        id2label = self.model.config.id2label or {}
        self.label_names: tuple[str, ...] | None = (
            tuple(id2label[i] for i in range(len(id2label))) if has_head else None
        )

    def encode(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        with torch.inference_mode():
            batch = self.processor(images=list(images), return_tensors="pt")
            pixels = batch["pixel_values"].to(self.device)  # (N, 3, H, W)
            if self.label_names is not None:
                out = self.model(pixel_values=pixels, output_hidden_states=True)
                feats = out.hidden_states[-1][:, 0]  # (N, H)
                return feats.float().cpu().numpy(), out.logits.float().cpu().numpy()
            feats = _embedding(self.model(pixel_values=pixels))
            return feats.float().cpu().numpy(), None


class HfAst:
    """A local Audio Spectrogram Transformer as a per-step audio encoder."""

    name = "hf-ast"

    def __init__(self, path: Path, device: str = "cpu") -> None:
        from transformers import AutoFeatureExtractor

        self.model = _load_model(path, "hf_ast_path", device)
        self.extractor = AutoFeatureExtractor.from_pretrained(path, local_files_only=True)
        self.device = device
        self.dim = int(self.model.config.hidden_size)
        self.to_audioset: np.ndarray | None = None
        if hasattr(self.model, "classifier"):
            where = {name: i for i, (_, name) in enumerate(audioset_labels())}
            id2label = self.model.config.id2label or {}
            idx = [where.get(id2label[i], -1) for i in range(len(id2label))]
            if idx and all(i >= 0 for i in idx):
                self.to_audioset = np.array(idx)
        self.tags_audioset = self.to_audioset is not None

    def encode(
        self, waves: list[np.ndarray], rate: int, steps: int
    ) -> tuple[np.ndarray, np.ndarray | None]:
        if not waves:
            return np.zeros((0, steps, self.dim), np.float32), None
        window = int(round(AST_WINDOW_S * rate))
        segs = np.concatenate([segment_windows(w, steps, window) for w in waves])  # (N*T, W)
        with torch.inference_mode():
            batch = self.extractor(list(segs), sampling_rate=rate, return_tensors="pt")
            values = batch["input_values"].to(self.device)  # (N*T, frames, mels)
            if self.to_audioset is not None:
                out = self.model(input_values=values, output_hidden_states=True)
                hidden = out.hidden_states[-1]  # (N*T, L, H)
                feats = (hidden[:, 0] + hidden[:, 1]) / 2  # AST pools CLS and distillation tokens
                logits = out.logits.float().cpu().numpy()
            else:
                feats, logits = _embedding(self.model(input_values=values)), None
        emb = feats.float().cpu().numpy().reshape(len(waves), steps, self.dim)  # (N, T, H)
        if logits is None or self.to_audioset is None:
            return emb, None
        scores = sigmoid(logits).reshape(len(waves), steps, -1).mean(axis=1)  # (N, C)
        tags = np.zeros((len(waves), 527), np.float32)
        tags[:, self.to_audioset] = scores
        return emb, tags


@register_frame_encoder("hf-vit", identity=lambda cfg: hf_identity(cfg.hf_vit_path))
def _hf_vit(cfg: ExtractConfig, device: str) -> FrameEncoder:
    return HfVit(_need_dir(cfg.hf_vit_path, "hf_vit_path"), device)


@register_audio_encoder("hf-ast", identity=lambda cfg: hf_identity(cfg.hf_ast_path))
def _hf_ast(cfg: ExtractConfig, device: str) -> AudioEncoder:
    return HfAst(_need_dir(cfg.hf_ast_path, "hf_ast_path"), device)


class BlipCaptioner:
    """Image captions from a local BLIP (`BlipForConditionalGeneration` + `BlipProcessor`)."""

    name = "hf-blip"

    def __init__(self, path: Path, device: str = "cpu", max_new_tokens: int = 20) -> None:
        from transformers import AutoProcessor, BlipForConditionalGeneration

        _quiet()
        self.model = BlipForConditionalGeneration.from_pretrained(path, local_files_only=True)
        self.model.eval().requires_grad_(False).to(device)
        self.processor = AutoProcessor.from_pretrained(path, local_files_only=True)
        self.device = device
        self.max_new_tokens = max_new_tokens

    def caption(self, images: np.ndarray) -> list[str]:
        """``(N, S, S, 3)`` uint8 RGB -> N captions (greedy decoding, deterministic)."""
        if len(images) == 0:
            return []
        with torch.inference_mode():
            batch = self.processor(images=list(images), return_tensors="pt")
            pixels = batch["pixel_values"].to(self.device)
            ids = self.model.generate(
                pixel_values=pixels, max_new_tokens=self.max_new_tokens, do_sample=False
            )
        texts = self.processor.batch_decode(ids, skip_special_tokens=True)
        return [" ".join(t.split()) for t in texts]


def load_blip(cfg: ExtractConfig, device: str) -> BlipCaptioner:
    """The BLIP captioner from ``extract.hf_blip_path``."""
    return BlipCaptioner(_need_dir(cfg.hf_blip_path, "hf_blip_path"), device)
