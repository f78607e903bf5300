"""Per-clip CPU work before encoding: sampled frames, flow images, motion, and the audio track.

`prepare_video` decodes the clip on the ``fps`` grid (`fedvida.data.video.decode_grid`), computes
Farneback flow images and DIS magnitudes between consecutive grid frames, maps the grid onto
exactly ``steps`` steps, and marks the representative steps. Only the distinct grid frames the
steps use are kept (a 15-frame clip repeats 3 of them), with the step -> frame map, so the encoder
never runs twice on the same image. `prepare_audio` loads the track and decides presence.
Neither raises for bad input: failures come back as a reason and a one-line detail.
`prepare_clip` is both, the task an extraction worker process runs (`fedvida.data.isolate`);
`crashed_clip` what stands for it when the worker died.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedvida.config import ExtractConfig
from fedvida.data.audio import is_silent, load_audio
from fedvida.data.isolate import Crashed
from fedvida.data.video import VideoError, decode_grid, grid_to_steps
from fedvida.errors import InputError
from fedvida.features.flow import dis_magnitudes, farneback_images, representative_steps


@dataclass
class VideoWork:
    """A clip's frames ready for the frame encoder, or the reason it failed."""

    frames: np.ndarray  # (U, S, S, 3) uint8 RGB, the distinct grid frames used by the steps
    flows: np.ndarray  # (U, S, S, 3) uint8 RGB flow images of those grid frames
    step_map: np.ndarray  # (T,) int64 index into frames / flows for each step
    dis: np.ndarray  # (T,) float32 DIS magnitude per step
    rep: np.ndarray  # (T,) bool representative steps
    failed: str = ""  # "" or missing|unreadable|no_video|too_short|truncated|error|crashed
    detail: str = ""
    seconds: dict[str, float] = field(default_factory=dict)  # decode, flow, dis
    notes: list[tuple[str, str]] = field(default_factory=list)  # (reason, detail), e.g. short


@dataclass
class AudioWork:
    """A clip's 16 kHz mono samples, or why it has no usable audio."""

    wave: np.ndarray | None  # (S,) float32, None when absent
    reason: str = ""  # "" or no_stream|silent|unreadable|crashed
    detail: str = ""
    seconds: float = 0.0


def _failed_video(
    cfg: ExtractConfig, reason: str, detail: str, secs: dict[str, float]
) -> VideoWork:
    t = cfg.steps
    empty = np.zeros((0, cfg.image_size, cfg.image_size, 3), np.uint8)
    return VideoWork(empty, empty, np.zeros(t, np.int64), np.zeros(t, np.float32),
                     np.zeros(t, bool), reason, detail, secs)


def prepare_video(path: Path, cfg: ExtractConfig) -> VideoWork:
    """Decode, flow and motion for one clip (never raises for bad input)."""
    secs: dict[str, float] = {}
    t0 = time.perf_counter()
    try:
        grid = decode_grid(path, cfg.fps, cfg.image_size, max_grid=cfg.max_grid,
                           min_duration=cfg.min_duration)
    except VideoError as exc:
        return _failed_video(cfg, exc.reason, str(exc), secs)
    except Exception as exc:  # noqa: BLE001 - any decoder failure is this clip's problem only
        return _failed_video(cfg, "error", f"{path}: {type(exc).__name__}: {exc}", secs)
    t1 = time.perf_counter()
    secs["decode"] = t1 - t0
    frames = grid.frames  # (n, S, S, 3)
    try:
        flows = farneback_images(frames, cfg.flow_size, cfg.image_size)  # (n, S, S, 3)
        t2 = time.perf_counter()
        secs["flow"] = t2 - t1
        mags = dis_magnitudes(frames, cfg.flow_size)  # (n,)
        secs["dis"] = time.perf_counter() - t2
    except Exception as exc:  # noqa: BLE001 - e.g. cv2.error on a degenerate frame
        return _failed_video(cfg, "error", f"{path}: optical flow: {exc}", secs)
    idx = grid_to_steps(len(frames), cfg.steps)  # (T,)
    used, step_map = np.unique(idx, return_inverse=True)
    dis = mags[idx].astype(np.float32)
    notes = []
    if grid.info.duration < cfg.short_duration:
        notes.append(("short", f"{path}: {grid.info.duration:.2f} s < "
                               f"{cfg.short_duration:.2f} s, kept ({len(frames)} grid frames "
                               f"over {cfg.steps} steps)"))
    return VideoWork(
        frames=frames[used],
        flows=flows[used],
        step_map=step_map.astype(np.int64),
        dis=dis,
        rep=representative_steps(dis, cfg.rep_threshold),
        seconds=secs,
        notes=notes,
    )


def prepare_audio(path: Path, cfg: ExtractConfig) -> AudioWork:
    """Load the clip's audio and decide presence (never raises for bad input)."""
    t0 = time.perf_counter()
    try:
        track = load_audio(path, cfg.sample_rate)
    except InputError as exc:
        return AudioWork(None, "unreadable", str(exc), time.perf_counter() - t0)
    except Exception as exc:  # noqa: BLE001 - any decoder failure is this clip's problem only
        return AudioWork(None, "unreadable", f"{path}: {type(exc).__name__}: {exc}",
                         time.perf_counter() - t0)
    secs = time.perf_counter() - t0
    if track is None:
        return AudioWork(None, "no_stream", f"{path}: no audio stream and no sidecar wav", secs)
    if track.samples.size == 0:
        return AudioWork(None, "silent", f"{path}: zero-length audio track", secs)
    if is_silent(track, cfg.silence_dbfs):
        detail = f"{path}: RMS without DC {track.rms_dbfs:.1f} dBFS < {cfg.silence_dbfs:.1f}"
        return AudioWork(None, "silent", detail, secs)
    return AudioWork(track.samples, "", "", secs)


def init_decode_worker() -> None:
    """Start of an extraction worker process: one thread each for FFmpeg and OpenCV (the workers
    already use every core; nested thread pools would only compete)."""
    import cv2

    from fedvida.data import video

    video.DECODE_THREADS = 1
    cv2.setNumThreads(1)


def prepare_clip(path: Path, cfg: ExtractConfig, need_video: bool, need_audio: bool
                 ) -> tuple[VideoWork | None, AudioWork | None]:
    """`prepare_video` and / or `prepare_audio` of one clip (the task of an extraction worker)."""
    video = prepare_video(path, cfg) if need_video else None
    audio = prepare_audio(path, cfg) if need_audio else None
    return video, audio


def crashed_clip(path: Path, cfg: ExtractConfig, need_video: bool, need_audio: bool,
                 crash: Crashed) -> tuple[VideoWork | None, AudioWork | None]:
    """What `prepare_clip` stands for when its worker process died: both parts ``crashed``."""
    detail = f"{path}: {crash.describe()} while decoding"
    video = _failed_video(cfg, "crashed", detail, {}) if need_video else None
    audio = AudioWork(None, "crashed", detail) if need_audio else None
    return video, audio
