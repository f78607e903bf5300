"""Torture set, decoding: channel counts, stream choice, durations, timing, format changes,
rotation, still pictures, DC offsets, empty files. Every input is written at test time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from media_helpers import dominant_freq, index_frame, read_index, tone
from media_torture import Unseekable, set_mp4_rotation, write_audio_only, write_av

from fedvida.config import load_config
from fedvida.data.audio import load_audio
from fedvida.data.video import VideoError, decode_grid, probe_video
from fedvida.features.frames import prepare_audio, prepare_video

TONE_DBFS = 20 * np.log10(0.3 / np.sqrt(2))  # a 0.3 sine: -13.5 dBFS


# (channels, layout, codec, container, channels that carry the 440 Hz tone after encoding: the
# AAC encoder low-passes the LFE channel of 5.1 / 7.1, which the mean downmix then averages in)
@pytest.mark.parametrize("channels,layout,codec,ext,carrying", [
    (1, "mono", "aac", "mp4", 1),
    (2, "stereo", "aac", "mp4", 2),
    (6, "5.1", "aac", "mp4", 5),
    (8, "7.1", "aac", "mp4", 7),  # planar 8 channels: a segmentation fault before
    (8, "octagonal", "pcm_s16le", "mkv", 8),
    (9, "9 channels", "pcm_s16le", "mkv", 9),
    (16, "hexadecagonal", "pcm_s16le", "mkv", 16),
    (16, "hexadecagonal", "wavpack", "mkv", 16),  # planar float, 16 channels
])
def test_any_channel_count_decodes_to_the_tone(tmp_path: Path, channels: int, layout: str,
                                               codec: str, ext: str, carrying: int) -> None:
    path = write_audio_only(tmp_path / f"c{channels}.{ext}", layout=layout, codec=codec)
    track = load_audio(path)
    assert track is not None and track.source_channels == channels
    assert track.duration == pytest.approx(1.0, abs=0.03)
    assert dominant_freq(track.samples, 16000) == pytest.approx(440, abs=2)
    # the same tone on every channel: the mean downmix keeps its level
    expected = TONE_DBFS + 20 * np.log10(carrying / channels)
    assert track.rms_dbfs == pytest.approx(expected, abs=0.3)


def _write_cover_clip(path: Path) -> Path:
    write_av(path, audio=tone(440, 3, 48000), cover=True, seconds=3.0, fps=25, size=(64, 64))
    return path


@pytest.mark.parametrize("ext", ["mkv", "mp4"])
def test_cover_picture_stream_is_not_the_video(tmp_path: Path, ext: str) -> None:
    # mkv keeps the one-frame cover as the first video stream; mp4 marks it attached_pic
    path = _write_cover_clip(tmp_path / f"cover.{ext}")
    info = probe_video(path)
    assert info.codec == "h264" and info.fps == pytest.approx(25.0)
    assert info.duration == pytest.approx(3.0, abs=0.05)
    grid = decode_grid(path, fps=6.0, crop=64, resize_short=64)
    decoded = np.array([read_index(f) for f in grid.frames])
    assert np.all(np.abs(decoded - grid.times * 25) <= 0.5 + 1e-6)  # the real, moving video


def test_piped_webm_without_duration_takes_it_from_the_packets(tmp_path: Path) -> None:
    path = tmp_path / "pipe.webm"
    write_av(Unseekable(path), fmt="webm", vcodec="libvpx", acodec="libopus",
             audio=tone(440, 3, 48000), seconds=3.0, fps=25)
    info = probe_video(path)
    assert info.duration == pytest.approx(3.0, abs=0.05)
    grid = decode_grid(path, fps=6.0, crop=48, min_duration=1.0)
    assert grid.frames.shape == (18, 48, 48, 3)
    track = load_audio(path)
    assert track is not None and track.duration == pytest.approx(3.0, abs=0.05)


def test_late_audio_is_placed_on_the_video_timeline(tmp_path: Path) -> None:
    path = tmp_path / "late.mkv"
    write_av(path, audio=tone(440, 2.5, 48000), audio_offset=0.5, seconds=3.0)
    assert probe_video(path).audio_start == pytest.approx(0.5, abs=0.03)
    track = load_audio(path)
    assert track is not None
    lead = int(0.48 * 16000)
    assert np.abs(track.samples[:lead]).max() < 1e-3  # leading silence: 0.5 s
    assert np.abs(track.samples[int(0.6 * 16000) : int(0.7 * 16000)]).max() > 0.2
    assert track.duration == pytest.approx(3.0, abs=0.05)
    # the 18 equal segments are the video's steps (1/6 s each): 0.5 s late = steps 0-2 silent
    # (step 2 ends at 0.503 s in this 3.02 s mkv: a few samples of tone)
    segments = np.array_split(track.samples, 18)
    levels = np.array([np.sqrt(np.mean(s**2)) for s in segments])
    assert np.all(levels[:2] < 1e-3) and levels[2] < 0.05 and np.all(levels[3:] > 0.15)


def test_audio_ending_early_is_padded_to_the_clip(tmp_path: Path) -> None:
    path = tmp_path / "early.mp4"
    write_av(path, audio=tone(440, 2.0, 48000), seconds=3.0)  # sound stops after 2 s
    track = load_audio(path)
    assert track is not None and track.duration == pytest.approx(3.0, abs=0.05)
    assert np.abs(track.samples[int(2.1 * 16000) :]).max() < 1e-3
    assert np.abs(track.samples[int(1.0 * 16000) : int(1.1 * 16000)]).max() > 0.2


def test_mid_stream_audio_rate_layout_and_frame_size_change(tmp_path: Path) -> None:
    # two MPEG-TS segments concatenated (as broadcast / HLS captures are): 44.1 kHz mono 440 Hz
    # at 64x48, then 48 kHz stereo 1 kHz at 96x48
    first, second = tmp_path / "a.ts", tmp_path / "b.ts"
    write_av(first, fmt="mpegts", seconds=1.5, size=(64, 48), audio=tone(440, 1.5, 44100),
             audio_rate=44100, layout="mono")
    write_av(second, fmt="mpegts", seconds=1.5, size=(96, 48), audio=tone(1000, 1.5, 48000),
             audio_rate=48000, layout="stereo", pts_offset=1.5)
    path = tmp_path / "switch.ts"
    path.write_bytes(first.read_bytes() + second.read_bytes())
    track = load_audio(path)
    assert track is not None
    assert track.duration == pytest.approx(3.0, abs=0.1)
    assert dominant_freq(track.samples[: 16000], 16000) == pytest.approx(440, abs=2)
    assert dominant_freq(track.samples[-16000:], 16000) == pytest.approx(1000, abs=2)
    grid = decode_grid(path, fps=6.0, crop=40, resize_short=48)
    assert grid.frames.shape == (18, 40, 40, 3)
    assert grid.frames[-1].mean() > 0  # the 96x48 half decodes too


def test_display_rotation_is_applied(tmp_path: Path) -> None:
    img = np.full((48, 64, 3), 20, np.uint8)
    img[:24, :32] = 250  # bright top-left quadrant of the stored (landscape) pixels
    path = tmp_path / "phone.mp4"
    write_av(path, frames=[img] * 25, fps=25)
    set_mp4_rotation(path, 90)  # shown turned 90 degrees clockwise
    info = probe_video(path)
    assert info.rotation == 270  # counter-clockwise degrees, as FFmpeg's display matrix says
    frame = decode_grid(path, fps=6.0, crop=32, resize_short=32).frames[0]
    quadrants = [frame[:16, :16].mean(), frame[:16, 16:].mean(), frame[16:, :16].mean(),
                 frame[16:, 16:].mean()]
    assert int(np.argmax(quadrants)) == 1  # top-left turned clockwise lands top-right


def _cfg(*overrides: str):  # type: ignore[no-untyped-def]
    return load_config(None, ["extract.image_size=32", "extract.flow_size=16",
                              *overrides]).extract


def test_still_picture_with_sound_fills_every_step(tmp_path: Path) -> None:
    path = tmp_path / "album.mp4"
    write_av(path, frames=[index_frame(7, 64, 48)], fps=25, audio=tone(440, 3, 48000))
    info = probe_video(path)
    assert info.duration == pytest.approx(3.0, abs=0.05)
    work = prepare_video(path, _cfg("extract.min_duration=1.0"))
    assert work.failed == "" and work.notes == []
    assert work.step_map.shape == (18,)
    assert all(read_index(work.frames[u]) == 7 for u in work.step_map)


def test_short_clip_is_kept_and_flagged_by_default(tmp_path: Path) -> None:
    path = tmp_path / "short.mp4"
    write_av(path, seconds=0.4, fps=25)
    work = prepare_video(path, _cfg())
    assert work.failed == "" and work.step_map.shape == (18,)
    assert [r for r, _ in work.notes] == ["short"] and str(path) in work.notes[0][1]
    skipped = prepare_video(path, _cfg("extract.min_duration=1.0"))
    assert skipped.failed == "too_short"


def test_dc_offset_is_silent_but_a_tone_on_dc_is_not(tmp_path: Path) -> None:
    dc = tmp_path / "dc.mkv"
    write_av(dc, acodec="pcm_s16le", audio=np.full(3 * 48000, 0.05, np.float32))
    work = prepare_audio(dc, _cfg())
    assert work.reason == "silent" and work.wave is None
    toned = tmp_path / "tone_dc.mkv"
    write_av(toned, acodec="pcm_s16le", audio=0.05 + tone(440, 3, 48000, amp=0.01))
    work = prepare_audio(toned, _cfg())
    assert work.reason == "" and work.wave is not None
    assert dominant_freq(work.wave - work.wave.mean(), 16000) == pytest.approx(440, abs=2)


def test_empty_file_says_so(tmp_path: Path) -> None:
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    with pytest.raises(VideoError, match=r"empty file \(0 bytes\)") as err:
        probe_video(path)
    assert str(path) in str(err.value) and err.value.reason == "unreadable"
    assert prepare_audio(path, _cfg()).detail == f"{path}: empty file (0 bytes)"
