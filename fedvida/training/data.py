"""Turn a `FeatureSet` into tensors once, and cut it into seeded batches.

The per-clip inputs are prepared once per FeatureSet object and cached in-process (keyed by the
object's identity, released with it): RGB and flow concatenated (N, T, 2D), the CAFMap condition
from the captions (one sentence-embedder pass), and the per-step condition weights.
"""

from __future__ import annotations

import dataclasses
import hashlib
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from fedvida.errors import FedvidaError
from fedvida.models.generator import condition_weights

if TYPE_CHECKING:
    from fedvida.config import Config
    from fedvida.features.cache import FeatureSet
    from fedvida.semantics.dictionary import SemanticDictionary


@dataclass
class ClipTensors:
    """Aligned tensors of N clips (a whole partition or one batch of it).

    Attributes
    ----------
    visual
        (N, T, 2D) RGB and flow features, concatenated per step.
    audio
        (N, T, Da) real audio features, zeros where absent.
    present
        (N,) bool, real audio available (after the plan's withholding).
    tags
        (N, K) AudioSet scores of the real audio (zeros where absent).
    labels
        (N,) int64 action labels.
    rep_weights
        (N, T) CAFMap injection weights from the representative steps.
    cond
        (N, K) caption -> AudioSet label scores (top-3, normalised), or None when not needed.
    gen_mask
        (N,) bool, clips that train the generator (real audio present, top tag high enough).
    """

    visual: torch.Tensor
    audio: torch.Tensor
    present: torch.Tensor
    tags: torch.Tensor
    labels: torch.Tensor
    rep_weights: torch.Tensor
    cond: torch.Tensor | None
    gen_mask: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, idx: torch.Tensor) -> ClipTensors:
        """The clips at `idx` (a (B,) int64 tensor), as a new `ClipTensors`."""
        return ClipTensors(
            visual=self.visual[idx],
            audio=self.audio[idx],
            present=self.present[idx],
            tags=self.tags[idx],
            labels=self.labels[idx],
            rep_weights=self.rep_weights[idx],
            cond=None if self.cond is None else self.cond[idx],
            gen_mask=self.gen_mask[idx],
        )

    def to(self, device: torch.device | str) -> ClipTensors:
        """A copy on `device` (no copy when already there)."""
        return ClipTensors(
            visual=self.visual.to(device),
            audio=self.audio.to(device),
            present=self.present.to(device),
            tags=self.tags.to(device),
            labels=self.labels.to(device),
            rep_weights=self.rep_weights.to(device),
            cond=None if self.cond is None else self.cond.to(device),
            gen_mask=self.gen_mask.to(device),
        )


_PREPARED: dict[tuple[int, str], tuple[weakref.ref[Any], ClipTensors]] = {}
_CONDITIONS: dict[tuple[str, str], np.ndarray] = {}


def _key(cfg: Config, dictionary: SemanticDictionary | None, with_condition: bool) -> str:
    digest = getattr(dictionary, "digest", "") if with_condition else ""
    return "|".join(
        [
            str(cfg.model.cond_decay),
            str(cfg.train.generator_min_tag),
            str(with_condition),
            digest,
            cfg.dictionary.model,
        ]
    )


def caption_condition(
    captions: list[str], dictionary: SemanticDictionary, model_name: str, k: int = 3
) -> np.ndarray:
    """CAFMap condition: each caption's top-k AudioSet labels as a sparse score vector.

    Captions are embedded with the dictionary's sentence model and compared with the stored
    AudioSet label embeddings (`fedvida.semantics.mapping.captions_to_audio_labels`). The k
    scores are clipped at 0 and normalised to sum to 1; an empty caption gives all zeros.
    Results are cached per (dictionary digest, captions).

    Returns
    -------
    np.ndarray
        (N, num_labels) float32.
    """
    from fedvida.semantics.embedder import load_sentence_embedder
    from fedvida.semantics.mapping import captions_to_audio_labels

    text_hash = hashlib.sha256("\n".join(captions).encode()).hexdigest()
    key = (str(getattr(dictionary, "digest", "")), f"{k}:{text_hash}")
    if key in _CONDITIONS:
        return _CONDITIONS[key]
    num_labels = len(dictionary.audio_labels)
    out = np.zeros((len(captions), num_labels), dtype=np.float32)
    rows = [i for i, c in enumerate(captions) if c.strip()]
    if rows:
        embedder = load_sentence_embedder(model_name, "cpu")
        texts = [captions[i] for i in rows]
        idx, scores = captions_to_audio_labels(texts, dictionary, embedder, k=k)
        w = np.clip(np.asarray(scores, dtype=np.float32), 0.0, None)  # (M, k)
        w = w / np.maximum(w.sum(axis=1, keepdims=True), 1e-8)
        out[np.asarray(rows)[:, None], np.asarray(idx, dtype=np.int64)] = w
    _CONDITIONS[key] = out
    return out


