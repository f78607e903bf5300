"""Video probing and timestamp-based frame sampling (PyAV).

Frames are chosen by presentation time, never by frame index, so that clips at 24, 25, 29.97 or
30 fps (or with variable frame rate) give the same sampling. The policy, in two steps:

1. **6 fps grid** (``fps``): timestamps ``t_k = (k + 0.5) / fps`` for ``k = 0 .. n-1`` with
   ``n = max(1, round(duration * fps))``; each takes the decoded frame whose timestamp is nearest.
   A 2.5-4 s clip gives the research's 15-24 frames. Grids longer than ``max_grid`` (very long
   videos) are thinned to ``max_grid`` timestamps spread uniformly over the clip.
2. **Exactly ``steps`` (18) steps**: step ``j`` takes grid frame
   ``round(j * (n - 1) / (steps - 1))`` (nearest neighbour on a uniform time axis). With
   n == 18 this is the identity (the research's clips); with fewer grid frames some are repeated,
   evenly spread over the clip (never padding at the end); with more, frames are dropped evenly
   (never trimming the tail).

`grid_to_steps` gives that index map; optical flow is computed on the grid (consecutive real
frames) and mapped through the same index map, so a repeated frame never produces a zero flow.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from av.container import InputContainer

from fedvida.data.media import (
    EmptyFileError,
    clip_duration,
    first_frame_rotation,
    frame_rotation,
    open_input,
    pick_audio_stream,
    pick_video_stream,
    stream_timing,
)
from fedvida.errors import InputError


@dataclass(frozen=True)
class VideoInfo:
    """What `probe_video` reads from a container (headers; packets only when they lack a duration).

    ``duration`` is the clip's (its longest chosen stream, on the video's time axis, see
    `fedvida.data.media`); ``video_duration`` the video stream's own. ``width`` / ``height`` are
    the stored pixels; ``rotation`` the display rotation (counter-clockwise degrees).
    """

    path: str
    fps: float
    duration: float
    num_frames: int
    width: int
    height: int
    codec: str
    has_audio: bool
    audio_rate: int | None
    audio_channels: int | None
    video_duration: float = 0.0
    rotation: int = 0
    audio_start: float = 0.0  # audio start (s) relative to the video start
    variable_fps: bool = False  # average and nominal (r_frame_rate) rates differ by > 1 %


class VideoError(InputError):
    """A video that cannot be used, with a short machine-readable reason.

    Reasons: ``missing``, ``unreadable``, ``no_video``, ``too_short``, ``truncated``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _probe(container: InputContainer, p: Path) -> VideoInfo:
    vs = pick_video_stream(container)
    if vs is None:
        raise VideoError("no_video", f"{p}: no video stream")
    audio = pick_audio_stream(container)
    timing = stream_timing(container, vs, audio)
    rate = vs.average_rate or vs.guessed_rate or vs.base_rate
    fps = float(rate) if rate else 0.0
    nominal = float(vs.base_rate) if vs.base_rate else 0.0
    average = float(vs.average_rate) if vs.average_rate else 0.0
    variable = average > 0 and nominal > 0 and abs(average - nominal) > 0.01 * nominal
    video_duration = max(0.0, timing.video_end - timing.video_start)
    duration = clip_duration(timing.video_start, timing.video_end, timing.audio_end)
    num_frames = int(vs.frames or 0)
    if num_frames <= 0 and fps > 0:
        num_frames = max(1, int(round(video_duration * fps)))
    if num_frames == 1 and video_duration > 0:
        fps = 1.0 / video_duration  # a still picture: one frame over its own duration
    return VideoInfo(
        path=str(p),
        fps=fps,
        duration=duration,
        num_frames=num_frames,
        width=int(vs.codec_context.width),
        height=int(vs.codec_context.height),
        codec=str(vs.codec_context.name),
        has_audio=audio is not None,
        audio_rate=int(audio.rate) if audio is not None and audio.rate else None,
        audio_channels=int(audio.channels) if audio is not None else None,
        video_duration=video_duration,
        rotation=first_frame_rotation(container, vs),
        audio_start=(timing.audio_start - timing.video_start) if audio is not None else 0.0,
        variable_fps=variable and num_frames > 1,
    )


