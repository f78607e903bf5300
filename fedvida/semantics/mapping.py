"""The two mappings the semantic variants use, as plain batch functions.

CAFMap (caption -> AudioSet labels)
    Each caption is embedded with the dictionary's sentence model (unit norm, no template) and
    compared by cosine with the stored AudioSet label embeddings (templated as the manifest
    records); the k best labels and their cosines are returned.

SVDMap (AudioSet label scores -> agreement with the dictionary)
    For a clip's AudioSet score vector ``s`` (527 non-negative scores, e.g. YAMNet tags or a tagging
    head's sigmoid output) and an action ``a`` with dictionary row ``r_a`` (527 cosines), the
    action's *entry* is ``e_a = max(r_a, 0)`` with every label outside the action's top-k set to
    zero (k = the dictionary's top_k unless given). The similarity is the cosine
    ``sim(s, a) = <s, e_a> / (|s| |e_a|)`` (0 when ``s`` is all zeros); with non-negative scores it
    lies in [0, 1]. The agreement of a clip is ``max_a sim(s, a)`` over all actions of the chosen
    action list, or over the clip's candidate actions (e.g. the classifier's video-only top-c
    predictions). Nothing here takes, or can take, the clip's true label.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedvida.errors import InputError
from fedvida.semantics.artifact import ArtifactError
from fedvida.semantics.dictionary import SemanticDictionary
from fedvida.semantics.embedder import SentenceEmbedder

_EPS = 1e-12


def _check_space(dictionary: SemanticDictionary, embedder: SentenceEmbedder) -> None:
    if embedder.weights_sha256 != dictionary.weights_sha256:
        raise ArtifactError(
            f"sentence model {embedder.path} (weights {embedder.weights_sha256[:12]}) is not the "
            f"one the dictionary at {dictionary.path} was built with "
            f"({dictionary.weights_sha256[:12]})"
        )


def captions_to_audio_labels(
    captions: Sequence[str],
    dictionary: SemanticDictionary,
    embedder: SentenceEmbedder,
    k: int = 3,
) -> tuple[np.ndarray, np.ndarray]:
    """Map captions to their `k` most similar AudioSet labels (CAFMap).

    Parameters
    ----------
    captions
        N caption texts (one per clip, e.g. the representative frames' captions joined).
    dictionary
        The loaded dictionary; its AudioSet label embeddings are the targets.
    embedder
        The sentence model the dictionary was built with (checked by weights hash).
    k
        Labels per caption (3 in the research).

    Returns
    -------
    indices, scores
        (N, k) int64 AudioSet label indices and (N, k) float32 cosines, descending per row.
        A blank caption carries no information: its scores are 0.0 (indices are still valid).

    Raises
    ------
    ArtifactError
        When the embedder is not the dictionary's model.
    """
    labels = np.asarray(dictionary.audio_embeddings)  # (527, D)
    if not 1 <= k <= labels.shape[0]:
        raise InputError(f"k must be in 1..{labels.shape[0]}, got {k}")
    _check_space(dictionary, embedder)
    n = len(captions)
    if n == 0:
        return np.zeros((0, k), dtype=np.int64), np.zeros((0, k), dtype=np.float32)
    emb = embedder.encode([str(c) for c in captions])  # (N, D) unit norm
    sims = emb @ labels.T  # (N, 527)
    idx = np.argsort(-sims, axis=1, kind="stable")[:, :k].astype(np.int64)  # (N, k)
    scores = np.take_along_axis(sims, idx, axis=1).astype(np.float32)  # (N, k)
    blank = np.array([not str(c).strip() for c in captions], dtype=bool)
    scores[blank] = 0.0
    return idx, scores


def dictionary_entries(
    dictionary: SemanticDictionary, actions: Sequence[str] | None = None, k: int | None = None
) -> np.ndarray:
    """The actions' top-k-masked, non-negative similarity rows, shape (A, 527) float32.

    Parameters
    ----------
    dictionary
        The loaded dictionary.
    actions
        Action names in the order wanted (e.g. a dataset's ``classes``); default all of them.
    k
        Labels kept per action; default the dictionary's top_k; 527 keeps the whole row.
    """
    rows = np.arange(len(dictionary)) if actions is None else dictionary.indices(list(actions))
    sim = np.asarray(dictionary.similarity)[rows]  # (A, 527)
    n_labels = sim.shape[1]
    k = dictionary.top_k if k is None else k
    if not 1 <= k <= n_labels:
        raise InputError(f"k must be in 1..{n_labels}, got {k}")
    keep = np.argsort(-sim, axis=1, kind="stable")[:, :k]  # (A, k)
    entries = np.zeros_like(sim, dtype=np.float32)
    np.put_along_axis(entries, keep, np.take_along_axis(sim, keep, axis=1), axis=1)
    return np.maximum(entries, 0.0)


def svdmap_similarity(
    scores: np.ndarray,
    dictionary: SemanticDictionary,
    *,
    actions: Sequence[str] | None = None,
    k: int | None = None,
) -> np.ndarray:
    """Cosine between each clip's AudioSet scores and each action's dictionary entry (SVDMap).

    Parameters
    ----------
    scores
        (N, 527) AudioSet label scores (probabilities; non-negative).
    dictionary
        The loaded dictionary.
    actions
        Action names (columns of the result); default all of the dictionary's actions.
    k
        Labels per entry (see `dictionary_entries`).

    Returns
    -------
    np.ndarray
        (N, A) float32 similarities; 0 for an all-zero score vector.
    """
    s = np.asarray(scores, dtype=np.float32)
    n_labels = len(dictionary.audio_labels)
    if s.ndim != 2 or s.shape[1] != n_labels:
        raise InputError(f"scores must have shape (N, {n_labels}), got {s.shape}")
    if not np.isfinite(s).all():
        raise InputError("scores contain NaN or infinity")
    entries = dictionary_entries(dictionary, actions, k)  # (A, 527)
    s_norm = np.linalg.norm(s, axis=1, keepdims=True)  # (N, 1)
    e_norm = np.linalg.norm(entries, axis=1, keepdims=True)  # (A, 1)
    dots = s @ entries.T  # (N, A)
    return (dots / np.maximum(s_norm * e_norm.T, _EPS)).astype(np.float32)


def svdmap_agreement(
    scores: np.ndarray,
    dictionary: SemanticDictionary,
    candidate_actions: np.ndarray | None = None,
    *,
    actions: Sequence[str] | None = None,
    k: int | None = None,
) -> np.ndarray:
    """Best SVDMap similarity per clip, over all actions or over each clip's candidates.

    Parameters
    ----------
    scores
        (N, 527) AudioSet label scores of each clip (e.g. tags of its generated audio).
    dictionary
        The loaded dictionary.
    candidate_actions
        Optional (N, c) integer indices into `actions` (default: the dictionary's actions): each
        clip's candidate actions, e.g. the classifier's video-only top-c predictions. Must be
        2-D; a per-clip label vector of shape (N,) is refused.
    actions
        The action list that columns / candidate indices refer to, e.g. a dataset's ``classes``.
    k
        Labels per dictionary entry (default the dictionary's top_k).

    Returns
    -------
    np.ndarray
        (N,) float32 agreement in [0, 1] for non-negative scores; compare it with a threshold
        (``train.svdmap_threshold``) to keep or drop generated audio.
    """
    sim = svdmap_similarity(scores, dictionary, actions=actions, k=k)  # (N, A)
    if candidate_actions is None:
        return sim.max(axis=1) if sim.shape[1] else np.zeros(sim.shape[0], np.float32)
    cand = np.asarray(candidate_actions)
    if cand.ndim != 2 or cand.shape[0] != sim.shape[0] or cand.shape[1] < 1:
        raise InputError(
            f"candidate_actions must be (N, c) predicted action indices with N={sim.shape[0]}, "
            f"got shape {cand.shape}"
        )
    if not np.issubdtype(cand.dtype, np.integer):
        raise InputError(f"candidate_actions must be integer indices, got dtype {cand.dtype}")
    if cand.size and (cand.min() < 0 or cand.max() >= sim.shape[1]):
        raise InputError(f"candidate_actions hold indices outside 0..{sim.shape[1] - 1}")
    return np.take_along_axis(sim, cand, axis=1).max(axis=1).astype(np.float32)
