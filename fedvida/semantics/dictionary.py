"""`SemanticDictionary`: the read-only global artifact linking actions to AudioSet labels.

Loading verifies every file's SHA-256 and the content digest (and the digest a server announced,
when given), then memory-maps the arrays read-only: writing into them raises ``ValueError``.

Process-level cache: `SemanticDictionary.load` keeps one verified instance per resolved directory.
A later call returns it without re-hashing when the (size, mtime) of every file is unchanged and,
when an expected digest is given, it equals the cached digest; a changed file or another expected
digest triggers a full verification again (and a refusal on mismatch). So a Flower client that is
handed the same announced digest every round hashes the artifact once per process.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np

from fedvida.errors import InputError
from fedvida.semantics.artifact import MANIFEST, ArtifactError, verify_artifact
from fedvida.semantics.labels import normalise_action

_Signature = tuple[tuple[str, int, int], ...]
_CACHE: dict[Path, tuple[_Signature, SemanticDictionary]] = {}
_LOCK = threading.Lock()


def _signature(directory: Path, names: list[str]) -> _Signature:
    out = []
    for name in sorted([MANIFEST, *names]):
        st = (directory / name).stat()
        out.append((name, st.st_size, st.st_mtime_ns))
    return tuple(out)


def _load_array(path: Path) -> np.ndarray:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: not a readable .npy array ({exc})") from None
    if not isinstance(arr, np.ndarray):  # pragma: no cover - np.load of .npy returns arrays
        raise ArtifactError(f"{path}: not an array")
    return arr


class SemanticDictionary:
    """Action x AudioSet-label similarities with per-action top-k entries (read-only).

    Attributes
    ----------
    path
        The artifact directory.
    digest
        The content digest (see `fedvida.semantics.artifact`).
    actions
        Action labels as the dataset names them (rows), sorted by name.
    action_texts
        The templated texts that were embedded (e.g. ``the sound of adult female singing``).
    audio_labels, audio_mids
        AudioSet's 527 display names and mids (columns), in AudioSet index order.
    similarity
        (A, 527) float32 cosine similarities, read-only memmap.
    action_embeddings, audio_embeddings
        (A, D) and (527, D) float32 unit-norm text embeddings, read-only memmaps.
    topk_indices, topk_scores
        (A, k) int64 / float32: each action's k most similar AudioSet labels, descending.
    manifest
        The verified manifest (model name and weights hash, templates, k, label hashes, ...).
    """

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = path
        self.manifest = manifest
        self.digest: str = manifest["digest"]
        try:
            labels = json.loads((path / "labels.json").read_text(encoding="utf-8"))
            self.actions: list[str] = [str(a) for a in labels["actions"]]
            self.action_texts: list[str] = [str(a) for a in labels["action_texts"]]
            self.audio_labels: list[str] = [str(a) for a in labels["audio_labels"]]
            self.audio_mids: list[str] = [str(a) for a in labels["audio_mids"]]
        except (OSError, KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{path / 'labels.json'}: malformed ({exc})") from None
        self.action_embeddings = _load_array(path / "action_embeddings.npy")  # (A, D)
        self.audio_embeddings = _load_array(path / "audio_embeddings.npy")  # (527, D)
        self.similarity = _load_array(path / "similarity.npy")  # (A, 527)
        self.topk_indices = _load_array(path / "topk_indices.npy")  # (A, k)
        self.topk_scores = _load_array(path / "topk_scores.npy")  # (A, k)
        self._check_shapes()
        self._index: dict[str, int] = {}
        for i, name in enumerate(self.actions):
            self._index.setdefault(name, i)
        for i, name in enumerate(self.actions):
            self._index.setdefault(normalise_action(name), i)

    def _check_shapes(self) -> None:
        a, n = len(self.actions), len(self.audio_labels)
        d = self.action_embeddings.shape[-1] if self.action_embeddings.ndim == 2 else -1
        k = self.top_k
        expected = {
            "action_embeddings.npy": (self.action_embeddings, (a, d)),
            "audio_embeddings.npy": (self.audio_embeddings, (n, d)),
            "similarity.npy": (self.similarity, (a, n)),
            "topk_indices.npy": (self.topk_indices, (a, k)),
            "topk_scores.npy": (self.topk_scores, (a, k)),
        }
        for name, (arr, shape) in expected.items():
            if arr.shape != shape:
                raise ArtifactError(f"{self.path / name}: shape {arr.shape}, expected {shape}")
        if len(self.action_texts) != a or len(self.audio_mids) != n:
            raise ArtifactError(f"{self.path / 'labels.json'}: label lists of unequal length")

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(
        cls, path: str | Path, expected_digest: str | None = None, *, use_cache: bool = True
    ) -> SemanticDictionary:
        """Verify and load an artifact directory (arrays memory-mapped, read-only).

        Parameters
        ----------
        path
            The artifact directory written by `fedvida.semantics.build.build_dictionary`.
        expected_digest
            The 64-hex digest that must match (e.g. announced by the server); ``None`` checks
            only the artifact's own consistency.
        use_cache
            Reuse an instance already verified in this process when no file changed.

        Raises
        ------
        ArtifactError
            A missing, tampered or unexpected file (named), or a digest mismatch.
        """
        directory = Path(path).resolve()
        want = expected_digest.strip().lower() if expected_digest is not None else None
        with _LOCK:
            if use_cache and directory in _CACHE:
                sig, cached = _CACHE[directory]
                try:
                    same = sig == _signature(directory, list(cached.manifest["files"]))
                except OSError:
                    same = False
                if same and (want is None or want == cached.digest):
                    return cached
            manifest = verify_artifact(directory, want)
            loaded = cls(directory, manifest)
            if use_cache:
                _CACHE[directory] = (_signature(directory, list(manifest["files"])), loaded)
            return loaded

    @staticmethod
    def forget(path: str | Path) -> None:
        """Drop the cached instance of one directory (after it was rebuilt)."""
        with _LOCK:
            _CACHE.pop(Path(path).resolve(), None)

    @staticmethod
    def clear_cache() -> None:
        """Forget every verified instance of this process."""
        with _LOCK:
            _CACHE.clear()

    # ------------------------------------------------------------------ queries
    @property
    def top_k(self) -> int:
        """The k the artifact stores per action."""
        return int(self.manifest["top_k"])

    @property
    def model_name(self) -> str:
        return str(self.manifest["model"]["name"])

    @property
    def weights_sha256(self) -> str:
        """SHA-256 of the sentence model's weights the embeddings came from."""
        return str(self.manifest["model"]["weights_sha256"])

    def __len__(self) -> int:
        return len(self.actions)

    def __contains__(self, action: object) -> bool:
        return isinstance(action, str) and (
            action in self._index or normalise_action(action) in self._index
        )

    def index(self, action: str) -> int:
        """Row of an action, by dataset name (``adult+female+singing``) or normalised text."""
        found = self._index.get(action)
        if found is None:
            found = self._index.get(normalise_action(action))
        if found is None:
            raise InputError(f"action '{action}' is not in the dictionary at {self.path}")
        return found

    def indices(self, actions: list[str] | tuple[str, ...]) -> np.ndarray:
        """Rows of several actions, shape (len(actions),) int64."""
        return np.array([self.index(a) for a in actions], dtype=np.int64)

    def topk(self, action: str, k: int | None = None) -> list[tuple[str, float]]:
        """The `k` AudioSet labels most similar to `action` (default: the stored k), descending."""
        row = self.index(action)
        k = self.top_k if k is None else k
        if k < 1:
            raise InputError(f"k must be >= 1, got {k}")
        if k <= self.top_k:
            idx = np.asarray(self.topk_indices[row, :k])
            val = np.asarray(self.topk_scores[row, :k])
        else:
            sims = np.asarray(self.similarity[row])  # (527,)
            idx = np.argsort(-sims, kind="stable")[:k]
            val = sims[idx]
        return [(self.audio_labels[int(i)], float(v)) for i, v in zip(idx, val, strict=True)]

    def entry_line(self, action: str, k: int | None = None) -> str:
        """One line like ``barking -> Bark 0.71, Dog 0.64, ...``."""
        items = ", ".join(f"{label} {score:.2f}" for label, score in self.topk(action, k))
        return f"{self.actions[self.index(action)]} -> {items}"

    def __repr__(self) -> str:
        return (
            f"SemanticDictionary({str(self.path)!r}, actions={len(self.actions)}, "
            f"k={self.top_k}, digest={self.digest[:12]})"
        )