def probe_video(path: str | Path) -> VideoInfo:
    """Read a video file's stream headers.

    Parameters
    ----------
    path
        Any container PyAV/FFmpeg can open (mp4, webm, mkv, avi...).

    Returns
    -------
    VideoInfo
        Frame rate, duration in seconds (see `fedvida.data.media`), frame count (estimated from
        duration x fps when the container does not store it), size, codec, rotation and audio
        stream facts.

    Raises
    ------
    VideoError
        ``"<path>: <reason>"`` when the file is missing, empty (``empty file (0 bytes)``),
        unreadable or has no video stream.
    """
    p = Path(path)
    if not p.is_file():
        raise VideoError("missing", f"{p}: file not found")
    try:
        with open_input(p) as container:
            return _probe(container, p)
    except VideoError:
        raise
    except EmptyFileError as exc:
        raise VideoError("unreadable", f"{p}: {exc}") from None
    except (av.FFmpegError, OSError, ValueError, IndexError) as exc:
        raise VideoError("unreadable", f"{p}: unreadable video ({_first_line(exc)})") from None


# Decoder threads per video (0: FFmpeg's choice, one per core). Worker processes, one per core,
# set 1 (`fedvida.features.frames.init_decode_worker`).
DECODE_THREADS = 0


def grid_times(duration: float, fps: float, max_grid: int) -> np.ndarray:
    """Timestamps (s) of the fixed-rate sampling grid over ``[0, duration)``.

    Returns
    -------
    np.ndarray
        ``(n,)`` float64, ``n = clip(round(duration * fps), 1, max_grid)``, centred in each
        ``1 / fps`` slot (uniformly respaced when thinned to ``max_grid``).
    """
    n = max(1, int(round(duration * fps)))
    if n > max_grid:
        n = max_grid
        return (np.arange(n) + 0.5) * (duration / n)
    return (np.arange(n) + 0.5) / fps


def grid_to_steps(n: int, steps: int) -> np.ndarray:
    """Index map from ``steps`` output steps onto an ``n``-frame grid (nearest, uniform in time).

    Examples
    --------
    >>> grid_to_steps(18, 18).tolist() == list(range(18))
    True
    >>> grid_to_steps(3, 5).tolist()
    [0, 0, 1, 2, 2]
    """
    if n <= 1:
        return np.zeros(steps, dtype=np.int64)
    return np.rint(np.arange(steps) * (n - 1) / (steps - 1)).astype(np.int64)


@dataclass
class DecodedFrames:
    """Frames of one clip on the sampling grid, already resized and centre-cropped."""

    frames: np.ndarray  # (n, S, S, 3) uint8 RGB, S = crop size
    times: np.ndarray  # (n,) requested timestamps (s)
    info: VideoInfo


def _resize_dims(width: int, height: int, short_side: int) -> tuple[int, int]:
    scale = short_side / min(width, height)
    return max(short_side, int(round(width * scale))), max(short_side, int(round(height * scale)))


