"""What a demo clip shows and sounds like: the classes, their visual pairs and the event timeline.

Every demo class belongs to one of five *motion archetypes*; the two classes of an archetype
share the same visual scene (same kind of motion, same object shapes and colours from a shared
pool) and differ in their sound. Each clip has a `Timeline` of events (strikes, bursts, clicks,
particle landings, dips) drawn from the class's own distribution; the renderer moves the scene
at those times and the synthesiser places the class's sound at the very same times. The two
classes of a pair draw their timelines from overlapping distributions, so the video alone
separates a pair only weakly while the sound separates it well.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DURATION = 3.0  # seconds per clip, like Moments in Time
CONTROL_HZ = 200  # sampling rate of the control curves (speed, event density)

# The fixed class order: consecutive classes form a visual pair, so the first K classes keep
# whole pairs (an odd K leaves the last class without its partner).
CLASS_ORDER: tuple[str, ...] = (
    "barking",
    "whistling",
    "drumming",
    "hammering",
    "typing",
    "telephoning",
    "raining",
    "applauding",
    "driving",
    "splashing",
)

# archetype of each class; both classes of a pair share one
ARCHETYPE: dict[str, str] = {
    "barking": "pulse",  # a head-like blob that swells and opens its mouth on each sound
    "whistling": "pulse",
    "drumming": "strike",  # a stick that swings down onto a surface at each hit
    "hammering": "strike",
    "typing": "vibrate",  # a box with keys that shakes while it is active
    "telephoning": "vibrate",
    "raining": "swarm",  # many small particles; each landing is a sound event
    "applauding": "swarm",
    "driving": "slide",  # an object travelling along a surface, dipping at events
    "splashing": "slide",
}


@dataclass
class Timeline:
    """The events shared by the picture and the sound of one clip.

    Attributes
    ----------
    archetype
        The motion archetype of the class.
    onsets, durations, strengths
        ``(E,)`` event start times (s), lengths (s) and strengths in ``[0, 1]``.
    control
        ``(CONTROL_HZ * DURATION + 1,)`` a slow curve in ``[0, 1]``: travel speed for
        ``slide``, event density for ``swarm``, zeros otherwise.
    aux
        ``(E,)`` a per-event extra value: fall time (s) of swarm particles, else zeros.
    """

    archetype: str
    onsets: np.ndarray
    durations: np.ndarray
    strengths: np.ndarray
    control: np.ndarray
    aux: np.ndarray

    def control_at(self, t: np.ndarray | float) -> np.ndarray:
        """Interpolate the control curve at times ``t`` (seconds)."""
        grid = np.arange(self.control.shape[0]) / CONTROL_HZ
        return np.interp(t, grid, self.control)


def _smooth_curve(rng: np.random.Generator, lo: float, hi: float, wiggle: float) -> np.ndarray:
    """A slow random curve in ``[lo, hi]`` made of two low-frequency sinusoids."""
    t = np.arange(int(CONTROL_HZ * DURATION) + 1) / CONTROL_HZ
    base = rng.uniform(lo, hi)
    curve = np.full_like(t, base)
    for _ in range(2):
        curve += (
            wiggle
            * rng.uniform(0.3, 1.0)
            * np.sin(2 * np.pi * rng.uniform(0.15, 0.7) * t + rng.uniform(0, 2 * np.pi))
        )
    return np.clip(curve, 0.0, 1.0)


def _sequence(
    rng: np.random.Generator, count: int, dur: tuple[float, float], gap: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping events: ``count`` lengths and gaps, fitted into the clip."""
    if count == 0:
        return np.zeros(0), np.zeros(0)
    durs = rng.uniform(*dur, size=count)
    gaps = rng.uniform(*gap, size=count)
    total = durs.sum() + gaps[1:].sum()
    if total > DURATION - 0.1:  # squeeze to fit
        scale = (DURATION - 0.1) / total
        durs, gaps = durs * scale, gaps * scale
        total = DURATION - 0.1
    start = rng.uniform(0.02, max(0.03, DURATION - 0.05 - total))
    onsets = start + np.concatenate([[0.0], np.cumsum(durs[:-1] + gaps[1:])])
    return onsets, durs


