"""Build the semantic dictionary from label texts only (no client data).

Every action (MiT category) and every AudioSet display name is put into a text template and
embedded with the sentence model; the dictionary is the cosine similarity between the two sets,
plus per action its top-k AudioSet labels. See ``docs/semantics.md`` for the template choice.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from fedvida.errors import InputError
from fedvida.resources import audioset_labels
from fedvida.semantics.artifact import FORMAT, FORMAT_VERSION, MANIFEST, write_manifest
from fedvida.semantics.dictionary import SemanticDictionary
from fedvida.semantics.embedder import BUNDLED_MODEL, SentenceEmbedder
from fedvida.semantics.labels import normalise_action

# Template pairs compared by bench/dictionary_quality.py; the winner is DictionaryConfig's default.
TEMPLATE_PRESETS: dict[str, tuple[str, str]] = {
    "raw": ("{action}", "{label}"),
    "video/sound": ("a video of someone {action}", "the sound of {label}"),
    "sound/sound": ("the sound of {action}", "the sound of {label}"),
    "hear/sound": ("you can hear someone {action}", "the sound of {label}"),
    "sound/raw": ("the sound of {action}", "{label}"),
    "someone/raw": ("someone {action}", "{label}"),
}


@dataclass
class Embedded:
    """Templated texts, their embeddings and their similarity."""

    action_texts: list[str]
    audio_texts: list[str]
    action_embeddings: np.ndarray  # (A, D) unit norm
    audio_embeddings: np.ndarray  # (527, D) unit norm
    similarity: np.ndarray  # (A, 527) cosine


def apply_template(template: str, **fields: str) -> str:
    """Fill a template such as ``"the sound of {label}"``; a bad template is an `InputError`."""
    try:
        return template.format(**fields)
    except (KeyError, IndexError, ValueError) as exc:
        raise InputError(f"template '{template}': cannot fill it ({exc!r})") from None


def embed_labels(
    embedder: SentenceEmbedder,
    actions: Sequence[str],
    action_template: str,
    audio_template: str,
    audio_names: Sequence[str] | None = None,
) -> Embedded:
    """Embed templated actions and AudioSet labels and compute their cosine similarity.

    Parameters
    ----------
    embedder
        The sentence model.
    actions
        Action names as the dataset spells them; normalised to words before templating.
    action_template, audio_template
        Templates with an ``{action}`` / ``{label}`` field.
    audio_names
        AudioSet display names (default: the 527 bundled ones).
    """
    names = list(audio_names) if audio_names is not None else [n for _, n in audioset_labels()]
    words = [normalise_action(a) for a in actions]
    action_texts = [apply_template(action_template, action=w) for w in words]
    audio_texts = [apply_template(audio_template, label=n) for n in names]
    act = embedder.encode(action_texts)  # (A, D)
    aud = embedder.encode_memo(audio_texts)  # (527, D), the same list for every build
    sim = np.clip(act @ aud.T, -1.0, 1.0).astype(np.float32)  # (A, 527)
    return Embedded(action_texts, audio_texts, act, aud, sim)


def topk_rows(similarity: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row the `k` largest entries, descending (ties by index): (A, k) int64, (A, k) float32."""
    idx = np.argsort(-similarity, axis=1, kind="stable")[:, :k].astype(np.int64)  # (A, k)
    return idx, np.take_along_axis(similarity, idx, axis=1).astype(np.float32)


def _sha_lines(lines: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def _prepare_out(out: Path) -> Path:
    """Refuse to overwrite a non-empty directory that is not a dictionary; return a temp dir."""
    if out.exists() and not out.is_dir():
        raise InputError(f"dictionary output {out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise InputError(f"dictionary output {out}: non-empty directory without {MANIFEST}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{time.time_ns()}"
    tmp.mkdir()
    return tmp


def build_dictionary(
    actions: Sequence[str],
    out: str | Path,
    *,
    embedder: SentenceEmbedder,
    action_template: str,
    audio_template: str,
    top_k: int = 5,
) -> SemanticDictionary:
    """Embed the labels, write the artifact to `out` (replacing an older one) and load it.

    Parameters
    ----------
    actions
        Unique action names (rows, kept in the given order; `resolve_actions` sorts them).
    out
        Artifact directory; written to a temporary sibling first and swapped in at the end.
    embedder
        The sentence model (`load_sentence_embedder`).
    action_template, audio_template
        Text templates with ``{action}`` / ``{label}``.
    top_k
        Labels kept per action in the entry (the full similarity matrix is stored too).

    Returns
    -------
    SemanticDictionary
        The freshly written artifact, verified and loaded read-only.
    """
    actions = list(actions)
    if not actions:
        raise InputError("dictionary build: no actions to embed")
    if len(set(actions)) != len(actions):
        raise InputError("dictionary build: action names repeat")
    labels = audioset_labels()
    if not 1 <= top_k <= len(labels):
        raise InputError(f"dictionary.top_k: {top_k} is not in 1..{len(labels)}")
    out = Path(out)
    tmp = _prepare_out(out)  # refuse a foreign output directory before any work
    try:
        emb = embed_labels(
            embedder, actions, action_template, audio_template, [n for _, n in labels]
        )
        idx, val = topk_rows(emb.similarity, top_k)
        (tmp / "labels.json").write_text(
            json.dumps(
                {
                    "actions": actions,
                    "action_texts": emb.action_texts,
                    "audio_labels": [n for _, n in labels],
                    "audio_mids": [m for m, _ in labels],
                    "audio_texts": emb.audio_texts,
                },
                indent=1,
                ensure_ascii=False,
            )
            + "\n",
            encoding="utf-8",
        )
        np.save(tmp / "action_embeddings.npy", emb.action_embeddings)
        np.save(tmp / "audio_embeddings.npy", emb.audio_embeddings)
        np.save(tmp / "similarity.npy", emb.similarity)
        np.save(tmp / "topk_indices.npy", idx)
        np.save(tmp / "topk_scores.npy", val)
        model_name = embedder.name if embedder.name == BUNDLED_MODEL else embedder.path.name
        content = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model": {
                "name": model_name,
                "weights_sha256": embedder.weights_sha256,
                "dim": embedder.dim,
            },
            "templates": {"action": action_template, "audio": audio_template},
            "top_k": top_k,
            "num_actions": len(actions),
            "num_audio_labels": len(labels),
            "label_hashes": {
                "actions": _sha_lines(actions),
                "audio_labels": _sha_lines([f"{m}\t{n}" for m, n in labels]),
            },
            "similarity": "cosine of unit-norm sentence embeddings",
        }
        write_manifest(tmp, content, datetime.now(UTC).isoformat(timespec="seconds"))
        old = out.parent / f".{out.name}.old-{time.time_ns()}"
        if out.exists():
            out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    SemanticDictionary.forget(out)
    return SemanticDictionary.load(out)
