"""Extract and cache one partition's features: a decode thread feeding batched frozen encoders.

Pipeline per partition (clips in plan order, only those missing from the cache):

- the CPU work per clip (`prepare_video`: decode, Farneback, DIS; `prepare_audio`: load,
  resample, silence check) runs in ``extract.workers`` spawned worker processes
  (`fedvida.data.isolate.IsolatedPool`; default one per core), whose results (numpy arrays) a
  background thread feeds, in plan order, into a bounded queue. A worker that dies on a clip (a
  segmentation fault or abort inside a codec) costs that clip only: it is recorded as
  ``crashed`` (problem log and store, so a rerun does not retry it) and a fresh worker goes on;
  with ``workers: 0`` the work runs in that thread instead, without crash isolation;
- the main thread takes ``batch_clips`` clips at a time, runs the frame encoder on all their
  RGB frames and all their flow images (in chunks of ``encode_batch`` images), the audio encoder
  on all their present tracks, captions the representative frames, and writes one video shard
  and one audio shard (`fedvida.features.store`: atomic, resumable).

Encoders are loaded lazily (`FrozenEncoders`), so a fully cached partition loads no model at all.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedvida.config import Config, ExtractConfig
from fedvida.data.isolate import Crashed, IsolatedPool, default_workers
from fedvida.data.partition import Plan, PlannedClip
from fedvida.errors import ProblemLog
from fedvida.features.cache import (
    clip_path,
    ensure_pack,
    migrate_partition_groups,
    open_stores,
)
from fedvida.features.captions import ClipCaptioner, create_captioner
from fedvida.features.encoders import (
    AudioEncoder,
    FrameEncoder,
    create_audio_encoder,
    create_frame_encoder,
    create_tagger,
    resolve_device,
)
from fedvida.features.frames import (
    AudioWork,
    VideoWork,
    crashed_clip,
    init_decode_worker,
    prepare_clip,
)
from fedvida.features.store import ShardStore, clip_key

STAGES = ("decode", "flow", "dis", "rgb_encode", "flow_encode", "audio", "caption")


class FrozenEncoders:
    """The configured frozen pretrained encoders (frame, audio, tagger, captioner), each loaded
    on first use and then reused across partitions; not the trainable parts (`fedvida.models`).
    """

    def __init__(self, cfg: ExtractConfig, device: str | None = None) -> None:
        import torch

        self.cfg = cfg
        self.device = resolve_device(device or cfg.device)
        torch.set_num_threads(cfg.torch_threads or max(1, (os.cpu_count() or 2) - 1))
        self._frame: FrameEncoder | None = None
        self._audio: AudioEncoder | None = None
        self._tagger: AudioEncoder | None = None
        self._captioner: ClipCaptioner | None = None
        self._pool: IsolatedPool | None = None
        self.load_seconds = 0.0

    def decode_pool(self) -> IsolatedPool:
        """The decode worker pool (`extract.workers` processes, started on demand), kept across
        partitions so that workers are spawned once per run; `close` stops them."""
        if self._pool is None:
            n = default_workers() if self.cfg.workers is None else self.cfg.workers
            self._pool = IsolatedPool(prepare_clip, n, init_decode_worker)
        return self._pool

    def close(self) -> None:
        """Stop the decode workers (encoders stay loaded)."""
        if self._pool is not None:
            self._pool.close()

    def _timed_load(self, build: Callable[[], object]) -> object:
        t0 = time.perf_counter()
        obj = build()
        self.load_seconds += time.perf_counter() - t0
        return obj

    @property
    def frame(self) -> FrameEncoder:
        if self._frame is None:
            self._frame = self._timed_load(  # type: ignore[assignment]
                lambda: create_frame_encoder(self.cfg, self.device))
        assert self._frame is not None
        return self._frame

    @property
    def audio(self) -> AudioEncoder:
        if self._audio is None:
            self._audio = self._timed_load(  # type: ignore[assignment]
                lambda: create_audio_encoder(self.cfg, self.device))
        assert self._audio is not None
        return self._audio

    @property
    def tagger(self) -> AudioEncoder:
        """The audio encoder when it tags AudioSet itself, else ``extract.tagger``."""
        if self.audio.tags_audioset:
            return self.audio
        if self._tagger is None:
            self._tagger = self._timed_load(  # type: ignore[assignment]
                lambda: create_tagger(self.cfg, self.device))
        assert self._tagger is not None
        return self._tagger

    @property
    def captioner(self) -> ClipCaptioner:
        if self._captioner is None:
            self._captioner = self._timed_load(  # type: ignore[assignment]
                lambda: create_captioner(self.cfg, self.frame, self.device))
        assert self._captioner is not None
        return self._captioner


@dataclass
class ExtractStats:
    """What one `extract_partition` call did."""

    partition: str
    total: int = 0
    cached: int = 0  # clips with both groups already cached
    video_computed: int = 0
    audio_computed: int = 0
    failed: Counter[str] = field(default_factory=Counter)  # video failures by reason (skipped)
    audio_absent: Counter[str] = field(default_factory=Counter)  # usable videos, by reason
    audio_present: int = 0  # clips with a usable video and usable audio (computed this call)
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    wall: float = 0.0

    @property
    def computed(self) -> int:
        return max(self.video_computed, self.audio_computed)


@dataclass(eq=False)
class _Item:
    index: int
    key: str
    path: Path
    need_video: bool
    need_audio: bool
    video: VideoWork | None = None  # filled by the producer when need_video
    audio: AudioWork | None = None  # filled by the producer when need_audio


def _encode_images(encoder: FrameEncoder, images: np.ndarray, chunk: int) -> tuple[
        np.ndarray, np.ndarray | None]:
    feats, logits = [], []
    for s in range(0, len(images), chunk):
        f, lg = encoder.encode(images[s : s + chunk])
        feats.append(f)
        logits.append(lg)
    has_logits = all(lg is not None for lg in logits)
    return (np.concatenate(feats),
            np.concatenate([lg for lg in logits if lg is not None]) if has_logits else None)


def _video_batch(items: list[_Item], models: FrozenEncoders, stats: ExtractStats) -> tuple[
        dict[str, np.ndarray], dict[str, list[str]], list[int]]:
    """Encode the successful clips of a batch -> shard arrays, per-key meta, rows."""
    cfg = models.cfg
    ok_pos = [i for i, it in enumerate(items) if it.video is not None and not it.video.failed]
    ok = [items[i] for i in ok_pos]
    rows, r = [], 0
    for it in items:
        assert it.video is not None
        rows.append(r if not it.video.failed else -1)
        r += 0 if it.video.failed else 1
    captions = [""] * len(items)
    arrays: dict[str, np.ndarray] = {}
    if ok:
        works = [it.video for it in ok if it.video is not None]
        counts = np.cumsum([0] + [len(w.frames) for w in works])
        t0 = time.perf_counter()
        rgb, logits = _encode_images(models.frame, np.concatenate([w.frames for w in works]),
                                     cfg.encode_batch)  # (sum U, D)
        t1 = time.perf_counter()
        flow, _ = _encode_images(models.frame, np.concatenate([w.flows for w in works]),
                                 cfg.encode_batch)
        t2 = time.perf_counter()
        per_rgb, per_flow, rep_frames, rep_logits, rep_motion = [], [], [], [], []
        for j, w in enumerate(works):
            sl = slice(counts[j], counts[j + 1])
            per_rgb.append(rgb[sl][w.step_map])  # (T, D)
            per_flow.append(flow[sl][w.step_map])
            rep_u = np.unique(w.step_map[w.rep])  # distinct frames of the representative steps
            rep_frames.append(w.frames[rep_u])
            rep_logits.append(logits[sl][rep_u] if logits is not None else None)
            motion = np.array([w.dis[w.step_map == u].max() for u in rep_u], np.float32)
            rep_motion.append(motion)
        texts = models.captioner.caption(rep_frames, rep_logits, rep_motion)
        t3 = time.perf_counter()
        for pos, text in zip(ok_pos, texts, strict=True):
            captions[pos] = text
        arrays = {
            "rgb": np.stack(per_rgb).astype(np.float32),  # (B, T, D)
            "flow": np.stack(per_flow).astype(np.float32),
            "dis": np.stack([w.dis for w in works]),  # (B, T)
            "rep": np.stack([w.rep for w in works]),
        }
        stats.seconds["rgb_encode"] += t1 - t0
        stats.seconds["flow_encode"] += t2 - t1
        stats.seconds["caption"] += t3 - t2
    for it in items:
        assert it.video is not None
        for k, v in it.video.seconds.items():
            stats.seconds[k] += v
        if it.video.failed:
            stats.failed[it.video.failed] += 1
    meta = {
        "captions": captions,
        "failed": [it.video.failed if it.video else "" for it in items],
        "details": [it.video.detail if it.video else "" for it in items],
    }
    return arrays, meta, rows


def _audio_batch(items: list[_Item], models: FrozenEncoders, stats: ExtractStats) -> tuple[
        dict[str, np.ndarray], dict[str, list[str]], list[int]]:
    cfg = models.cfg
    works = [it.audio for it in items if it.audio is not None]
    present = [w for w in works if w.wave is not None]
    rows, r = [], 0
    for w in works:
        rows.append(r if w.wave is not None else -1)
        r += 1 if w.wave is not None else 0
    arrays: dict[str, np.ndarray] = {}
    t0 = time.perf_counter()
    if present:
        waves = [w.wave for w in present if w.wave is not None]
        emb, tags = models.audio.encode(waves, cfg.sample_rate, cfg.steps)  # (B, T, Da)
        if tags is None:
            _, tags = models.tagger.encode(waves, cfg.sample_rate, cfg.steps)
        assert tags is not None
        arrays = {"audio": emb.astype(np.float32), "tags": tags.astype(np.float32)}
    stats.seconds["audio"] += time.perf_counter() - t0 + sum(w.seconds for w in works)
    meta = {"reasons": [w.reason for w in works], "details": [w.detail for w in works]}
    return arrays, meta, rows


def _producer(items: list[_Item], cfg: ExtractConfig, pool: IsolatedPool,
              out: queue.Queue[_Item | None], stop: threading.Event,
              errors: list[BaseException]) -> None:
    tasks = ((it.path, cfg, it.need_video, it.need_audio) for it in items)
    results = pool.imap(tasks)
    try:
        for result, it in zip(results, items, strict=False):  # results first: runs it to its end
            if isinstance(result, Crashed):
                result = crashed_clip(it.path, cfg, it.need_video, it.need_audio, result)
            it.video, it.audio = result
            out.put(it)
            if stop.is_set():
                return
    except BaseException as exc:  # noqa: BLE001 - re-raised by the main thread
        errors.append(exc)
    finally:
        results.close()  # an early stop closes the pool (no stale results for the next call)
        out.put(None)


def extract_partition(
    cfg: Config,
    plan: Plan,
    partition: int | str,
    models: FrozenEncoders,
    *,
    on_clip: Callable[[int], None] | None = None,
    problems: ProblemLog | None = None,
) -> ExtractStats:
    """Extract every clip of a partition not yet in the cache's shared store into it.

    Parameters
    ----------
    cfg
        Root config (``cfg.extract`` is used).
    plan
        The partition plan (`withheld` is ignored: extraction covers every clip).
    partition
        Client id or ``"test"``.
    models
        Lazily loaded encoders (shared across partitions).
    on_clip
        Called with the number of clips finished (cached ones included) as work progresses.
    problems
        Receives one entry per failed video and per clip without usable audio.

    Returns
    -------
    ExtractStats
        Counts and per-stage seconds (summed over clips).
    """
    ecfg = cfg.extract
    t_start = time.perf_counter()
    clips = plan.partition(partition)
    stats = ExtractStats(partition=str(partition), total=len(clips))
    migrate_partition_groups(ecfg)  # caches from before the shared store: move, not redo
    vstore, astore = open_stores(ecfg)  # the cache's one store: clips of any partition count
    vstore.clean_tmp()
    astore.clean_tmp()
    vindex, aindex = vstore.index(), astore.index()
    todo: list[_Item] = []
    for i, c in enumerate(clips):
        path = clip_path(plan, c)
        key = clip_key(path)
        need_v, need_a = key not in vindex, key not in aindex
        if need_v or need_a:
            todo.append(_Item(i, key, path, need_v, need_a))
    stats.cached = len(clips) - len(todo)
    if on_clip and stats.cached:
        on_clip(stats.cached)
    if todo:
        _run(todo, ecfg, models, stats, vstore, astore, on_clip, problems, clips)
    # so that training never needs the dataset files (and an edited clip's new key is packed)
    ensure_pack(ecfg, plan, partition, check_files=True)
    stats.wall = time.perf_counter() - t_start
    return stats


def _run(todo: list[_Item], ecfg: ExtractConfig, models: FrozenEncoders, stats: ExtractStats,
         vstore: ShardStore, astore: ShardStore, on_clip: Callable[[int], None] | None,
         problems: ProblemLog | None, clips: list[PlannedClip]) -> None:
    q: queue.Queue[_Item | None] = queue.Queue(maxsize=2 * ecfg.batch_clips)
    stop = threading.Event()
    errors: list[BaseException] = []
    worker = threading.Thread(target=_producer,
                              args=(todo, ecfg, models.decode_pool(), q, stop, errors),
                              daemon=True)
    worker.start()
    try:
        done = False
        while not done:
            batch: list[_Item] = []
            while len(batch) < ecfg.batch_clips:
                it = q.get()
                if it is None:
                    done = True
                    break
                batch.append(it)
            if not batch:
                break
            vitems = [it for it in batch if it.need_video]
            aitems = [it for it in batch if it.need_audio]
            if vitems:
                arrays, meta, rows = _video_batch(vitems, models, stats)
                vstore.write_shard([it.key for it in vitems], rows, arrays, meta)
                stats.video_computed += len(vitems)
            if aitems:
                arrays, meta, rows = _audio_batch(aitems, models, stats)
                astore.write_shard([it.key for it in aitems], rows, arrays, meta)
                stats.audio_computed += len(aitems)
            for it in batch:
                rel = clips[it.index].relpath
                if it.video is not None and problems is not None:
                    for reason, detail in it.video.notes:
                        problems.add(rel, reason, detail)
                if it.video is not None and it.video.failed:
                    if problems is not None:
                        problems.add(rel, it.video.failed, it.video.detail)
                elif it.audio is not None and it.audio.reason:
                    stats.audio_absent[it.audio.reason] += 1
                    if problems is not None:
                        problems.add(rel, f"audio_{it.audio.reason}", it.audio.detail)
                elif it.audio is not None:
                    stats.audio_present += 1
            if on_clip:
                on_clip(len(batch))
        if errors:  # e.g. WorkerStartError: finished shards stay, nothing is marked crashed
            raise errors[0]
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                worker.join(timeout=0.05)
