"""The demo dataset: real decodable mp4 clips in the MiT layout, with the promised properties."""

from __future__ import annotations

import csv
import hashlib
from dataclasses import replace
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from fedvida.config import DemoConfig
from fedvida.data.demo import demo_classes, plan_clips, write_demo_dataset
from fedvida.data.demo_clip import render_clip
from fedvida.data.demo_sound import class_sound
from fedvida.data.demo_spec import ARCHETYPE, CLASS_ORDER, DURATION, make_timeline
from fedvida.errors import InputError


def _clips(root: Path) -> list[dict[str, str]]:
    with (root / "demo_clips.csv").open() as fh:
        return list(csv.DictReader(fh))


def _audio(path: Path) -> tuple[np.ndarray, int, int] | None:
    """Decoded audio ``(channels, samples)``, rate and channel count; None without a stream."""
    with av.open(str(path)) as box:
        if not box.streams.audio:
            return None
        stream = box.streams.audio[0]
        parts = [fr.to_ndarray() for fr in box.decode(stream)]
        return np.concatenate(parts, axis=1), stream.rate, stream.channels


def _dbfs(x: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(x.astype(np.float64) ** 2)) + 1e-12))


def test_layout_matches_files_on_disk(tiny_demo: Path) -> None:
    cats = [line.split(",") for line in (tiny_demo / "moments_categories.txt").read_text().split()]
    names = [c[0] for c in cats]
    assert names == sorted(CLASS_ORDER[:4]) and [int(c[1]) for c in cats] == [0, 1, 2, 3]
    for split, csv_name, per_class in (
        ("training", "trainingSet.csv", 4),
        ("validation", "validationSet.csv", 2),
    ):
        with (tiny_demo / csv_name).open() as fh:
            rows = list(csv.reader(fh))
        assert len(rows) == 4 * per_class
        for rel, category, agree, disagree in rows:
            assert rel.startswith(f"{category}/") and rel.endswith(".mp4")
            assert category in names and (agree, disagree) == ("3", "0")
        listed = {f"{split}/{r[0]}" for r in rows}
        on_disk = {
            p.relative_to(tiny_demo).as_posix()
            for p in (tiny_demo / split).rglob("*")
            if p.is_file()
        }
        assert listed == on_disk  # no leftovers (.part files), nothing missing


def test_clips_decode_with_the_stated_format(tiny_demo: Path) -> None:
    for row in _clips(tiny_demo):
        path = tiny_demo / row["relpath"]
        fps, w, h = float(row["fps"]), int(row["width"]), int(row["height"])
        cap = cv2.VideoCapture(str(path))
        ok, img = cap.read()
        assert ok and img.shape == (h, w, 3), path
        assert abs(cap.get(cv2.CAP_PROP_FPS) - fps) < 0.01, path
        cap.release()
        with av.open(str(path)) as box:
            vs = box.streams.video[0]
            assert vs.codec_context.name == {"libx264": "h264", "mpeg4": "mpeg4"}[row["codec"]]
            assert abs(float(vs.average_rate) - fps) < 0.01
            assert box.duration is not None and abs(box.duration / 1e6 - DURATION) <= 0.1
            n = sum(1 for _ in box.decode(vs))
        assert n == round(DURATION * fps), path
        audio = _audio(path)
        if row["audio"] == "none":
            assert audio is None, path
            continue
        assert audio is not None, path
        samples, rate, channels = audio
        assert (rate, channels) == (int(row["sample_rate"]), int(row["channels"])), path
        assert abs(samples.shape[1] / rate - DURATION) <= 0.1, path
        level = _dbfs(samples)
        if row["audio"] == "silent":
            assert level < -60.0, (path, level)
        else:
            assert level > -45.0, (path, level)


