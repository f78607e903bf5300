"""Audio loading: any container track (PyAV) or a sidecar wav (soundfile) -> 16 kHz mono float32.

Channel layouts (mono, stereo, 5.1, ...) are downmixed by averaging all channels; sample rates
(48 kHz, 44.1 kHz, 11025 Hz, ...) are converted with a polyphase FIR resampler
(`scipy.signal.resample_poly`, anti-aliased), never by dropping samples.

Source order: the video file's first audio stream; if it has none, a sidecar wav with the same
stem (``clip.wav`` next to ``clip.mp4``). A file given directly as ``.wav`` is read as such.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from fedvida.data.media import (
    AUDIO_TAIL_SLACK,
    EmptyFileError,
    clip_duration,
    open_input,
    pick_audio_stream,
    pick_video_stream,
    start_seconds,
    stream_timing,
)
from fedvida.errors import InputError

WAV_SUFFIXES = (".wav", ".flac", ".ogg")


@dataclass
class AudioTrack:
    """A decoded, resampled, mono audio track."""

    samples: np.ndarray  # (S,) float32 mono in [-1, 1]
    rate: int  # sample rate of `samples` (Hz)
    source_rate: int  # sample rate of the source track
    source_channels: int  # channel count of the source track
    rms_dbfs: float  # RMS level of `samples` without their mean (DC), dBFS; -inf: no signal

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.samples.shape[0] / float(self.rate)


def rms_dbfs(samples: np.ndarray) -> float:
    """RMS level in dBFS of a float signal in [-1, 1], DC removed.

    The signal's mean (a DC offset, which is no sound) is subtracted first, so a constant 0.05
    offset measures ``-inf`` and a tone riding on an offset measures the tone alone.

    Returns
    -------
    float
        ``20 log10(sqrt(mean((x - mean(x))^2)))``; ``-inf`` for empty or constant input.
    """
    if samples.size == 0:
        return -math.inf
    x = samples.astype(np.float64)
    rms = float(np.sqrt(np.mean(np.square(x - x.mean()))))
    return 20.0 * math.log10(rms) if rms > 1e-12 else -math.inf


def is_silent(track: AudioTrack, threshold_dbfs: float) -> bool:
    """True when the track is empty or its RMS level without DC is below ``threshold_dbfs``."""
    return track.samples.size == 0 or track.rms_dbfs < threshold_dbfs


def resample(samples: np.ndarray, source_rate: int, rate: int) -> np.ndarray:
    """Polyphase resampling of a 1-D signal from ``source_rate`` to ``rate`` (Hz).

    Returns
    -------
    np.ndarray
        ``(round(S * rate / source_rate),)`` float32.
    """
    if source_rate == rate or samples.size == 0:
        return samples.astype(np.float32, copy=False)
    g = math.gcd(int(source_rate), int(rate))
    out = resample_poly(samples.astype(np.float64), int(rate) // g, int(source_rate) // g)
    return out.astype(np.float32)


def _finish(mono: np.ndarray, source_rate: int, channels: int, rate: int) -> AudioTrack:
    out = np.clip(resample(mono, source_rate, rate), -1.0, 1.0)
    return AudioTrack(out, rate, int(source_rate), int(channels), rms_dbfs(out))


# Integer sample formats -> (offset, scale) mapping them onto [-1, 1).
_INT_FORMATS = {"u8": (128.0, 128.0), "s16": (0.0, 32768.0), "s32": (0.0, 2.0**31),
                "s64": (0.0, 2.0**63)}


# Planar frames with this many channels or more are packed by swresample before `to_ndarray`:
# PyAV's plane list reads past the end of the data pointers from 8 planar channels on (a
# segmentation fault on 7.1 AAC).
_PACK_FROM_CHANNELS = 8


class _Packer:
    """Planar -> packed float conversion (same layout and rate), one swresample per setup."""

    def __init__(self) -> None:
        self._key: tuple[str, str, int] | None = None
        self._resampler: av.AudioResampler | None = None

    def pack(self, frame: av.AudioFrame) -> list[av.AudioFrame]:
        key = (frame.format.name, frame.layout.name, int(frame.sample_rate))
        if key != self._key or self._resampler is None:
            self._key = key
            self._resampler = av.AudioResampler(format="flt", layout=frame.layout,
                                                rate=int(frame.sample_rate))
        return list(self._resampler.resample(frame))


def frame_samples(frame: av.AudioFrame, packer: _Packer | None = None) -> np.ndarray:
    """A decoded audio frame as float32 ``(C, n)`` in [-1, 1], for any sample format.

    Planar formats (``fltp``, ``s16p``...) come as one row per channel, packed ones (``flt``,
    ``s16``...) interleaved; integer formats are scaled to [-1, 1). Planar frames of 8 or more
    channels are first packed by ``packer`` (swresample, same layout and rate).
    """
    channels = max(1, int(frame.layout.nb_channels))
    if frame.format.is_planar and channels >= _PACK_FROM_CHANNELS:
        packed = (packer or _Packer()).pack(frame)
        rows = [p.to_ndarray().reshape(-1, channels).T for p in packed]
        return np.concatenate(rows, axis=1) if rows else np.zeros((channels, 0), np.float32)
    data = frame.to_ndarray()
    fmt = frame.format
    # interleaved (packed) -> (C, n); planar is one row per channel already
    data = data.reshape(channels, -1) if fmt.is_planar else data.reshape(-1, channels).T
    base = fmt.name.rstrip("p")
    if base in _INT_FORMATS:
        offset, scale = _INT_FORMATS[base]
        return ((data.astype(np.float64) - offset) / scale).astype(np.float32)
    return data.astype(np.float32)


def _decode_stream(path: Path, rate: int) -> AudioTrack | None:
    """Decode the clip's audio stream (`fedvida.data.media.pick_audio_stream`); None if none.

    Frames are converted per sample format and downmixed by the mean of their channels; each run
    of frames with one sample rate is resampled to ``rate`` on its own, so a track whose rate or
    layout changes mid-way keeps all of its audio. The track is placed on the video's time axis:
    audio starting after the video gets leading zeros, audio starting before it is trimmed, and
    audio ending more than `AUDIO_TAIL_SLACK` before the clip (the video) is padded with zeros to
    the clip's end, so that the T equal segments of the track are the T steps of the video.
    """
    with open_input(path) as container:
        stream = pick_audio_stream(container)
        if stream is None:
            return None
        video = pick_video_stream(container)
        origin = start_seconds(video) if video is not None else start_seconds(stream)
        clip = 0.0
        if video is not None:
            timing = stream_timing(container, video, stream)
            clip = clip_duration(timing.video_start, timing.video_end, timing.audio_end)
        channels = int(stream.channels or 1)
        source_rate = int(stream.rate or 0)
        segments: list[tuple[int, list[np.ndarray]]] = []  # (rate, mono chunks)
        first_t: float | None = None
        packer = _Packer()
        for frame in container.decode(stream):
            if frame.samples == 0:
                continue
            if first_t is None and frame.pts is not None and frame.time_base is not None:
                first_t = float(frame.pts * frame.time_base)
            fr = int(frame.sample_rate or source_rate)
            mono = frame_samples(frame, packer).mean(axis=0)  # (n,)
            if not segments or segments[-1][0] != fr:
                segments.append((fr, []))
            segments[-1][1].append(mono)
    if segments:
        source_rate = segments[0][0]
    if source_rate <= 0:
        raise InputError(f"{path}: audio stream has no sample rate")
    if not segments:
        return AudioTrack(np.zeros(0, np.float32), rate, source_rate, channels, -math.inf)
    parts = [resample(np.concatenate(chunks), fr, rate) for fr, chunks in segments]
    out = np.concatenate(parts)
    offset = int(round(((first_t if first_t is not None else start_seconds(stream)) - origin)
                       * rate))
    if clip > 0.0:
        offset = min(offset, int(round(clip * rate)))  # broken timestamps: at most the clip
    if offset > 0:
        out = np.concatenate([np.zeros(offset, np.float32), out])
    elif offset < 0:
        out = out[-offset:]
    short = int(round(clip * rate)) - out.shape[0]
    if short > AUDIO_TAIL_SLACK * rate:
        out = np.concatenate([out, np.zeros(short, np.float32)])
    out = np.clip(out, -1.0, 1.0).astype(np.float32)
    return AudioTrack(out, rate, source_rate, channels, rms_dbfs(out))


def _read_wav(path: Path, rate: int) -> AudioTrack:
    data, source_rate = sf.read(str(path), dtype="float32", always_2d=True)  # (S, C)
    channels = data.shape[1]
    if data.shape[0] == 0:
        return AudioTrack(np.zeros(0, np.float32), rate, int(source_rate), channels, -math.inf)
    return _finish(data.mean(axis=1), int(source_rate), channels, rate)


def sidecar_path(path: str | Path) -> Path:
    """The sidecar wav of a video: same folder and stem, ``.wav``."""
    return Path(path).with_suffix(".wav")


def load_audio(path: str | Path, rate: int = 16000) -> AudioTrack | None:
    """Load a clip's audio as mono float32 at ``rate`` Hz.

    Parameters
    ----------
    path
        A video file (its first audio stream, else its sidecar wav) or an audio file.
    rate
        Target sample rate.

    Returns
    -------
    AudioTrack or None
        None when the video has no audio stream and no sidecar wav exists. A track with zero
        samples (and ``rms_dbfs == -inf``) when the stream exists but holds no audio.

    Raises
    ------
    InputError
        ``"<path>: unreadable audio (...)"`` for missing, corrupt or undecodable files.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: file not found")
    try:
        if p.suffix.lower() in WAV_SUFFIXES:
            return _read_wav(p, rate)
        track = _decode_stream(p, rate)
        if track is None:
            wav = sidecar_path(p)
            return _read_wav(wav, rate) if wav.is_file() else None
        return track
    except InputError:
        raise
    except EmptyFileError as exc:
        raise InputError(f"{p}: {exc}") from None
    except (av.FFmpegError, sf.LibsndfileError, OSError, ValueError, RuntimeError) as exc:
        lines = str(exc).strip().splitlines()
        raise InputError(f"{p}: unreadable audio ({lines[0] if lines else type(exc).__name__})") \
            from None


def segment_windows(samples: np.ndarray, steps: int, window: int) -> np.ndarray:
    """Cut ``window``-sample windows centred on each of ``steps`` equal segments of a track.

    A 3 s clip's 1/18 segment (0.167 s) is shorter than an audio model's receptive field
    (0.96 s for YAMNet), so each segment is represented by a window centred on it; windows
    reaching past the clip's ends are zero-padded. Segment ``j`` covers
    ``[j * S / steps, (j + 1) * S / steps)``.

    Parameters
    ----------
    samples
        ``(S,)`` mono track.
    steps
        Number of equal segments T.
    window
        Window length in samples.

    Returns
    -------
    np.ndarray
        ``(steps, window)`` float32.
    """
    n = samples.shape[0]
    half = window // 2
    padded = np.zeros(n + 2 * window, dtype=np.float32)
    padded[window : window + n] = samples
    centres = ((np.arange(steps) + 0.5) * n / steps).astype(np.int64)  # (T,) sample index
    starts = centres - half + window  # index into `padded`
    idx = starts[:, None] + np.arange(window)[None, :]  # (T, window)
    return padded[idx]