def _upright_crop(frame: av.VideoFrame, short: int, crop: int) -> np.ndarray:
    """One frame resized (short side ``short``, area), turned upright, centre-cropped.

    The display rotation (`fedvida.data.media.frame_rotation`) is applied after resizing.

    Sizes come from the frame itself, so a stream whose frame size changes mid-way still gives
    ``(crop, crop, 3)`` uint8 RGB.
    """
    width, height = _resize_dims(int(frame.width), int(frame.height), short)
    img = frame.to_ndarray(width=width, height=height, format="rgb24", interpolation="AREA")
    rotation = frame_rotation(frame)
    if rotation:
        img = np.rot90(img, k=rotation // 90)  # counter-clockwise
    h, w = img.shape[:2]
    top, left = (h - crop) // 2, (w - crop) // 2
    return np.ascontiguousarray(img[top : top + crop, left : left + crop])


def decode_grid(
    path: str | Path,
    fps: float,
    crop: int,
    resize_short: int | None = None,
    max_grid: int = 72,
    min_duration: float = 0.0,
) -> DecodedFrames:
    """Decode the frames nearest to the ``fps`` grid, resize (short side) and centre-crop.

    The video stream and the clip's duration are chosen as `fedvida.data.media` describes
    (cover pictures skipped; duration of the longest stream, from the packets when the header has
    none); timestamps are relative to the video stream's start; the display rotation is applied.
    A clip whose video ends before its audio repeats its last frame (a still picture with a
    sound track fills every step with its one frame).

    Parameters
    ----------
    path
        Video file.
    fps
        Sampling rate of the grid (6 in the research).
    crop
        Side of the square centre crop (224 for effnet-lite0).
    resize_short
        Short side before cropping; default ``round(crop * 256 / 224)`` (256 for 224).
    max_grid
        Most grid frames for very long videos (see module docstring).
    min_duration
        Clips shorter than this (seconds) are rejected (0: keep every clip).

    Returns
    -------
    DecodedFrames
        ``frames`` ``(n, crop, crop, 3)`` uint8 RGB upright, ``times`` ``(n,)`` seconds.

    Raises
    ------
    VideoError
        Missing, empty, unreadable or truncated files, no decodable frame, unknown duration, or a
        clip shorter than ``min_duration`` (reason ``too_short``).
    """
    info = probe_video(path)
    p = Path(path)
    short = resize_short or int(round(crop * 256 / 224))
    duration = info.duration
    if duration <= 0.0:
        raise VideoError("unreadable", f"{p}: unknown duration")
    if duration < min_duration:
        raise VideoError(
            "too_short", f"{p}: too short ({duration:.2f} s < {min_duration:.2f} s)"
        )
    times = grid_times(duration, fps, max_grid)
    chosen: list[np.ndarray | None] = [None] * len(times)
    decoded = 0
    try:
        with open_input(p) as container:
            vs = pick_video_stream(container)
            if vs is None:
                raise VideoError("no_video", f"{p}: no video stream")
            vs.thread_type = "AUTO"
            if DECODE_THREADS > 0:
                vs.codec_context.thread_count = DECODE_THREADS
            tb = vs.time_base
            if tb is None:
                raise VideoError("unreadable", f"{p}: video stream has no time base")
            start = float(vs.start_time * tb) if vs.start_time is not None else 0.0
            k = 0
            prev: av.VideoFrame | None = None
            prev_t = -np.inf
            last_t = -np.inf
            for frame in container.decode(vs):
                decoded += 1
                if frame.pts is not None:
                    t = float(frame.pts * tb) - start
                else:
                    t = last_t if np.isfinite(last_t) else 0.0
                last_t = t
                while k < len(times) and t >= times[k]:
                    use_prev = prev is not None and (times[k] - prev_t) <= (t - times[k])
                    src = prev if use_prev and prev is not None else frame
                    chosen[k] = _upright_crop(src, short, crop)
                    k += 1
                if k >= len(times):
                    break
                prev, prev_t = frame, t
            if prev is not None:
                tail = _upright_crop(prev, short, crop)
                while k < len(times):  # the stream ended early: nearest is the last frame
                    chosen[k] = tail
                    k += 1
    except VideoError:
        raise
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise VideoError("unreadable", f"{p}: unreadable video ({_first_line(exc)})") from None
    if any(c is None for c in chosen):
        raise VideoError("unreadable", f"{p}: no decodable video frame")
    vdur = info.video_duration or duration
    if decoded > 1 and last_t < 0.5 * vdur and vdur - last_t > 1.0:
        raise VideoError(
            "truncated", f"{p}: truncated (frames end at {last_t:.2f} s of {vdur:.2f} s)"
        )
    frames = np.stack([c for c in chosen if c is not None])
    return DecodedFrames(frames=np.ascontiguousarray(frames), times=times, info=info)
