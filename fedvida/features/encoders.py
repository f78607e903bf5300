"""Frozen pretrained encoders behind one registry (name -> factory).

Frame encoders map ``(N, S, S, 3)`` uint8 RGB images to ``(N, D)`` float32 features (and, when
they have an ImageNet-style classifier, ``(N, C)`` logits for pseudo-captions). Audio encoders map
mono 16 kHz waveforms to ``(N, T, Da)`` per-step embeddings plus, when they can tag, ``(N, 527)``
AudioSet scores. Every encoder is frozen (``eval()``, ``requires_grad_(False)``) and runs under
``torch.inference_mode()``; the registries are walked by one parametrised test.

Registered: frame encoders ``effnet-lite0`` (default, `fedvida.features.effnet`), ``hf-vit``;
audio encoders ``yamnet`` (default, `fedvida.features.yamnet`), ``hf-ast``
(`fedvida.features.hf`). Hugging Face models load only from the local directory in the config.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Protocol, TypeVar

import numpy as np
import torch

from fedvida.config import ExtractConfig
from fedvida.devices import resolve
from fedvida.errors import ConfigError


class FrameEncoder(Protocol):
    """Per-image encoder: RGB frames or rendered flow images -> feature vectors."""

    name: str
    dim: int  # D
    label_names: tuple[str, ...] | None  # class names of `logits`, None without a classifier

    def encode(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """``(N, S, S, 3)`` uint8 RGB -> features ``(N, D)`` float32, logits ``(N, C)`` or None."""
        ...


class AudioEncoder(Protocol):
    """Per-step audio encoder over mono waveforms at the configured sample rate."""

    name: str
    dim: int  # Da
    tags_audioset: bool  # whether `encode` returns (N, 527) AudioSet scores

    def encode(
        self, waves: list[np.ndarray], rate: int, steps: int
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """N waveforms ``(S_i,)`` -> embeddings ``(N, steps, Da)``, tags ``(N, 527)`` or None."""
        ...


FrameFactory = Callable[[ExtractConfig, str], FrameEncoder]
AudioFactory = Callable[[ExtractConfig, str], AudioEncoder]
Identity = Callable[[ExtractConfig], str]
E = TypeVar("E")


@dataclass(frozen=True)
class EncoderEntry(Generic[E]):
    """One registered encoder.

    Attributes
    ----------
    factory
        ``(cfg, device) -> encoder`` (loads the weights).
    identity
        ``cfg -> str``: a cheap identity of the weights it would load (file names, sizes,
        mtimes; nothing loaded). The feature cache keys on it (`model_identities`), so replacing
        a model's files invalidates its features.
    """

    factory: Callable[[ExtractConfig, str], E]
    identity: Identity


FRAME_ENCODERS: dict[str, EncoderEntry[FrameEncoder]] = {}
AUDIO_ENCODERS: dict[str, EncoderEntry[AudioEncoder]] = {}


def register_frame_encoder(name: str, identity: Identity) -> Callable[[FrameFactory],
                                                                       FrameFactory]:
    """Decorator adding a frame-encoder factory ``(cfg, device) -> FrameEncoder`` and the
    identity of its weights."""

    def add(factory: FrameFactory) -> FrameFactory:
        FRAME_ENCODERS[name] = EncoderEntry(factory, identity)
        return factory

    return add


def register_audio_encoder(name: str, identity: Identity) -> Callable[[AudioFactory],
                                                                       AudioFactory]:
    """Decorator adding an audio-encoder factory ``(cfg, device) -> AudioEncoder`` and the
    identity of its weights."""

    def add(factory: AudioFactory) -> AudioFactory:
        AUDIO_ENCODERS[name] = EncoderEntry(factory, identity)
        return factory

    return add


def frame_entry(name: str) -> EncoderEntry[FrameEncoder]:
    """The registry entry of frame encoder ``name``; ConfigError naming the known ones."""
    _load_plugins()
    if name not in FRAME_ENCODERS:
        known = ", ".join(sorted(FRAME_ENCODERS))
        raise ConfigError(f"extract.frame_encoder: unknown '{name}' (known: {known})")
    return FRAME_ENCODERS[name]


def audio_entry(name: str, field: str = "audio_encoder") -> EncoderEntry[AudioEncoder]:
    """The registry entry of audio encoder ``name`` (``field``: the config field naming it, for
    the error); ConfigError naming the known ones."""
    _load_plugins()
    if name not in AUDIO_ENCODERS:
        known = ", ".join(sorted(AUDIO_ENCODERS))
        raise ConfigError(f"extract.{field}: unknown '{name}' (known: {known})")
    return AUDIO_ENCODERS[name]


def _load_plugins() -> None:
    # Imported for their registration side effect; kept here so that importing this module is
    # enough to see every encoder.
    import fedvida.features.effnet  # noqa: F401
    import fedvida.features.hf  # noqa: F401
    import fedvida.features.yamnet  # noqa: F401


def encoder_names() -> tuple[list[str], list[str]]:
    """Names of every registered (frame, audio) encoder."""
    _load_plugins()
    return sorted(FRAME_ENCODERS), sorted(AUDIO_ENCODERS)


def create_frame_encoder(cfg: ExtractConfig, device: str | None = None) -> FrameEncoder:
    """Build the frame encoder named by ``cfg.frame_encoder`` on ``device`` (default cfg.device)."""
    return frame_entry(cfg.frame_encoder).factory(cfg, resolve_device(device or cfg.device))


def create_audio_encoder(cfg: ExtractConfig, device: str | None = None) -> AudioEncoder:
    """Build the audio encoder named by ``cfg.audio_encoder`` on ``device`` (default cfg.device)."""
    return audio_entry(cfg.audio_encoder).factory(cfg, resolve_device(device or cfg.device))


def create_tagger(cfg: ExtractConfig, device: str | None = None) -> AudioEncoder:
    """Build the audio encoder named by ``cfg.tagger``, which must score AudioSet's 527 classes.

    Raises
    ------
    ConfigError
        When it is unknown, or its ``tags_audioset`` is false.
    """
    tagger = audio_entry(cfg.tagger, "tagger").factory(cfg, resolve_device(device or cfg.device))
    if not tagger.tags_audioset:
        raise ConfigError(f"extract.tagger: '{cfg.tagger}' does not score AudioSet's 527 "
                          "classes; choose an audio encoder that tags (e.g. yamnet)")
    return tagger


def resolve_device(device: str) -> str:
    """Validate a torch device string (``auto`` resolved, `fedvida.devices`); ``cuda`` without a
    GPU is a config error."""
    device = resolve(device, "extract.device")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"extract.device: '{device}' requested but CUDA is not available")
    try:
        torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"extract.device: invalid device '{device}' ({exc})") from None
    return device


def dir_identity(path: Path) -> str:
    """Identity of a model directory: names, sizes and mtimes of its files (cheap, no reads)."""
    if not path.is_dir():
        raise ConfigError(f"model directory not found: {path}")
    parts = [
        f"{p.relative_to(path)}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
        for p in sorted(path.rglob("*"))
        if p.is_file()
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``(N, C)`` logits."""
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Element-wise logistic function."""
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # = 1 / (1 + exp(-x)), without overflow


def file_identity(path: Path) -> str:
    """Identity of a weights file: ``<name>:<size>`` (``missing`` when it is not there)."""
    return f"{path.name}:{path.stat().st_size}" if path.is_file() else "missing"


def hf_identity(path: Path | None) -> str:
    """Identity of a local Hugging Face model folder (`dir_identity`; the path when absent)."""
    return dir_identity(Path(path)) if path is not None and Path(path).is_dir() else str(path)


def model_identities(cfg: ExtractConfig) -> dict[str, str]:
    """Cheap identities (file names, sizes, mtimes; nothing loaded) of every configured model,
    each ``<name>:<identity>`` as its registry entry decides (`EncoderEntry.identity`).

    The feature cache keys on these, so replacing a model's files invalidates its features.
    ``tagger`` is ``extract.tagger``, the AudioSet tagger used when the audio encoder does not
    tag itself.

    Raises
    ------
    ConfigError
        An encoder name that is not registered.
    """
    ids = {
        "frame": f"{cfg.frame_encoder}:{frame_entry(cfg.frame_encoder).identity(cfg)}",
        "audio": f"{cfg.audio_encoder}:{audio_entry(cfg.audio_encoder).identity(cfg)}",
        "tagger": f"{cfg.tagger}:{audio_entry(cfg.tagger, 'tagger').identity(cfg)}",
    }
    ids["captioner"] = (
        "hf-blip:" + hf_identity(cfg.hf_blip_path) if cfg.captioner == "hf-blip" else "pseudo"
    )
    return ids
