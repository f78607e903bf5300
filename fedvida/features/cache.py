"""The feature store of a dataset, per-partition packs, and `load_features` (training's contract).

ONE store per cache folder (``<cache_dir>/store/``), shared by every partition and every plan over
the same files: clips are keyed by file (`clip_key`), not by partition, so re-partitioning (more
clients, another Dirichlet alpha or seed, other withholding) re-extracts nothing. Two groups (see
`fedvida.features.store`): ``video`` (RGB and flow features, DIS motion, representative steps,
captions) and ``audio`` (per-step embeddings, AudioSet tags, presence and reason). Each is keyed by
its own signature, so changing the audio encoder keeps every video feature and changing fps or the
frame encoder keeps every audio feature.

A partition is a *view* of the store. Its *pack* holds the partition in plan order (one contiguous
.npy per field) under ``<cache_dir>/<partition>/packs/<view>/<pack id>/``: view = hash of the two
groups and the ordered relpaths and labels (one plan's partition); pack id = hash of where each of
its clips' rows sit in the store, so it changes exactly when the store gains shards holding one of
the partition's clips. ``<view>/HEAD.json`` names the current pack, its clip keys and how far the
store's index files had been read; `load_features` reads only the index lines appended since
(usually none) and checks them against the keys, so a pack stays valid while other partitions are
extracted into the store, and loading touches no dataset file: a few small reads and
``np.load(mmap_mode="r")`` calls, cheap enough per client per round. `extract_partition` builds
the pack at the end of a run; clip files are checked (size, mtime) when extracting and when a pack
is built, so run `fedvida extract` again after editing clips.

Withholding is applied here, never at extraction: a withheld clip that has audio gets zero audio
and tags, ``audio_present = False`` and reason ``"withheld"``; a clip with no usable audio keeps
its own reason (``no_stream``, ``silent``, ``unreadable``). Clips whose video failed extraction
(missing, unreadable, truncated, too short) are left out and listed in ``FeatureSet.skipped``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedvida.config import Config, ExtractConfig
from fedvida.data.partition import Plan, PlannedClip
from fedvida.errors import FedvidaError
from fedvida.features.encoders import model_identities
from fedvida.features.store import SHARDS, ShardStore, clip_key

FEATURE_VERSION = 2  # 2: stream choice, stream-based durations, DC-free silence, crashes
VIDEO_ARRAYS = ("rgb", "flow", "dis", "rep")
AUDIO_ARRAYS = ("audio", "tags")
HEAD = "HEAD.json"
PACK_ARRAYS = ("rgb", "flow", "audio", "tags", "rep", "dis", "present", "labels")


@dataclass
class FeatureSet:
    """N clips of one partition, aligned (see docs/architecture.md)."""

    relpaths: list[str]
    labels: np.ndarray  # (N,) int64
    rgb: np.ndarray  # (N, T, D) float32, may be a read-only memmap
    flow: np.ndarray  # (N, T, D)
    audio: np.ndarray  # (N, T, Da) zeros where audio is absent
    audio_present: np.ndarray  # (N,) bool, after the plan's withholding
    audio_reason: list[str]  # "" when present, else no_stream|silent|unreadable|withheld
    tags: np.ndarray  # (N, 527) AudioSet scores of the real audio, zeros when absent
    rep_steps: np.ndarray  # (N, T) bool representative (high-motion) steps
    captions: list[str]
    motion: np.ndarray | None = None  # (N, T) float32 DIS magnitude per step (extra)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (relpath, reason) left out

    def __len__(self) -> int:
        return len(self.relpaths)


def video_signature(cfg: ExtractConfig) -> dict[str, Any]:
    """Every setting the video features depend on (device and batch sizes do not count)."""
    ids = model_identities(cfg)
    sig: dict[str, Any] = {
        "version": FEATURE_VERSION,
        "fps": cfg.fps,
        "steps": cfg.steps,
        "image_size": cfg.image_size,
        "flow_size": cfg.flow_size,
        "rep_threshold": cfg.rep_threshold,
        "min_duration": cfg.min_duration,
        "max_grid": cfg.max_grid,
        "frame_encoder": ids["frame"],
        "captioner": ids["captioner"],
    }
    if cfg.captioner == "hf-blip":
        sig["caption_frames"] = cfg.caption_frames
    else:
        sig["caption_topk"] = cfg.caption_topk
    return sig


def audio_signature(cfg: ExtractConfig) -> dict[str, Any]:
    """Every setting the audio features depend on."""
    ids = model_identities(cfg)
    return {
        "version": FEATURE_VERSION,
        "steps": cfg.steps,
        "sample_rate": cfg.sample_rate,
        "silence_dbfs": cfg.silence_dbfs,
        "audio_encoder": ids["audio"],
        "tagger": ids["tagger"],
    }


STORE_DIR = "store"
PACK_VERSION = "v2"  # v2: packs are views of the shared store (v1 packs, per partition, ignored)


def partition_dir(cfg: ExtractConfig, partition: int | str) -> Path:
    """``<cache_dir>/<partition>`` (partition: client id or ``"test"``): holds its packs only."""
    return Path(cfg.cache_dir) / str(partition)


def store_dir(cfg: ExtractConfig) -> Path:
    """``<cache_dir>/store``: the shard groups shared by every partition and plan."""
    return Path(cfg.cache_dir) / STORE_DIR


def open_stores(cfg: ExtractConfig) -> tuple[ShardStore, ShardStore]:
    """The (video, audio) shard stores of the cache for the current config (all partitions)."""
    root = store_dir(cfg)
    return (
        ShardStore.open(root, "video", video_signature(cfg)),
        ShardStore.open(root, "audio", audio_signature(cfg)),
    )


def migrate_partition_groups(cfg: ExtractConfig) -> int:
    """Move the shards of caches from before the shared store into it; return how many.

    Such caches kept a group per partition (``<cache_dir>/<partition>/<kind>-<hash>/``). Shard ids
    are unique and group names (signature hashes) unchanged, so each finished shard is renamed
    into ``<cache_dir>/store/<kind>-<hash>/shards/`` and adopted there as an orphan (a new index
    line); nothing is recomputed. Emptied old groups are removed. Run it with no extraction of an
    older fedvida version writing into the same cache.
    """
    cache, store = Path(cfg.cache_dir), store_dir(cfg)
    if not cache.is_dir():
        return 0
    moved = 0
    for part in cache.iterdir():
        if part.name == STORE_DIR or not part.is_dir():
            continue
        for group in part.iterdir():
            if not group.name.startswith(("video-", "audio-")) or not group.is_dir():
                continue
            dest = store / group.name
            (dest / SHARDS).mkdir(parents=True, exist_ok=True)
            sig = group / "signature.json"
            if sig.is_file() and not (dest / "signature.json").exists():
                shutil.copyfile(sig, dest / "signature.json")
            shards = group / SHARDS
            for shard in sorted(shards.iterdir()) if shards.is_dir() else []:
                if shard.name.startswith(".tmp-") or not (shard / "meta.json").is_file():
                    continue
                try:
                    os.rename(shard, dest / SHARDS / shard.name)
                    moved += 1
                except OSError:  # another process moved it first
                    continue
            _remove_if_emptied(group)
    return moved


def _remove_if_emptied(group: Path) -> None:
    """Remove an old group whose finished shards have all moved (else leave it for a rerun)."""
    shards = group / SHARDS
    if shards.is_dir() and any(not d.name.startswith(".tmp-") for d in shards.iterdir()):
        return
    shutil.rmtree(group, ignore_errors=True)


def clip_path(plan: Plan, clip: PlannedClip) -> Path:
    """A planned clip's file (dataset root relative to the working directory)."""
    return Path(plan.dataset_root) / clip.relpath


