"""One demo clip: its container format and conditions (`ClipSpec`) and writing it with PyAV.

The content of a clip (timeline, scene, sound) comes from its own generator,
``np.random.default_rng([seed, class_index, clip_index, split_index])`` where ``class_index`` is
the position in the fixed `CLASS_ORDER`, so a clip is the same whatever K or the clip counts are.
The container format (codec, frame rate, size, audio rate and channels) and the conditions
(no audio stream, silent track, weak audio, ambiguous picture) are assigned per split by seeded
permutations with exact quotas, independently of the class (see `fedvida.data.demo`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import av
import numpy as np

from fedvida.data.demo_scene import Scene
from fedvida.data.demo_sound import make_audio
from fedvida.data.demo_spec import DURATION, class_look, make_timeline

FPS_CHOICES: tuple[tuple[int, int], ...] = ((24, 1), (25, 1), (30000, 1001), (30, 1))
SIZE_CHOICES: tuple[tuple[int, int], ...] = ((160, 120), (192, 144), (224, 168), (256, 192))
CODEC_CHOICES: tuple[str, ...] = ("libx264", "libx264", "mpeg4")  # two thirds H.264
AUDIO_CHOICES: tuple[tuple[int, int], ...] = (
    (44100, 2),
    (48000, 2),
    (44100, 1),
    (48000, 1),
    (16000, 1),
    (16000, 2),
)
AUDIO_KINDS: tuple[str, ...] = ("normal", "weak", "silent", "none")
_BANK_MARGIN = 64


@dataclass(frozen=True)
class ClipSpec:
    """Everything needed to write one clip (picklable, for worker processes).

    Attributes
    ----------
    relpath
        Path under the dataset root, e.g. ``"training/barking/demo_t0003.mp4"``.
    category, split
        MiT category and split folder (``"training"`` / ``"validation"``).
    class_index, clip_index, split_index
        Position in `CLASS_ORDER`, clip number within (class, split), 0 = training.
    seed
        Dataset seed.
    codec, fps_num, fps_den, width, height
        Video stream: ``"libx264"`` or ``"mpeg4"``, frame rate as a fraction, frame size.
    audio
        One of `AUDIO_KINDS` (``"none"``: no audio stream at all).
    sample_rate, channels
        Audio stream format (ignored when ``audio == "none"``).
    ambiguous
        Whether the picture is degraded.
    max_distractors
        Upper bound of distractor shapes.
    visual_identity
        ``"pair"``: the two classes of a pair share one picture; ``"class"``: each class has its
        own look (`fedvida.data.demo_spec.CLASS_LOOK`).
    """

    relpath: str
    category: str
    split: str
    class_index: int
    clip_index: int
    split_index: int
    seed: int
    codec: str
    fps_num: int
    fps_den: int
    width: int
    height: int
    audio: str
    sample_rate: int
    channels: int
    ambiguous: bool
    max_distractors: int
    visual_identity: str = "pair"

    @property
    def fps(self) -> Fraction:
        return Fraction(self.fps_num, self.fps_den)

    def row(self) -> dict[str, object]:
        """The clip's line in ``demo_clips.csv``."""
        d = asdict(self)
        d["fps"] = round(float(self.fps), 3)
        return d


@lru_cache(maxsize=1)
def noise_bank() -> np.ndarray:
    """Unit Gaussian noise, ``(H_max + margin, W_max + margin, 3)`` float32, fixed per process."""
    w = max(s[0] for s in SIZE_CHOICES) + _BANK_MARGIN
    h = max(s[1] for s in SIZE_CHOICES) + _BANK_MARGIN
    return np.random.default_rng(20240917).standard_normal((h, w, 3), dtype=np.float32)


def render_clip(spec: ClipSpec) -> tuple[list[np.ndarray], np.ndarray | None]:
    """Render the frames and the audio track of a clip (without writing).

    Returns
    -------
    frames
        ``round(3 s * fps)`` frames, each ``(H, W, 3)`` BGR uint8.
    audio
        ``(channels, 3 s * rate)`` float32, or ``None`` when the clip has no audio stream.
    """
    rng = np.random.default_rng([spec.seed, spec.class_index, spec.clip_index, spec.split_index])
    # a fourth child for the class look: the first three (and so "pair" clips) are unchanged
    rng_time, rng_scene, rng_sound, rng_look = rng.spawn(4)
    tl = make_timeline(spec.category, rng_time)
    look = class_look(spec.category, rng_look) if spec.visual_identity == "class" else None
    scene = Scene(
        tl, rng_scene, spec.width, spec.height, spec.ambiguous, spec.max_distractors, noise_bank(),
        look,
    )
    n_frames = int(round(DURATION * float(spec.fps)))
    frames = [scene.frame(i / float(spec.fps), i) for i in range(n_frames)]
    audio = None
    if spec.audio != "none":
        audio = make_audio(
            spec.category, tl, rng_sound, spec.sample_rate, spec.channels, spec.audio
        )
    return frames, audio


def write_clip(spec: ClipSpec, root: Path) -> ClipSpec:
    """Render a clip and write it as an mp4 under ``root`` (video, then interleaved AAC audio).

    Returns the spec, so that a process pool can report which clip finished.
    """
    frames, audio = render_clip(spec)
    path = root / spec.relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".part.mp4")
    rate = spec.fps
    with av.open(str(tmp), "w", format="mp4", options={"fflags": "+bitexact"}) as out:
        video = out.add_stream(spec.codec, rate=rate)
        assert isinstance(video, av.VideoStream)
        video.width, video.height, video.pix_fmt = spec.width, spec.height, "yuv420p"
        if spec.codec == "libx264":
            video.options = {"preset": "superfast", "crf": "23", "threads": "1"}
        else:
            video.bit_rate = 500_000
            video.options = {"threads": "1"}
        astream = None
        layout = "mono" if spec.channels == 1 else "stereo"
        if audio is not None:
            astream = out.add_stream("aac", rate=spec.sample_rate, layout=layout)
            astream.bit_rate = 64_000 * spec.channels
            astream.options = {"aac_coder": "fast"}
        apos = 0
        for i, img in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(img, format="bgr24")
            frame.pts, frame.time_base = i, 1 / rate
            out.mux(video.encode(frame))
            if astream is not None and audio is not None:
                end = min(audio.shape[1], int(round((i + 1) / rate * spec.sample_rate)))
                if end > apos:
                    chunk = av.AudioFrame.from_ndarray(
                        np.ascontiguousarray(audio[:, apos:end]), format="fltp", layout=layout
                    )
                    chunk.sample_rate, chunk.pts = spec.sample_rate, apos
                    chunk.time_base = Fraction(1, spec.sample_rate)
                    out.mux(astream.encode(chunk))
                    apos = end
        out.mux(video.encode(None))
        if astream is not None:
            out.mux(astream.encode(None))
    tmp.replace(path)
    return spec