def prepare(
    fs: FeatureSet,
    cfg: Config,
    dictionary: SemanticDictionary | None,
    *,
    with_condition: bool,
) -> ClipTensors:
    """Tensors for every clip of `fs`, computed once per FeatureSet object.

    Parameters
    ----------
    fs
        The clips (any partition).
    cfg
        Config (model.cond_decay, train.generator_min_tag, dictionary.model).
    dictionary
        Needed when `with_condition` is True (CAFMap).
    with_condition
        Compute the caption condition (needs the dictionary and the sentence embedder).

    Raises
    ------
    FedvidaError
        If the condition is requested without a dictionary, or the arrays disagree in length.
    """
    key = (id(fs), _key(cfg, dictionary, with_condition))
    hit = _PREPARED.get(key)
    if hit is not None and hit[0]() is fs:
        return hit[1]
    n = len(fs.labels)
    for name in ("rgb", "flow", "audio", "audio_present", "tags", "rep_steps", "captions"):
        rows = len(getattr(fs, name))
        if rows != n:
            raise FedvidaError(f"FeatureSet field '{name}' has {rows} rows, not {n}")
    visual = torch.from_numpy(
        np.concatenate([np.asarray(fs.rgb, np.float32), np.asarray(fs.flow, np.float32)], axis=2)
    )  # (N, T, 2D)
    present = torch.from_numpy(np.asarray(fs.audio_present, dtype=bool).copy())  # (N,)
    tags = torch.from_numpy(np.array(fs.tags, dtype=np.float32))  # (N, K)
    rep = torch.from_numpy(np.asarray(fs.rep_steps, dtype=bool).copy())  # (N, T)
    cond = None
    if with_condition:
        if dictionary is None:
            raise FedvidaError("method 'cafmap' needs the semantic dictionary (dictionary.out)")
        scores = caption_condition(list(fs.captions), dictionary, cfg.dictionary.model)
        cond = torch.from_numpy(scores)  # (N, K)
    top_tag = tags.max(dim=1).values if tags.shape[1] else torch.zeros(n)
    prepared = ClipTensors(
        visual=visual,
        audio=torch.from_numpy(np.array(fs.audio, dtype=np.float32)),
        present=present,
        tags=tags,
        labels=torch.from_numpy(np.asarray(fs.labels, dtype=np.int64).copy()),
        rep_weights=condition_weights(rep, cfg.model.cond_decay),
        cond=cond,
        gen_mask=present & (top_tag >= cfg.train.generator_min_tag),
    )
    _PREPARED[key] = (weakref.ref(fs), prepared)
    weakref.finalize(fs, _PREPARED.pop, key, None)
    return prepared


def batch_indices(n: int, batch_size: int, generator: torch.Generator | None) -> list[torch.Tensor]:
    """Split range(n) into batches; shuffled with `generator`, in order when it is None."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    return list(torch.split(order, batch_size))


def concat_features(parts: list[FeatureSet]) -> FeatureSet:
    """Pool several FeatureSets (e.g. every client's cache) into one, clip order kept.

    Raises
    ------
    FedvidaError
        If `parts` is empty.
    """
    if not parts:
        raise FedvidaError("no feature sets to pool (the plan has no clients?)")
    cls = type(parts[0])
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        items = [getattr(p, f.name) for p in parts]
        if isinstance(items[0], list):
            values[f.name] = [x for item in items for x in item]
        elif isinstance(items[0], np.ndarray):
            values[f.name] = np.concatenate([np.asarray(x) for x in items], axis=0)
        else:
            values[f.name] = items[0]
    return cls(**values)


def take_features(fs: FeatureSet, idx: np.ndarray) -> FeatureSet:
    """The clips at positions `idx` of a FeatureSet, as a new FeatureSet (same field order)."""
    idx = np.asarray(idx, dtype=np.int64)
    values: dict[str, Any] = {}
    n = len(fs.relpaths)
    for f in dataclasses.fields(type(fs)):
        value = getattr(fs, f.name)
        if f.name == "skipped":
            values[f.name] = list(value)
        elif isinstance(value, list) and len(value) == n:
            values[f.name] = [value[i] for i in idx]
        elif isinstance(value, np.ndarray) and value.shape[:1] == (n,):
            values[f.name] = np.asarray(value)[idx]
        else:
            values[f.name] = value
    return type(fs)(**values)


def split_validation(
    fs: FeatureSet, fraction: float, seed: int, partition: int | str
) -> tuple[FeatureSet, FeatureSet]:
    """Carve a seeded validation split out of one client's training clips.

    ``round(fraction * n)`` clips (at most n - 1, none when n < 2) go to validation, drawn by
    ``np.random.default_rng([seed, 7919, partition])`` (the test split is never involved), so
    the split is the same for every method and every training seed, centrally and in
    federation. Clip order is kept within both parts.

    Returns
    -------
    tuple
        (train, validation) FeatureSets.
    """
    n = len(fs.relpaths)
    k = min(int(round(fraction * n)), n - 1) if n >= 2 else 0
    pid = int(partition) if str(partition).isdigit() else 10**6
    order = np.random.default_rng([seed, 7919, pid]).permutation(n)
    val = np.sort(order[:k])
    train = np.sort(order[k:])
    return take_features(fs, train), take_features(fs, val)