def _gather(
    store: ShardStore, keys: list[str], names: tuple[str, ...], shapes: dict[str, tuple[int, ...]]
) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    """Rows of `keys` from a store: arrays (zeros for row -1) and each key's per-key meta."""
    index = store.index()
    out: dict[str, np.ndarray] = {}
    per_key: list[dict[str, Any]] = [{} for _ in keys]
    by_shard: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for i, k in enumerate(keys):
        by_shard[index[k].shard].append((i, index[k].row))
    for shard, pairs in by_shard.items():
        meta = store.meta(shard)
        pos = {k: j for j, k in enumerate(meta["keys"])}
        for i, _ in pairs:
            j = pos[keys[i]]
            per_key[i] = {n: v[j] for n, v in meta.items() if n not in ("keys", "rows")}
        hits = [(i, r) for i, r in pairs if r >= 0]
        if not hits:
            continue
        dst, src = np.array([i for i, _ in hits]), np.array([r for _, r in hits])
        for name in names:
            arr = store.array(shard, name)
            if name not in out:
                out[name] = np.zeros((len(keys), *arr.shape[1:]), dtype=arr.dtype)
            out[name][dst] = arr[src]
    for name in names:
        if name not in out:  # none of these clips has a row: take the widths from another clip
            out[name] = np.zeros((len(keys), *_row_shape(store, name, shapes[name])),
                                 dtype=np.float32)
    return out, per_key


