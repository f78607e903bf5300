"""`fedvida data inspect`: probe every clip of a dataset index and summarise what is there.

Each clip's headers are read (`probe_video`) and its audio track decoded (`load_audio`) to
measure its level, so silent tracks are found as extraction would find them. A file that cannot
be read is recorded in the report's `ProblemLog` and the rest is still inspected. Probing runs in
worker processes (`fedvida.data.isolate`): a clip that crashes its worker (a segmentation fault
in a codec) is recorded as ``crashed`` and the others are still probed.

Frame rates are reported in bins (`fps_bin`): the nearest common rate (23.976, 24, 25, 29.97,
30, 48, 50, 59.94, 60...) when within 0.5 %, else rounded to 1 fps; clips whose container says
their frame rate varies (average and nominal rates differ by more than 1 %) count as
``variable``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedvida.data.audio import is_silent, load_audio
from fedvida.data.isolate import Crashed, IsolatedPool, default_workers
from fedvida.data.mit import ClipRef, DatasetIndex
from fedvida.data.video import probe_video
from fedvida.errors import InputError, ProblemLog

COMMON_RATES = (8.0, 10.0, 12.0, 15.0, 24000 / 1001, 24.0, 25.0, 30000 / 1001, 30.0, 48.0, 50.0,
                60000 / 1001, 60.0, 90.0, 100.0, 120.0, 240.0)


def fps_bin(fps: float, variable: bool = False) -> str:
    """A frame rate's row in the inspect report: ``"29.970"``, ``"17"``, or ``"variable"``.

    Rates within 0.5 % of a common rate take it (3 decimals); others are rounded to whole fps;
    ``variable`` (VFR) or unknown (0) rates are their own bins.
    """
    if variable:
        return "variable"
    if not math.isfinite(fps) or fps <= 0.0:
        return "unknown"
    nearest = min(COMMON_RATES, key=lambda r: abs(r - fps))
    if abs(nearest - fps) <= 0.005 * nearest:
        return f"{nearest:.3f}"
    return f"{round(fps):d}"


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
    rotation: int = 0        # display rotation, counter-clockwise degrees
    variable_fps: bool = False  # average and nominal frame rates differ (VFR)


@dataclass
class InspectReport:
    """Facts per readable clip plus the problems of unreadable ones."""

    facts: list[ClipFacts] = field(default_factory=list)
    problems: ProblemLog = field(default_factory=ProblemLog)
    probed: int = 0

    def fps_counts(self) -> list[tuple[str, int]]:
        """``(fps bin, clips)``: `fps_bin` bins by rate, then ``variable`` and ``unknown``."""
        counts = Counter(fps_bin(f.fps, f.variable_fps) for f in self.facts)

        def order(item: tuple[str, int]) -> tuple[int, float]:
            try:
                return (0, float(item[0]))
            except ValueError:
                return (1, 0.0)

        return sorted(counts.items(), key=order)

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
    return _probe_path(index.path(clip), clip, silence_dbfs, rate, problems)


def _probe_task(path: Path, clip: ClipRef, silence_dbfs: float, rate: int
                ) -> tuple[ClipFacts | None, ProblemLog]:
    """`probe_clip` in a worker process: the facts and the problems it met."""
    problems = ProblemLog()
    try:
        facts = _probe_path(path, clip, silence_dbfs, rate, problems)
    except Exception as exc:  # noqa: BLE001 - any failure is this clip's problem only
        problems.add(clip.relpath, "unreadable", f"{type(exc).__name__}: {exc}")
        facts = None
    return facts, problems


def _probe_path(path: Path, clip: ClipRef, silence_dbfs: float, rate: int,
                problems: ProblemLog) -> ClipFacts | None:
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
                     info.has_audio, audio_ok, level, silent, info.rotation, info.variable_fps)


def inspect_clips(
    index: DatasetIndex,
    clips: Sequence[ClipRef],
    silence_dbfs: float,
    rate: int = 16000,
    on_clip: Callable[[], None] | None = None,
    workers: int | None = None,
) -> InspectReport:
    """Probe `clips` of `index` in worker processes (results in clip order).

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
    workers
        Worker processes (None: one per core; 0: probe in this process, no crash isolation).
        A clip whose worker dies is recorded as ``crashed``, naming its file.
    """
    report = InspectReport()
    n = default_workers() if workers is None else workers
    pool = IsolatedPool(_probe_task, min(n, len(clips)))
    tasks = ((index.path(c), c, silence_dbfs, rate) for c in clips)
    try:
        for clip, result in zip(clips, pool.imap(tasks), strict=False):
            if isinstance(result, Crashed):
                report.problems.add(clip.relpath, "crashed",
                                    f"{index.path(clip)}: {result.describe()} while probing")
            else:
                facts, problems = result
                report.problems.extend(problems)
                if facts is not None:
                    report.facts.append(facts)
            report.probed += 1
            if on_clip is not None:
                on_clip()
    finally:
        pool.close()
    return report


def sample_clips(clips: Sequence[ClipRef], limit: int | None, seed: int = 0) -> list[ClipRef]:
    """At most `limit` clips, a seeded sample kept in the original order (None = all)."""
    if limit is None or len(clips) <= limit:
        return list(clips)
    keep = np.sort(np.random.default_rng(seed).choice(len(clips), size=limit, replace=False))
    return [clips[int(i)] for i in keep]
