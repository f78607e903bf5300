"""Opening a media file: which streams to use, their timing, and the clip's duration.

One helper for every place a clip is opened (`fedvida.data.video.probe_video`, `decode_grid`,
`fedvida.data.audio.load_audio`), so that they agree on the streams and on the time axis:

- **Video stream**: attached pictures (cover art, disposition ``attached_pic``) are skipped; of
  several remaining video streams the one whose packets run longest wins (demuxed, not decoded;
  ties: more packets, then the first). A file whose only video stream is a cover picture still
  has that picture as its video.
- **Audio stream**: the longest non-attached audio stream, ties to the most channels, then the
  first.
- **Time axis**: the chosen video stream's start time is t = 0. Audio starting later (or earlier)
  is placed on that axis (`fedvida.data.audio`).
- **Duration**: from the stream headers (stream duration, else the container's); when a header has
  none (a WebM written to a pipe, without Duration element or cues) the packets are demuxed (no
  decoding) and the last packet's end time is used. The clip's duration is that of its longest
  chosen stream (`clip_duration`), so a still picture with a 3 s sound track lasts 3 s.
- **Rotation**: the display matrix FFmpeg attaches to decoded frames (`frame_rotation`).
- **Empty files** raise `EmptyFileError` ("empty file (0 bytes)") before FFmpeg sees them.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
from av.container import InputContainer


class EmptyFileError(ValueError):
    """A zero-byte file (FFmpeg would say "Invalid data found when processing input")."""


def open_input(path: str | Path) -> InputContainer:
    """Open a media file for reading.

    Raises
    ------
    EmptyFileError
        The file has 0 bytes.
    av.FFmpegError, OSError
        As PyAV raises them for missing or corrupt files.
    """
    p = Path(path)
    if p.is_file() and p.stat().st_size == 0:
        raise EmptyFileError("empty file (0 bytes)")
    return av.open(str(p))


def _is_attached_pic(stream: Any) -> bool:
    disposition = getattr(stream, "disposition", None)
    try:
        return bool(disposition is not None and disposition & av.stream.Disposition.attached_pic)
    except (AttributeError, TypeError):
        return False


def _header_seconds(stream: Any) -> float:
    """A stream's declared duration in seconds (0.0 when unknown)."""
    if stream.duration is not None and stream.time_base is not None:
        return max(0.0, float(stream.duration * stream.time_base))
    return 0.0


def pick_video_stream(container: InputContainer) -> Any | None:
    """The clip's real video stream (see module docstring); None when there is none.

    With several candidates their packets are demuxed (not decoded) to find the one that runs
    longest and holds the most packets (a one-frame cover track in Matroska has no header
    duration of its own).
    """
    streams = list(container.streams.video)
    if not streams:
        return None
    real = [s for s in streams if not _is_attached_pic(s)] or streams
    if len(real) == 1:
        return real[0]
    try:
        ends, counts = _demux_ends(container, real)
    except (av.FFmpegError, OSError, ValueError):
        ends, counts = {}, {}
    return max(real, key=lambda s: (ends.get(s.index, _header_seconds(s)),
                                    counts.get(s.index, int(s.frames or 0)), -s.index))


def pick_audio_stream(container: InputContainer) -> Any | None:
    """The clip's best audio stream (see module docstring); None when there is none."""
    streams = list(container.streams.audio)
    if not streams:
        return None
    real = [s for s in streams if not _is_attached_pic(s)] or streams
    return max(real, key=lambda s: (round(_header_seconds(s), 1), int(s.channels or 0),
                                    -s.index))


def start_seconds(stream: Any) -> float:
    """A stream's start time in seconds (0.0 when unknown)."""
    if stream is None or stream.start_time is None or stream.time_base is None:
        return 0.0
    return float(stream.start_time * stream.time_base)


def frame_rotation(frame: Any) -> int:
    """Display rotation of a decoded video frame: counter-clockwise degrees (0, 90, 180, 270).

    FFmpeg attaches the stream's display matrix (what phones write: landscape pixels plus
    "rotate 90") to every decoded frame; the stored pixels must be turned by this angle
    counter-clockwise to be shown upright. 0 when the frame carries none.
    """
    try:
        angle = float(getattr(frame, "rotation", 0) or 0)
    except (TypeError, ValueError):
        return 0
    if not math.isfinite(angle):
        return 0
    return int(round(angle / 90.0)) % 4 * 90


def first_frame_rotation(container: InputContainer, stream: Any) -> int:
    """`frame_rotation` of a stream's first decodable frame (0 when none decodes).

    Leaves ``container`` after that frame: call it last, or on a container of its own.
    """
    try:
        for frame in container.decode(stream):
            return frame_rotation(frame)
    except (av.FFmpegError, OSError, ValueError):
        return 0
    return 0


# Audio running past the video by less than this (codec padding: an AAC frame or two) does not
# lengthen the clip.
AUDIO_TAIL_SLACK = 0.1


def clip_duration(video_start: float, video_end: float, audio_end: float) -> float:
    """The clip's duration (s) on the video's time axis: its longest stream.

    Audio ending less than `AUDIO_TAIL_SLACK` after the video keeps the video's duration.
    """
    video = max(0.0, video_end - video_start)
    audio = max(0.0, audio_end - video_start)
    return audio if audio > video + AUDIO_TAIL_SLACK else video


@dataclass(frozen=True)
class StreamTiming:
    """Start and end (s, each stream's own clock) of the chosen streams."""

    video_start: float
    video_end: float  # 0.0 when unknown
    audio_start: float
    audio_end: float  # 0.0 when unknown


def _demux_ends(container: InputContainer, streams: list[Any]
                ) -> tuple[dict[int, float], dict[int, int]]:
    """Last packet end time (s) and packet count per stream index, by demuxing (no decoding).

    The file is opened a second time, so ``container`` stays at its start (a file without an
    index, such as a piped WebM, may not seek back).
    """
    ends: dict[int, float] = {}
    counts: dict[int, int] = {}
    if not streams:
        return ends, counts
    wanted = {s.index for s in streams}
    with av.open(container.name) as other:
        chosen = [s for s in other.streams if s.index in wanted]
        for packet in other.demux(chosen):
            if packet.pts is None or packet.time_base is None:
                continue
            t = float((packet.pts + (packet.duration or 0)) * packet.time_base)
            idx = packet.stream.index
            ends[idx] = max(ends.get(idx, 0.0), t)
            counts[idx] = counts.get(idx, 0) + 1
    return ends, counts


def stream_timing(container: InputContainer, video: Any | None, audio: Any | None) -> StreamTiming:
    """Where the chosen streams start and end, from headers, else by demuxing the packets.

    A stream's end is its start plus its declared duration; without one, the container's duration
    (when it has a single stream kind) or the packets' end.
    """
    chosen = [s for s in (video, audio) if s is not None]
    ends: dict[int, float] = {}
    for s in chosen:
        d = _header_seconds(s)
        if d > 0.0:
            ends[s.index] = start_seconds(s) + d
    missing = [s for s in chosen if s.index not in ends]
    if missing:
        if container.duration is not None and container.duration > 0:
            total = container.duration / 1_000_000.0
            offset = (container.start_time or 0) / 1_000_000.0
            for s in missing:
                ends[s.index] = offset + total
        else:
            with contextlib.suppress(av.FFmpegError, OSError, ValueError):
                ends.update(_demux_ends(container, missing)[0])
    v_end = ends.get(video.index, 0.0) if video is not None else 0.0
    a_end = ends.get(audio.index, 0.0) if audio is not None else 0.0
    return StreamTiming(start_seconds(video), v_end, start_seconds(audio), a_end)