def _row_shape(store: ShardStore, name: str, default: tuple[int, ...]) -> tuple[int, ...]:
    """Shape of one row of array `name` in any shard of the store (`default` if none has one),
    so that a partition whose clips all lack audio still gets (N, T, Da) zeros."""
    for shard in dict.fromkeys(r.shard for r in store.index().values() if r.row >= 0):
        try:
            return tuple(store.array(shard, name).shape[1:])
        except (OSError, ValueError):
            continue
    return default


def build_pack(cfg: ExtractConfig, plan: Plan, partition: int | str, packs: Path) -> Path:
    """Assemble a partition's features in plan order into ``packs/<pack id>`` (atomically) and
    point ``packs/HEAD.json`` at it; returns the pack folder."""
    clips = plan.partition(partition)
    keys = [clip_key(clip_path(plan, c)) for c in clips]
    vstore, astore = open_stores(cfg)
    offsets = {"video": vstore.index_size(), "audio": astore.index_size()}  # before reading
    vindex, aindex = vstore.index(), astore.index()
    missing = [c.relpath for c, k in zip(clips, keys, strict=True)
               if k not in vindex or k not in aindex]
    if missing:
        raise FedvidaError(
            f"partition {partition}: {len(missing)} of {len(clips)} clips have no cached features "
            f"for this extract config (e.g. {missing[0]}); run `fedvida extract --client "
            f"{partition}`"
        )
    h = hashlib.sha256(packs.name.encode())
    for k in keys:
        v, a = vindex[k], aindex[k]
        h.update(f"|{v.shard}:{v.row}/{a.shard}:{a.row}".encode())
    pack_dir = packs / h.hexdigest()[:20]
    if not (pack_dir / "meta.json").is_file():
        _write_pack(cfg, clips, keys, vstore, astore, pack_dir)
    _write_head(packs, {"pack": pack_dir.name, "offsets": offsets, "keys": sorted(set(keys))})
    return pack_dir


def _write_pack(cfg: ExtractConfig, clips: list[PlannedClip], keys: list[str],
                vstore: ShardStore, astore: ShardStore, pack_dir: Path) -> None:
    vindex = vstore.index()
    kept = [i for i, k in enumerate(keys) if vindex[k].row >= 0]
    kkeys = [keys[i] for i in kept]
    t = cfg.steps
    video, vmeta = _gather(vstore, kkeys, VIDEO_ARRAYS, {"rgb": (t, 1), "flow": (t, 1),
                                                         "dis": (t,), "rep": (t,)})
    audio, ameta = _gather(astore, kkeys, AUDIO_ARRAYS, {"audio": (t, 1), "tags": (527,)})
    _, failed_meta = _gather(vstore, keys, (), {})
    reasons = [m["reasons"] for m in ameta]
    arrays = {
        "rgb": video["rgb"].astype(np.float32, copy=False),
        "flow": video["flow"].astype(np.float32, copy=False),
        "dis": video["dis"].astype(np.float32, copy=False),
        "rep": video["rep"].astype(bool),
        "audio": audio["audio"].astype(np.float32, copy=False),
        "tags": audio["tags"].astype(np.float32, copy=False),
        "present": np.array([r == "" for r in reasons], dtype=bool),
        "labels": np.array([clips[i].label for i in kept], dtype=np.int64),
    }
    meta = {
        "relpaths": [clips[i].relpath for i in kept],
        "kept": kept,
        "reasons": reasons,
        "captions": [m["captions"] for m in vmeta],
        "skipped": [[c.relpath, m["failed"]] for c, m in zip(clips, failed_meta, strict=True)
                    if m["failed"]],
    }
    pack_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=pack_dir.parent))
    for name, arr in arrays.items():
        np.save(tmp / f"{name}.npy", arr)
    (tmp / "meta.json").write_text(json.dumps(meta))
    try:
        os.rename(tmp, pack_dir)
    except OSError:  # another process packed the same partition first
        shutil.rmtree(tmp, ignore_errors=True)


