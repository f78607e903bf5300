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

from fedvida.errors import InputError

WAV_SUFFIXES = (".wav", ".flac", ".ogg")


@dataclass
class AudioTrack:
    """A decoded, resampled, mono audio track."""

    samples: np.ndarray  # (S,) float32 mono in [-1, 1]
    rate: int  # sample rate of `samples` (Hz)
    source_rate: int  # sample rate of the source track
    source_channels: int  # channel count of the source track
    rms_dbfs: float  # RMS level of `samples` in dB full scale (-inf for digital silence)

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.samples.shape[0] / float(self.rate)


def rms_dbfs(samples: np.ndarray) -> float:
    """RMS level in dBFS of a float signal in [-1, 1]; ``-inf`` for empty or all-zero input."""
    if samples.size == 0:
        return -math.inf
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    return 20.0 * math.log10(rms) if rms > 0.0 else -math.inf


def is_silent(track: AudioTrack, threshold_dbfs: float) -> bool:
    """True when the track is empty or its RMS level is below ``threshold_dbfs``."""
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


def _decode_stream(path: Path, rate: int) -> AudioTrack | None:
    """Decode the first audio stream of a container; None when it has none."""
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        channels = int(stream.channels or 1)
        source_rate = int(stream.rate or 0)
        # Convert any sample format to planar float with the source layout and rate.
        converter = av.AudioResampler(format="fltp", layout=stream.layout, rate=source_rate or None)
        chunks: list[np.ndarray] = []
        for frame in container.decode(stream):
            source_rate = source_rate or int(frame.sample_rate)
            for out in converter.resample(frame):
                chunks.append(out.to_ndarray().reshape(channels, -1))  # (C, n)
        for out in converter.resample(None):
            chunks.append(out.to_ndarray().reshape(channels, -1))
    if source_rate <= 0:
        raise InputError(f"{path}: audio stream has no sample rate")
    if not chunks:
        return AudioTrack(np.zeros(0, np.float32), rate, source_rate, channels, -math.inf)
    data = np.concatenate(chunks, axis=1)  # (C, S)
    return _finish(data.mean(axis=0), source_rate, channels, rate)


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
