"""`fedvida data inspect`: probe every clip of a dataset index and summarise what is there.

Each clip's headers are read (`probe_video`) and its audio track decoded (`load_audio`) to
measure its level, so silent tracks are found as extraction would find them. A file that cannot
be read is recorded in the report's `ProblemLog` and the rest is still inspected.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedvida.data.audio import is_silent, load_audio
from fedvida.data.mit import ClipRef, DatasetIndex
from fedvida.data.video import probe_video
from fedvida.errors import InputError, ProblemLog


@dataclass(frozen=True)
class ClipFacts:
    """What probing found for one readable clip."""

    clip: ClipRef
    fps: float
    duration: float
    width: int
    height: int
    codec: str
    has_stream: bool         # the container has an audio stream
    audio_ok: bool | None    # the track decoded (None when there is no track at all)
    rms_dbfs: float | None   # level of the decoded track
    silent: bool             # decoded, but below the silence threshold


@dataclass
class InspectReport:
    """Facts per readable clip plus the problems of unreadable ones."""

    facts: list[ClipFacts] = field(default_factory=list)
    problems: ProblemLog = field(default_factory=ProblemLog)
    probed: int = 0

    def fps_counts(self) -> list[tuple[float, int]]:
        """``(fps rounded to 3 decimals, clips)`` sorted by fps."""
        return sorted(Counter(round(f.fps, 3) for f in self.facts).items())

    def durations(self) -> tuple[float, float, float]:
        """Minimum, median and maximum duration (s); NaNs when nothing was readable."""
        if not self.facts:
            return (math.nan, math.nan, math.nan)
        d = np.array([f.duration for f in self.facts])
        return (float(d.min()), float(np.median(d)), float(d.max()))

    def shares(self) -> dict[str, float]:
        """Shares of readable clips: audio stream present, silent, and usable audio."""
        n = len(self.facts)
        if n == 0:
            return {"audio_stream": 0.0, "silent": 0.0, "usable_audio": 0.0}
        stream = sum(f.has_stream for f in self.facts)
        silent = sum(f.silent for f in self.facts)
        usable = sum(bool(f.audio_ok) and not f.silent for f in self.facts)
        return {"audio_stream": stream / n, "silent": silent / n, "usable_audio": usable / n}

    def counts(self, attr: str) -> list[tuple[str, int]]:
        """Clips per value of a string attribute (``codec``, or ``size`` as ``WxH``)."""
        if attr == "size":
            return Counter(f"{f.width}x{f.height}" for f in self.facts).most_common()
        return Counter(str(getattr(f, attr)) for f in self.facts).most_common()


def _detail(exc: InputError, path: Path) -> str:
    """The error message without its leading ``"<path>: "`` (the problem names the clip)."""
    msg = str(exc)
    return msg[len(f"{path}: "):] if msg.startswith(f"{path}: ") else msg


def probe_clip(index: DatasetIndex, clip: ClipRef, silence_dbfs: float, rate: int,
               problems: ProblemLog) -> ClipFacts | None:
    """Probe one clip; record and return None when its video cannot be read."""
    path = index.path(clip)
    try:
        info = probe_video(path)
    except InputError as exc:
        problems.add(clip.relpath, "unreadable", _detail(exc, path))
        return None
    audio_ok: bool | None = None
    level: float | None = None
    silent = False
    try:
        track = load_audio(path, rate=rate)
        if track is not None:
            audio_ok, level, silent = True, track.rms_dbfs, is_silent(track, silence_dbfs)
    except InputError as exc:
        audio_ok = False
        problems.add(clip.relpath, "audio_unreadable", _detail(exc, path))
    return ClipFacts(clip, info.fps, info.duration, info.width, info.height, info.codec,
                     info.has_audio, audio_ok, level, silent)


def inspect_clips(
    index: DatasetIndex,
    clips: Sequence[ClipRef],
    silence_dbfs: float,
    rate: int = 16000,
    on_clip: Callable[[], None] | None = None,
) -> InspectReport:
    """Probe `clips` of `index` one by one.

    Parameters
    ----------
    index
        The dataset the clips belong to (for their paths).
    clips
        What to probe (e.g. ``index.train + index.test``).
    silence_dbfs
        Tracks whose RMS level is below this count as silent (`extract.silence_dbfs`).
    rate
        Sample rate the audio is decoded to, as extraction does.
    on_clip
        Called after every clip (progress bars).
    """
    report = InspectReport()
    for clip in clips:
        facts = probe_clip(index, clip, silence_dbfs, rate, report.problems)
        if facts is not None:
            report.facts.append(facts)
        report.probed += 1
        if on_clip is not None:
            on_clip()
    return report


def sample_clips(clips: Sequence[ClipRef], limit: int | None, seed: int = 0) -> list[ClipRef]:
    """At most `limit` clips, a seeded sample kept in the original order (None = all)."""
    if limit is None or len(clips) <= limit:
        return list(clips)
    keep = np.sort(np.random.default_rng(seed).choice(len(clips), size=limit, replace=False))
    return [clips[int(i)] for i in keep]