def view_id(cfg: ExtractConfig, plan: Plan, partition: int | str,
            stores: tuple[ShardStore, ShardStore] | None = None) -> str:
    """Id of a partition's view: the two groups, its relpaths and labels in plan order.

    The dataset is not touched (no clip key), so a view is found without the clip files.
    """
    vstore, astore = stores or open_stores(cfg)
    h = hashlib.sha256(f"{PACK_VERSION}|{vstore.root.name}|{astore.root.name}".encode())
    for c in plan.partition(partition):
        h.update(f"|{c.relpath}:{c.label}".encode("utf-8", "surrogateescape"))
    return f"{PACK_VERSION}-{h.hexdigest()[:20]}"


def _head_pack(stores: tuple[ShardStore, ShardStore], packs: Path) -> Path | None:
    """The pack HEAD names if the store gained no shard holding one of its clips since."""
    try:
        head = json.loads((packs / HEAD).read_text())
        pack_dir = packs / str(head["pack"])
        offsets, keys = head["offsets"], set(head["keys"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        return None
    if not (pack_dir / "meta.json").is_file():
        return None
    moved = dict(offsets)
    for kind, store in zip(("video", "audio"), stores, strict=True):
        since = store.keys_since(int(offsets[kind]))
        if since is None or not keys.isdisjoint(since[0]):
            return None
        moved[kind] = since[1]
    if moved != offsets:  # only other partitions' shards since: move HEAD past them
        _write_head(packs, {**head, "offsets": moved})
    return pack_dir


def _write_head(packs: Path, head: dict[str, Any]) -> None:
    tmp = packs / f".tmp-HEAD-{os.getpid()}-{uuid.uuid4().hex[:8]}.json"
    tmp.write_text(json.dumps(head))
    os.replace(tmp, packs / HEAD)


def ensure_pack(cfg: ExtractConfig, plan: Plan, partition: int | str, *,
                check_files: bool = False) -> Path:
    """The partition's current pack folder, built (from the store) if needed.

    With `check_files` the clip files are keyed again (stat), so a pack of an edited clip's old
    key is replaced (extraction does this); otherwise `HEAD.json` decides, without the files.
    """
    stores = open_stores(cfg)
    packs = partition_dir(cfg, partition) / "packs" / view_id(cfg, plan, partition, stores)
    pack_dir = None if check_files else _head_pack(stores, packs)
    if pack_dir is None:
        packs.mkdir(parents=True, exist_ok=True)
        pack_dir = build_pack(cfg, plan, partition, packs)
    return pack_dir


def load_features(
    cfg: Config, plan: Plan, partition: int | str, *, withhold: bool = True
) -> FeatureSet:
    """Features of one partition in plan order, with the plan's withholding applied.

    Parameters
    ----------
    cfg
        The root config (uses ``cfg.extract``).
    plan
        The partition plan; its ``withheld`` flags are applied here.
    partition
        Client id (int or its string) or ``"test"``.
    withhold
        False gives the *oracle* view: the same clips with the withheld audio given back (for
        the evaluator's real-audio reference only; never for training or a method's input).

    Returns
    -------
    FeatureSet
        Memory-mapped, read-only arrays (``audio`` and ``tags`` are in-memory copies when the
        plan withholds some clip that has audio).

    Raises
    ------
    FedvidaError
        When some planned clip has not been extracted with this config.
    """
    ecfg = cfg.extract
    clips = plan.partition(partition)
    pack_dir = ensure_pack(ecfg, plan, partition)
    meta = json.loads((pack_dir / "meta.json").read_text())
    arr = {n: np.load(pack_dir / f"{n}.npy", mmap_mode="r") for n in PACK_ARRAYS}
    withheld = np.array([clips[i].withheld for i in meta["kept"]], dtype=bool)
    if not withhold:
        withheld[:] = False
    present = np.asarray(arr["present"])
    hide = withheld & present
    audio, tags = arr["audio"], arr["tags"]
    if hide.any():
        audio, tags = np.array(audio), np.array(tags)
        audio[hide] = 0.0
        tags[hide] = 0.0
    reasons = ["withheld" if h else r for h, r in zip(hide, meta["reasons"], strict=True)]
    return FeatureSet(
        relpaths=list(meta["relpaths"]),
        labels=np.asarray(arr["labels"]),
        rgb=arr["rgb"],
        flow=arr["flow"],
        audio=audio,
        audio_present=present & ~withheld,
        audio_reason=reasons,
        tags=tags,
        rep_steps=np.asarray(arr["rep"]),
        captions=list(meta["captions"]),
        motion=arr["dis"],
        skipped=[(p, r) for p, r in meta["skipped"]],
    )
