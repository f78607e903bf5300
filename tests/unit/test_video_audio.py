"""Video probing / timestamp sampling and audio loading on real files (no models)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from media_helpers import dominant_freq, read_index, tone, write_clip, write_wav

from fedvida.data.audio import is_silent, load_audio, resample, segment_windows
from fedvida.data.video import VideoError, decode_grid, grid_times, grid_to_steps, probe_video
from fedvida.errors import InputError

ASSETS = Path(__file__).resolve().parents[1] / "assets"


@pytest.mark.parametrize("fps", [24, 25, Fraction(30000, 1001), 30])
def test_decode_grid_picks_nearest_frame_by_timestamp(tmp_path: Path, fps: Fraction | int) -> None:
    # Arrange: frame i carries i in binary blocks (square frame, no crop)
    clip = write_clip(tmp_path / "c.mp4", fps=fps, seconds=3.0, size=(96, 96))
    # Act
    grid = decode_grid(clip, fps=6.0, crop=64, resize_short=64)
    # Assert: 18 grid frames at (k + 0.5) / 6 s, each the frame nearest in time
    assert grid.frames.shape == (18, 64, 64, 3)
    decoded = np.array([read_index(f) for f in grid.frames])
    exact = grid.times * float(fps)  # fractional frame index of each grid time
    assert np.all(np.abs(decoded - exact) <= 0.5 + 1e-6)


def test_probe_video_reads_headers(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "c.mp4", fps=Fraction(30000, 1001), audio=tone(440, 3, 44100),
                      audio_rate=44100, layout="stereo")
    info = probe_video(clip)
    assert info.fps == pytest.approx(29.97, abs=0.01)
    assert info.duration == pytest.approx(3.0, abs=0.1)
    assert (info.width, info.height, info.codec) == (96, 72, "h264")
    assert info.has_audio and info.audio_rate == 44100 and info.audio_channels == 2


@pytest.mark.parametrize("seconds,grid", [(2.5, 15), (3.0, 18), (4.0, 24), (20.0, 72)])
def test_grid_policy_gives_exactly_18_steps(seconds: float, grid: int) -> None:
    times = grid_times(seconds, 6.0, max_grid=72)
    idx = grid_to_steps(len(times), 18)
    assert len(times) == grid
    assert idx.shape == (18,) and idx[0] == 0 and idx[-1] == grid - 1
    assert np.all(np.diff(idx) >= 0)  # monotone, evenly spread repeats or drops
    assert times.max() < seconds


@pytest.mark.parametrize("case,reason", [
    ("missing", "missing"), ("garbage", "unreadable"), ("short", "too_short"),
    ("truncated", None),
])
def test_bad_video_raises_one_line_error_with_reason(tmp_path: Path, case: str,
                                                     reason: str | None) -> None:
    path = tmp_path / f"{case}.mp4"
    if case == "garbage":
        path.write_bytes(b"this is not a video" * 100)
    elif case == "short":
        write_clip(path, seconds=0.5)
    elif case == "truncated":
        full = write_clip(tmp_path / "full.mp4", seconds=3.0).read_bytes()
        path.write_bytes(full[: len(full) // 3])
    with pytest.raises(VideoError) as err:
        decode_grid(path, fps=6.0, crop=64, min_duration=1.0)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    if reason is not None:
        assert err.value.reason == reason
    else:
        assert err.value.reason in {"unreadable", "truncated"}


def test_aac_51_48k_downmixes_to_16k_mono(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "c.mp4", audio=tone(440, 3, 48000), layout="5.1")
    track = load_audio(clip)
    assert track is not None
    assert (track.rate, track.source_rate, track.source_channels) == (16000, 48000, 6)
    assert track.samples.ndim == 1 and track.samples.dtype == np.float32
    assert track.duration == pytest.approx(3.0, abs=0.05)
    assert dominant_freq(track.samples, 16000) == pytest.approx(440, abs=2)


def test_real_bigbuckbunny_track_is_decoded() -> None:
    # A real H.264 + AAC 5.1 48 kHz mp4 (CC-BY, see tests/assets/README.md)
    track = load_audio(ASSETS / "bigbuckbunny.mp4")
    assert track is not None
    assert (track.rate, track.source_rate, track.source_channels) == (16000, 48000, 6)
    assert track.duration == pytest.approx(5.3, abs=0.1)
    assert -60 < track.rms_dbfs < 0 and np.abs(track.samples).max() <= 1.0


def test_44k_stereo_resampling_is_anti_aliased(tmp_path: Path) -> None:
    # 1 kHz must survive; 10 kHz is above the new Nyquist (8 kHz) and must not alias to 6 kHz.
    low, high = tone(1000, 2, 44100), tone(10000, 2, 44100)
    kept = resample(low, 44100, 16000)
    removed = resample(high, 44100, 16000)
    assert kept.shape == (32000,)
    assert dominant_freq(kept, 16000) == pytest.approx(1000, abs=2)
    assert np.sqrt(np.mean(removed**2)) < 0.01 * np.sqrt(np.mean(kept**2))
    clip = write_clip(tmp_path / "s.mp4", audio=low, audio_rate=44100, layout="stereo",
                      seconds=2.0)
    track = load_audio(clip)
    assert track is not None and track.source_channels == 2
    assert dominant_freq(track.samples, 16000) == pytest.approx(1000, abs=2)


def test_sidecar_wav_at_11025_hz(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "c.mp4")  # no audio stream
    write_wav(tmp_path / "c.wav", tone(700, 3, 11025), 11025)
    track = load_audio(clip)
    assert track is not None and track.source_rate == 11025
    assert track.samples.shape[0] == pytest.approx(48000, abs=2)
    assert dominant_freq(track.samples, 16000) == pytest.approx(700, abs=2)


def test_absent_empty_silent_and_unreadable_audio(tmp_path: Path) -> None:
    no_stream = write_clip(tmp_path / "none.mp4")
    assert load_audio(no_stream) is None
    empty = write_clip(tmp_path / "empty.mp4")
    write_wav(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    track = load_audio(empty)
    assert track is not None and track.samples.size == 0 and is_silent(track, -60.0)
    silent = write_clip(tmp_path / "silent.mp4", audio=np.zeros(3 * 48000, np.float32))
    track = load_audio(silent)
    assert track is not None and track.rms_dbfs == -np.inf and is_silent(track, -60.0)
    bad = write_clip(tmp_path / "bad.mp4")
    (tmp_path / "bad.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    with pytest.raises(InputError, match="bad.wav|bad.mp4"):
        load_audio(bad)


def test_segment_windows_are_centred_and_padded() -> None:
    x = np.arange(1, 1801, dtype=np.float32)  # 18 segments of 100 samples
    w = segment_windows(x, 18, 300)
    assert w.shape == (18, 300)
    assert w[0, 150] == 51  # centre of segment 0 is sample 50 (value 51)
    assert np.all(w[0, :100] == 0)  # padded before the clip
    assert w[9, 150] == 951 and np.all(w[9] > 0)