def _periodic(rng: np.random.Generator, interval: tuple[float, float], jitter: float) -> np.ndarray:
    """Hit times with a tempo and timing jitter, from a random start to a random end."""
    step = rng.uniform(*interval)
    start, end = rng.uniform(0.05, 0.7), rng.uniform(2.2, 2.95)
    times = [start]
    while True:
        nxt = times[-1] + step * (1.0 + jitter * rng.standard_normal())
        if nxt > end:
            break
        times.append(nxt)
    return np.asarray(times)


def _clicks(rng: np.random.Generator, segments: int, interval: tuple[float, float]) -> np.ndarray:
    """Irregular click trains in ``segments`` bursts (typing)."""
    seg_on, seg_dur = _sequence(rng, segments, (0.5, 2.4), (0.15, 0.6))
    times: list[float] = []
    for on, dur in zip(seg_on, seg_dur, strict=True):
        t = on
        while t < on + dur:
            times.append(t)
            t += rng.uniform(*interval)
    return np.asarray(times)


def _swarm(rng: np.random.Generator, control: np.ndarray, peak_rate: float) -> np.ndarray:
    """Event times of an inhomogeneous Poisson process with rate ``peak_rate * control``."""
    n = rng.poisson(peak_rate * DURATION)
    cand = np.sort(rng.uniform(0.0, DURATION, size=n))
    keep = rng.uniform(size=n) < np.interp(cand, np.arange(control.size) / CONTROL_HZ, control)
    return cand[keep]


def _swell(rng: np.random.Generator) -> np.ndarray:
    """Applause-like density: rises, holds and often dies away inside the clip."""
    t = np.arange(int(CONTROL_HZ * DURATION) + 1) / CONTROL_HZ
    if rng.uniform() < 0.35:  # already going for the whole clip
        return _smooth_curve(rng, 0.6, 0.95, 0.15)
    on, rise = rng.uniform(0.0, 1.0), rng.uniform(0.1, 0.5)
    off, fall = rng.uniform(1.8, 3.4), rng.uniform(0.3, 0.9)
    up = np.clip((t - on) / rise, 0.0, 1.0)
    down = np.clip(1.0 - (t - off) / fall, 0.0, 1.0)
    return np.clip(up * down * rng.uniform(0.7, 1.0), 0.0, 1.0)


def make_timeline(category: str, rng: np.random.Generator) -> Timeline:
    """Draw the event timeline of one clip of ``category``.

    Parameters
    ----------
    category
        One of `CLASS_ORDER`.
    rng
        The clip's own generator (every random choice comes from it).

    Returns
    -------
    Timeline
        Events in seconds within ``[0, DURATION)``.
    """
    arche = ARCHETYPE[category]
    n_ctrl = int(CONTROL_HZ * DURATION) + 1
    control = np.zeros(n_ctrl)
    if category == "barking":
        onsets, durs = _sequence(rng, int(rng.integers(1, 6)), (0.12, 0.45), (0.08, 0.7))
    elif category == "whistling":
        onsets, durs = _sequence(rng, int(rng.integers(1, 4)), (0.3, 1.2), (0.08, 0.6))
    elif category == "drumming":
        onsets = _periodic(rng, (0.2, 0.5), 0.08)
        durs = np.full(onsets.shape, 0.06)
    elif category == "hammering":
        onsets = _periodic(rng, (0.33, 0.8), 0.12)
        durs = np.full(onsets.shape, 0.06)
    elif category == "typing":
        onsets = _clicks(rng, int(rng.integers(1, 3)), (0.06, 0.22))
        durs = np.full(onsets.shape, 0.03)
    elif category == "telephoning":
        onsets, durs = _sequence(rng, int(rng.integers(1, 3)), (0.4, 1.5), (0.2, 0.8))
    elif category == "raining":
        control = _smooth_curve(rng, 0.55, 0.95, 0.15)
        onsets = _swarm(rng, control, rng.uniform(12.0, 30.0))
        durs = np.full(onsets.shape, 0.02)
    elif category == "applauding":
        control = _swell(rng)
        onsets = _swarm(rng, control, rng.uniform(12.0, 35.0))
        durs = np.full(onsets.shape, 0.02)
    elif category == "driving":
        control = _smooth_curve(rng, 0.3, 0.8, 0.25)
        onsets, durs = _sequence(rng, int(rng.integers(0, 4)), (0.15, 0.35), (0.3, 1.0))
    elif category == "splashing":
        control = _smooth_curve(rng, 0.2, 0.6, 0.2)
        onsets, durs = _sequence(rng, int(rng.integers(1, 5)), (0.2, 0.45), (0.15, 0.8))
    else:
        raise ValueError(f"unknown demo category {category!r}")
    lo, hi = (0.2, 0.7) if category == "driving" else (0.4, 1.0)
    strengths = rng.uniform(lo, hi, size=onsets.shape)
    aux = rng.uniform(0.25, 0.6, size=onsets.shape) if arche == "swarm" else np.zeros(onsets.shape)
    keep = (onsets >= 0.0) & (onsets < DURATION)
    return Timeline(arche, onsets[keep], durs[keep], strengths[keep], control, aux[keep])