def test_missing_audio_quotas_and_variety(tiny_demo: Path) -> None:
    rows = _clips(tiny_demo)
    for split, n_each in (("training", 2), ("validation", 1)):
        kinds = [r["audio"] for r in rows if r["split"] == split]
        assert kinds.count("none") == n_each and kinds.count("silent") == n_each
    assert {r["codec"] for r in rows} == {"libx264", "mpeg4"}
    assert {r["fps"] for r in rows} == {"24.0", "25.0", "29.97", "30.0"}
    assert {r["channels"] for r in rows if r["audio"] != "none"} == {"1", "2"}
    assert len({r["sample_rate"] for r in rows if r["audio"] != "none"}) == 3


def _digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*.mp4"))
    }


def test_same_seed_same_bytes_other_seed_other_content(tmp_path: Path) -> None:
    cfg = DemoConfig(classes=2, clips_per_class=1, val_clips_per_class=1, workers=1, seed=3)
    a = write_demo_dataset(cfg, tmp_path / "a")
    b = write_demo_dataset(cfg, tmp_path / "b")
    assert a.clips == b.clips == 4 and a.clips_per_second() > 0
    assert _digests(a.root) == _digests(b.root)
    other = cfg.model_copy(update={"seed": 4})
    c = write_demo_dataset(other, tmp_path / "b")  # an earlier demo may be overwritten
    da, dc = _digests(a.root), _digests(c.root)
    assert da.keys() == dc.keys() and all(da[k] != dc[k] for k in da)
    # the content differs too, not only the container: same format, other seed
    spec_a = plan_clips(cfg)[0]
    spec_c = replace(spec_a, seed=4)
    frames_a, audio_a = render_clip(spec_a)
    frames_c, audio_c = render_clip(spec_c)
    assert not np.array_equal(np.stack(frames_a), np.stack(frames_c))
    assert audio_a is None or audio_c is None or not np.array_equal(audio_a, audio_c)


def test_clip_content_does_not_depend_on_the_dataset_size() -> None:
    small = {
        s.relpath: s
        for s in plan_clips(DemoConfig(classes=2, clips_per_class=2, val_clips_per_class=1))
    }
    big = {
        s.relpath: s
        for s in plan_clips(DemoConfig(classes=6, clips_per_class=5, val_clips_per_class=3))
    }
    assert small.keys() <= big.keys()
    for rel, s in small.items():
        key = (s.category, s.class_index, s.clip_index, s.split_index, s.seed)
        b = big[rel]
        assert key == (b.category, b.class_index, b.clip_index, b.split_index, b.seed)
    spec = small["training/whistling/demo_t0001.mp4"]
    frames1, audio1 = render_clip(spec)
    frames2, audio2 = render_clip(spec)
    assert np.array_equal(np.stack(frames1), np.stack(frames2))
    assert (audio1 is None and audio2 is None) or np.array_equal(audio1, audio2)


