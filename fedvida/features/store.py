"""Crash-safe, memory-mappable shard store for per-clip features.

Layout of one cache *group* (``video`` or ``audio`` features for one extractor signature, shared
by every partition and plan over the dataset: see `fedvida.features.cache`)::

    <cache_dir>/store/<kind>-<signature hash>/
        signature.json           the config fields the hash covers (for humans)
        index.jsonl              one line per finished shard: {"shard", "keys", "rows"}
        shards/<id>/<array>.npy  plain .npy, loaded with mmap_mode="r"
        shards/<id>/meta.json    per-row strings (captions, reasons) and failures

Clips are keyed by `clip_key`: a hash of the file's resolved path, size and mtime, so an edited
clip is recomputed and nothing else. The signature hash covers every setting the features depend
on, so a changed fps or encoder writes a new group and leaves the old one intact.

Crash safety: a shard is written into ``shards/.tmp-<id>`` and renamed into place (atomic); only
then is its index line appended (one small ``O_APPEND`` write). A crash between the two leaves an
*orphan* shard, which the next `ShardStore.index` adopts from its ``meta.json``; a torn last index
line is ignored; leftover ``.tmp-*`` folders are removed. So a killed extraction never leaves a
half-written shard in use and never loses a finished one.

Concurrent writers (two partitions extracted by two processes into the one store) are safe: shard
ids are unique (time + random), a shard appears by one rename, and each index line is one
``O_APPEND`` write, so lines never interleave. Two writers may both compute a clip that both need;
the later row wins in the index, and both are valid.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

INDEX = "index.jsonl"
SHARDS = "shards"
TMP_PREFIX = ".tmp-"


def signature_hash(signature: dict[str, Any]) -> str:
    """Short SHA-256 of a JSON-able signature dict."""
    payload = json.dumps(signature, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def clip_key(path: Path) -> str:
    """Cache key of a clip file: hash of resolved path, size and mtime (or 'missing')."""
    resolved = path.resolve()
    try:
        st = resolved.stat()
        ident = f"{resolved}|{st.st_size}|{st.st_mtime_ns}"
    except OSError:
        ident = f"{resolved}|missing"
    return hashlib.sha256(ident.encode("utf-8", "surrogateescape")).hexdigest()[:24]


@dataclass(frozen=True)
class Row:
    """Where a clip's features live: shard id and row (-1 when the clip failed)."""

    shard: str
    row: int