def envelope(
    tl: Timeline, t: np.ndarray, attack: float = 0.03, release: float = 0.08
) -> np.ndarray:
    """Activity envelope in ``[0, 1]`` at times ``t``: a soft trapezoid per event.

    Parameters
    ----------
    tl
        The timeline.
    t
        ``(N,)`` times in seconds.
    attack, release
        Ramp lengths in seconds.

    Returns
    -------
    np.ndarray
        ``(N,)`` the maximum over events of their trapezoids times their strengths.
    """
    env = np.zeros_like(t, dtype=np.float64)
    for on, dur, s in zip(tl.onsets, tl.durations, tl.strengths, strict=True):
        up = np.clip((t - on) / attack, 0.0, 1.0)
        down = np.clip(1.0 - (t - on - dur) / release, 0.0, 1.0)
        env = np.maximum(env, s * np.minimum(up, down))
    return env


# ------------------------------------------------------------------ visual identity ("class")
# With `demo.visual_identity: class` every class has its own look, as in real MiT where what one
# sees causes what one hears: the main object's two shapes and two hues are the class's (the
# two classes of a pair differ in both), with a little hue jitter. Distractors wear the looks of
# random classes (the partner class among them), so the picture is ambiguous unless the model
# finds the moving main object. Shapes: (main object, second part); hues in [0, 1).
CLASS_LOOK: dict[str, tuple[str, str, float, float]] = {
    "barking": ("circle", "ellipse", 0.07, 0.08),  # a round brown head on its body
    "whistling": ("triangle", "diamond", 0.60, 0.55),  # a pointed blue head
    "drumming": ("circle", "ellipse", 0.98, 0.10),  # a red stick head over a drum body
    "hammering": ("square", "square", 0.62, 0.00),  # a grey-blue hammer head over a block
    "typing": ("square", "square", 0.75, 0.15),  # a flat violet keyboard box
    "telephoning": ("circle", "hexagon", 0.33, 0.45),  # a green phone box
    "raining": ("diamond", "square", 0.58, 0.62),  # blue drops onto a wet ground band
    "applauding": ("circle", "ellipse", 0.08, 0.12),  # skin-coloured hands onto a stage
    "driving": ("square", "square", 0.00, 0.00),  # a red car on a road
    "splashing": ("circle", "ellipse", 0.52, 0.55),  # a cyan droplet into water
}
HUE_JITTER = 0.04


@dataclass(frozen=True)
class Look:
    """The class-specific appearance of one clip (`visual_identity: class`).

    Attributes
    ----------
    kinds
        Shapes of the main object and of its second part.
    cols
        BGR colours of the main object and of its second part.
    distractors
        (shape, BGR colour) per distractor slot: the looks of random classes.
    """

    kinds: tuple[str, str]
    cols: tuple[tuple[int, int, int], tuple[int, int, int]]
    distractors: tuple[tuple[str, tuple[int, int, int]], ...]


def _hue_colour(rng: np.random.Generator, hue: float) -> tuple[int, int, int]:
    import colorsys

    h = (hue + rng.uniform(-HUE_JITTER, HUE_JITTER)) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, rng.uniform(0.55, 1.0), rng.uniform(0.5, 1.0))
    return (int(b * 255), int(g * 255), int(r * 255))


def class_look(category: str, rng: np.random.Generator, slots: int = 8) -> Look:
    """Draw the look of one clip of ``category`` (and of its distractor slots) from ``rng``."""
    k0, k1, h0, h1 = CLASS_LOOK[category]
    names = list(CLASS_LOOK)
    others = []
    for _ in range(slots):
        d0, _, dh, _ = CLASS_LOOK[names[int(rng.integers(0, len(names)))]]
        others.append((d0, _hue_colour(rng, dh)))
    return Look((k0, k1), (_hue_colour(rng, h0), _hue_colour(rng, h1)), tuple(others))