@pytest.mark.parametrize("category", CLASS_ORDER)
def test_sound_is_synchronised_with_the_events(category: str) -> None:
    rng = np.random.default_rng([11, CLASS_ORDER.index(category)])
    tl = make_timeline(category, rng)
    sr = 16000
    snd = class_sound(category, tl, rng, sr)
    t = np.arange(snd.size) / sr
    if ARCHETYPE[category] in ("swarm", "slide") and category != "splashing":
        # continuous textures: the loudness follows the control curve (density / speed)
        frame = sr // 10
        rms = np.sqrt(np.mean(snd[: snd.size // frame * frame].reshape(-1, frame) ** 2, axis=1))
        ctrl = tl.control_at((np.arange(rms.size) + 0.5) / 10)
        assert np.corrcoef(rms, ctrl)[0, 1] > 0.5
        return
    near = np.zeros(snd.size, bool)
    for on, dur in zip(tl.onsets, tl.durations, strict=True):
        near |= (t >= on - 0.01) & (t <= on + dur + 0.5)
    assert tl.onsets.size > 0
    energy = snd**2
    assert energy[near].sum() >= 0.98 * energy.sum()


@pytest.mark.parametrize("category", ["barking", "typing"])
def test_picture_moves_with_the_events(category: str) -> None:
    spec = next(
        s
        for s in plan_clips(DemoConfig(classes=6, clips_per_class=3, max_distractors=0))
        if s.category == category and not s.ambiguous
    )
    frames, _ = render_clip(spec)
    rng = np.random.default_rng([spec.seed, spec.class_index, spec.clip_index, spec.split_index])
    tl = make_timeline(spec.category, rng.spawn(3)[0])
    small = [
        cv2.resize(f, (f.shape[1] // 4, f.shape[0] // 4), interpolation=cv2.INTER_AREA)
        for f in frames
    ]  # averages the pixel noise away
    motion = np.array(
        [
            np.mean(np.abs(small[i].astype(np.int16) - small[i - 1]) > 12)
            for i in range(1, len(small))
        ]
    )  # share of pixels that changed
    times = np.arange(1, len(frames)) / float(spec.fps)
    ends = tl.onsets + tl.durations + 0.08
    active = np.array([np.any((t >= tl.onsets - 0.1) & (t < ends)) for t in times])
    assert active.any() and (~active).any()
    assert motion[active].mean() > 2.0 * motion[~active].mean() + 1e-4


def test_demo_classes_keep_pairs() -> None:
    assert demo_classes(4) == sorted(["barking", "whistling", "drumming", "hammering"])
    assert len(demo_classes(10)) == 10
    with pytest.raises(ValueError):
        demo_classes(11)
    with pytest.raises(ValidationError):
        DemoConfig(classes=1)
    with pytest.raises(ValidationError, match="must not exceed 1"):
        DemoConfig(no_stream_rate=0.6, silent_rate=0.5)


def test_refuses_a_folder_that_is_not_a_demo(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match=str(tmp_path)):
        write_demo_dataset(
            DemoConfig(classes=2, clips_per_class=1, val_clips_per_class=1, workers=1), tmp_path
        )
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def _main_hue(frames: list[np.ndarray], bg: list[np.ndarray]) -> float:
    """Median hue (0-1) of the pixels where a clip differs from the same clip without its main
    object's look (so: the pixels the look painted)."""
    diff = np.stack([np.abs(f.astype(int) - b.astype(int)).sum(axis=2) > 60
                     for f, b in zip(frames, bg, strict=True)])
    hsv = np.stack([cv2.cvtColor(f, cv2.COLOR_BGR2HSV) for f in frames])
    return float(np.median(hsv[..., 0][diff]) / 180.0)


@pytest.mark.parametrize("pair", [("barking", "whistling"), ("drumming", "hammering")])
def test_class_identity_gives_each_class_of_a_pair_its_own_look(pair: tuple[str, str]) -> None:
    # Arrange: the first clip of each class, with and without the class look
    cfg = DemoConfig(classes=4, clips_per_class=1, val_clips_per_class=1, visual_identity="class")
    specs = {s.category: s for s in plan_clips(cfg) if s.split == "training"}
    # Act
    looks = {}
    for category in pair:
        spec = specs[category]
        frames, audio = render_clip(spec)
        plain, plain_audio = render_clip(replace(spec, visual_identity="pair"))
        again, _ = render_clip(spec)
        # Assert: the sound is untouched, the picture changed, deterministically
        assert (audio is None and plain_audio is None) or np.array_equal(audio, plain_audio)
        assert any(not np.array_equal(f, p) for f, p in zip(frames, plain, strict=True))
        assert all(np.array_equal(f, g) for f, g in zip(frames, again, strict=True))
        looks[category] = _main_hue(frames, plain)
    from fedvida.data.demo_spec import CLASS_LOOK

    # the painted pixels carry the class's own main hue (circular distance), not the partner's
    for category in pair:
        want = CLASS_LOOK[category][2]
        other = CLASS_LOOK[pair[1] if category == pair[0] else pair[0]][2]

        def dist(a: float, b: float) -> float:
            return min(abs(a - b), 1 - abs(a - b))

        assert dist(looks[category], want) < dist(looks[category], other)