class ShardStore:
    """One cache group: finished shards plus an append-only index of their keys."""

    def __init__(self, root: Path, signature: dict[str, Any]) -> None:
        self.root = Path(root)
        self.signature = signature
        self._index: dict[str, Row] | None = None

    @classmethod
    def open(cls, store_dir: Path, kind: str, signature: dict[str, Any]) -> ShardStore:
        """The group of `kind` under the cache's store folder (created on first write)."""
        return cls(Path(store_dir) / f"{kind}-{signature_hash(signature)}", signature)

    # ----------------------------------------------------------------- reading
    def index(self) -> dict[str, Row]:
        """Key -> `Row` for every finished shard (adopting orphans; cached per instance)."""
        if self._index is not None:
            return self._index
        index: dict[str, Row] = {}
        listed: set[str] = set()
        log = self.root / INDEX
        if log.is_file():
            for line in log.read_text().splitlines():
                try:
                    entry = json.loads(line)
                    shard, keys, rows = entry["shard"], entry["keys"], entry["rows"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue  # a torn last line from a crash; its shard is adopted below
                if not (self.root / SHARDS / shard / "meta.json").is_file():
                    continue
                listed.add(shard)
                index.update({k: Row(shard, int(r)) for k, r in zip(keys, rows, strict=True)})
        shard_dir = self.root / SHARDS
        if shard_dir.is_dir():
            for d in sorted(shard_dir.iterdir()):
                if d.name.startswith(TMP_PREFIX) or d.name in listed:
                    continue
                meta = self._meta(d.name)
                if meta is None:
                    continue
                self._append_index(d.name, meta["keys"], meta["rows"])
                index.update({k: Row(d.name, int(r)) for k, r in zip(meta["keys"], meta["rows"],
                                                                    strict=True)})
        self._index = index
        return index

    def _meta(self, shard: str) -> dict[str, Any] | None:
        try:
            text = (self.root / SHARDS / shard / "meta.json").read_text()
            meta: dict[str, Any] = json.loads(text)
        except (OSError, json.JSONDecodeError):
            return None
        return meta

    def meta(self, shard: str) -> dict[str, Any]:
        """The shard's meta.json (keys, rows, per-row lists, failures)."""
        meta = self._meta(shard)
        if meta is None:
            raise FileNotFoundError(f"{self.root / SHARDS / shard}: shard meta missing")
        return meta

    def array(self, shard: str, name: str) -> np.ndarray:
        """A shard's array, memory-mapped read-only."""
        return np.load(self.root / SHARDS / shard / f"{name}.npy", mmap_mode="r")

    def index_state(self) -> str:
        """A token that changes whenever a shard is added: group name and index file size."""
        log = self.root / INDEX
        size = log.stat().st_size if log.is_file() else 0
        return f"{self.root.name}:{size}"

    def index_size(self) -> int:
        """Bytes in the index file now (0 when absent): a position for `keys_since`."""
        log = self.root / INDEX
        return log.stat().st_size if log.is_file() else 0

    def keys_since(self, offset: int) -> tuple[set[str], int] | None:
        """Keys of the index lines appended after byte `offset`, and the offset after the last
        complete line read. Torn lines are skipped (their shard is adopted later, with a new
        line). None when the index is shorter than `offset` (the store was replaced)."""
        log = self.root / INDEX
        size = self.index_size()
        if size < offset:
            return None
        if size == offset:
            return set(), offset
        with log.open("rb") as fh:
            fh.seek(offset)
            tail = fh.read(size - offset)
        *lines, partial = tail.split(b"\n")  # partial: "" or a line still being written
        keys: set[str] = set()
        for line in lines:
            try:
                keys.update(json.loads(line)["keys"])
            except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
                continue
        return keys, offset + len(tail) - len(partial)

    # ----------------------------------------------------------------- writing
    def clean_tmp(self) -> int:
        """Remove temp folders left by interrupted writes; return how many."""
        shard_dir = self.root / SHARDS
        if not shard_dir.is_dir():
            return 0
        stale = [d for d in shard_dir.iterdir() if d.name.startswith(TMP_PREFIX)]
        for d in stale:
            shutil.rmtree(d, ignore_errors=True)
        return len(stale)

    def write_shard(
        self,
        keys: list[str],
        rows: list[int],
        arrays: dict[str, np.ndarray],
        meta: dict[str, Any],
    ) -> str:
        """Atomically add a shard.

        Parameters
        ----------
        keys, rows
            Clip keys and their row in `arrays` (``-1`` for clips that failed).
        arrays
            Named arrays with one leading row per successful clip.
        meta
            Extra JSON-able per-shard data (e.g. lists aligned with the rows, failures).

        Returns
        -------
        str
            The new shard id.
        """
        shard_dir = self.root / SHARDS
        shard_dir.mkdir(parents=True, exist_ok=True)
        sig = self.root / "signature.json"
        if not sig.is_file():
            tmp_sig = self.root / f"{TMP_PREFIX}signature-{uuid.uuid4().hex[:8]}.json"
            tmp_sig.write_text(json.dumps(self.signature, indent=1, sort_keys=True, default=str))
            os.replace(tmp_sig, sig)
        shard = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        tmp = shard_dir / f"{TMP_PREFIX}{shard}"
        tmp.mkdir()
        for name, arr in arrays.items():
            with (tmp / f"{name}.npy").open("wb") as fh:
                np.save(fh, np.ascontiguousarray(arr))
                fh.flush()
                os.fsync(fh.fileno())
        doc = {"keys": keys, "rows": rows, **meta}
        with (tmp / "meta.json").open("w") as fh:
            json.dump(doc, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.rename(tmp, shard_dir / shard)
        self._append_index(shard, keys, rows)
        if self._index is not None:
            self._index.update({k: Row(shard, r) for k, r in zip(keys, rows, strict=True)})
        return shard

    def _append_index(self, shard: str, keys: list[str], rows: list[int]) -> None:
        line = json.dumps({"shard": shard, "keys": keys, "rows": rows}) + "\n"
        log = self.root / INDEX
        if log.is_file() and log.stat().st_size > 0:
            with log.open("rb") as fh:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":  # a torn line from a crash: start a fresh one
                    line = "\n" + line
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
