"""The dictionary artifact on disk: file hashes, the manifest, the content digest, verification.

Layout of an artifact directory::

    manifest.json            what is below, with the SHA-256 of every other file and the digest
    labels.json              actions (raw names), action texts, AudioSet mids and display names
    action_embeddings.npy    (A, D)   float32, unit-norm embeddings of the templated action texts
    audio_embeddings.npy     (527, D) float32, unit-norm embeddings of the templated AudioSet labels
    similarity.npy           (A, 527) float32, cosine similarity action x AudioSet label
    topk_indices.npy         (A, k)   int64, per action the k most similar AudioSet labels
    topk_scores.npy          (A, k)   float32, their similarities (descending)

The digest identifies content, not build time. It is the SHA-256 of the UTF-8 text made of one
line ``name:sha256`` per file other than the manifest, sorted by name, followed by one line with the
manifest's content fields (everything except ``created_at``, ``files`` and ``digest``) as compact
JSON with sorted keys. Two builds of the same labels, model weights, templates and k on the same
machine give the same digest.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from fedvida.errors import FedvidaError
from fedvida.semantics.embedder import file_sha256

MANIFEST = "manifest.json"
FORMAT = "fedvida-semantic-dictionary"
FORMAT_VERSION = 1
# Manifest keys that do not enter the content digest.
_NON_CONTENT = ("created_at", "files", "digest")
REQUIRED_FILES = (
    "labels.json",
    "action_embeddings.npy",
    "audio_embeddings.npy",
    "similarity.npy",
    "topk_indices.npy",
    "topk_scores.npy",
)


class ArtifactError(FedvidaError):
    """A dictionary artifact that is missing, tampered with, or not the one announced."""


def content_fields(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest fields that describe content (all but created_at, files and digest)."""
    return {k: v for k, v in manifest.items() if k not in _NON_CONTENT}


def compute_digest(file_hashes: dict[str, str], content: dict[str, Any]) -> str:
    """The artifact digest: SHA-256 of sorted ``name:sha256`` lines plus the content JSON line.

    Parameters
    ----------
    file_hashes
        ``{file name: hex SHA-256}`` for every file of the artifact except the manifest.
    content
        The manifest's content fields (see `content_fields`).
    """
    lines = [f"{name}:{sha}" for name, sha in sorted(file_hashes.items())]
    lines.append(json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True))
    return hashlib.sha256(("\n".join(lines) + "\n").encode("utf-8")).hexdigest()


def write_manifest(directory: Path, content: dict[str, Any], created_at: str) -> dict[str, Any]:
    """Hash every file in `directory`, compute the digest and write ``manifest.json``.

    Returns
    -------
    dict
        The manifest as written.
    """
    files: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.iterdir()):
        if path.name == MANIFEST or not path.is_file():
            continue
        files[path.name] = {"sha256": file_sha256(path), "bytes": path.stat().st_size}
    hashes = {name: meta["sha256"] for name, meta in files.items()}
    manifest = dict(content)
    manifest["created_at"] = created_at
    manifest["files"] = files
    manifest["digest"] = compute_digest(hashes, content_fields(content))
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def read_manifest(directory: Path) -> dict[str, Any]:
    """Read and shape-check ``manifest.json``; raises `ArtifactError` naming the file."""
    path = directory / MANIFEST
    if not directory.is_dir():
        raise ArtifactError(f"dictionary {directory}: not a directory (build it first)")
    if not path.is_file():
        raise ArtifactError(f"{path}: missing (not a dictionary artifact)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: unreadable manifest ({str(exc).splitlines()[0]})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArtifactError(f"{path}: not a {FORMAT} manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: format_version {manifest.get('format_version')!r}, "
            f"this fedvida reads {FORMAT_VERSION}"
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or not isinstance(manifest.get("digest"), str):
        raise ArtifactError(f"{path}: manifest lacks 'files' or 'digest'")
    missing = [name for name in REQUIRED_FILES if name not in files]
    if missing:
        raise ArtifactError(f"{path}: manifest does not list {', '.join(missing)}")
    return manifest


def verify_artifact(directory: Path, expected_digest: str | None = None) -> dict[str, Any]:
    """Check every file hash, the digest, and (when given) the digest a server announced.

    Parameters
    ----------
    directory
        The artifact directory.
    expected_digest
        The full 64-hex digest that must match, e.g. the one the server announces.

    Returns
    -------
    dict
        The verified manifest.

    Raises
    ------
    ArtifactError
        One line naming the first file that is missing, changed, or unexpected, or the mismatch.
    """
    manifest = read_manifest(directory)
    hashes: dict[str, str] = {}
    for name, meta in sorted(manifest["files"].items()):
        path = directory / name
        if not path.is_file():
            raise ArtifactError(f"{path}: missing (listed in {MANIFEST})")
        actual = file_sha256(path)
        if not isinstance(meta, dict) or actual != meta.get("sha256"):
            raise ArtifactError(f"{path}: SHA-256 mismatch (file changed since the build)")
        hashes[name] = actual
    extra = sorted(
        p.name for p in directory.iterdir() if p.is_file() and p.name != MANIFEST
        and p.name not in hashes
    )
    if extra:
        raise ArtifactError(f"{directory / extra[0]}: not listed in {MANIFEST}")
    digest = compute_digest(hashes, content_fields(manifest))
    if digest != manifest["digest"]:
        raise ArtifactError(f"{directory / MANIFEST}: digest does not match its content")
    if expected_digest is not None:
        want = expected_digest.strip().lower()
        if want != digest:
            raise ArtifactError(
                f"dictionary {directory}: digest {digest[:16]}... is not the expected "
                f"{want[:16]}{'...' if len(want) > 16 else ''}"
            )
    return manifest
