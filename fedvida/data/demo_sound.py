"""Synthesising the demo sounds: one timbre per class, placed at the timeline's events.

Each class has its own sound, modelled loosely on the real thing so that an AudioSet tagger can
recognise some of them: harmonic barks with a pitch glide, whistles with vibrato, drum hits, hammer
clanks with inharmonic ringing, key clicks, telephone rings, rain, applause, engines and splashes.
The events are those of the picture (`fedvida.data.demo_spec.Timeline`); background noise at a
random SNR (a low one for "weak" clips), and silent or missing tracks are applied on top.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.signal import butter, fftconvolve, lfilter, sosfilt

from fedvida.data.demo_spec import DURATION, Timeline


@lru_cache(maxsize=256)
def _design(order: int, lo: float | None, hi: float | None, sr: int) -> np.ndarray:
    """Second-order sections of a Butterworth filter (cached: designs are reused a lot)."""
    if lo is None:
        return butter(order, hi, btype="lowpass", fs=sr, output="sos")
    if hi is None:
        return butter(order, lo, btype="highpass", fs=sr, output="sos")
    return butter(order, [lo, hi], btype="bandpass", fs=sr, output="sos")


def _band(x: np.ndarray, sr: int, lo: float | None, hi: float | None, order: int = 2) -> np.ndarray:
    """Butterworth low-/high-/band-pass; edges are clamped below Nyquist."""
    if hi is not None and hi >= 0.45 * sr:
        hi = None
    if lo is None and hi is None:
        return x
    return sosfilt(_design(order, lo, hi, sr), x)


def _pink(rng: np.random.Generator, n: int) -> np.ndarray:
    """Unit-RMS pink (1/f) noise by spectral shaping."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(spec.size, dtype=np.float64)
    f[0] = 1.0
    x = np.fft.irfft(spec / np.sqrt(f), n)
    return x / (np.sqrt(np.mean(x**2)) + 1e-12)


def _place(out: np.ndarray, sr: int, t: float, snd: np.ndarray) -> None:
    """Add ``snd`` into ``out`` starting at ``t`` seconds (clipped to the clip)."""
    i = int(round(t * sr))
    if i >= out.size or i + snd.size <= 0:
        return
    lo = max(0, -i)
    hi = min(snd.size, out.size - i)
    out[i + lo : i + hi] += snd[lo:hi]


def _bark(rng: np.random.Generator, sr: int, dur: float) -> np.ndarray:
    n = int(dur * sr)
    t = np.arange(n) / sr
    f0s = rng.uniform(250, 600)
    contour = (
        f0s
        * (1 + 0.25 * np.sin(np.pi * np.minimum(t / (0.3 * dur), 1.0)))
        * (1 - rng.uniform(0.2, 0.4) * t / dur)
    )
    phase = 2 * np.pi * np.cumsum(contour) / sr
    form = rng.uniform(900, 1800)
    x = np.zeros(n)
    for k in range(1, 16):
        fk = k * f0s
        if fk > 0.45 * sr:
            break
        x += np.exp(-(((fk - form) / 900) ** 2)) * np.sin(k * phase) / k**0.3
    x += 0.6 * _band(rng.standard_normal(n), sr, 400, 4000) * np.std(x)
    env = np.minimum(t / 0.012, 1.0) * np.exp(-t / (0.45 * dur))
    return x * env / (np.max(np.abs(x)) + 1e-9)


def _whistle(rng: np.random.Generator, sr: int, dur: float) -> np.ndarray:
    n = int(dur * sr)
    t = np.arange(n) / sr
    f = rng.uniform(1000, 2800) * (1 + rng.uniform(-0.25, 0.25) * t / dur)
    f = f * (1 + rng.uniform(0.005, 0.03) * np.sin(2 * np.pi * rng.uniform(4, 7) * t))
    phase = 2 * np.pi * np.cumsum(f) / sr
    x = np.sin(phase) + 0.05 * np.sin(2 * phase)
    x += 0.05 * _band(rng.standard_normal(n), sr, 800, 4000)
    env = np.minimum(t / 0.04, 1.0) * np.minimum((dur - t) / 0.06, 1.0)
    return x * np.clip(env, 0, 1)


def _drum(rng: np.random.Generator, sr: int, voice: np.ndarray) -> np.ndarray:
    f, tau, snare = voice
    n = int(0.5 * sr)
    t = np.arange(n) / sr
    fc = f * (1 + 0.8 * np.exp(-t / 0.02))
    body = np.sin(2 * np.pi * np.cumsum(fc) / sr) * np.exp(-t / tau)
    noise = _band(rng.standard_normal(n), sr, 1500, 7000) * np.exp(-t / 0.05)
    return body + snare * noise * 0.5


def _hammer(rng: np.random.Generator, sr: int, f1: float) -> np.ndarray:
    n = int(0.45 * sr)
    t = np.arange(n) / sr
    x = 0.6 * _band(rng.standard_normal(n), sr, 2000, None) * np.exp(-t / 0.003)
    for k, mode in enumerate((1.0, 2.76, 5.40, 8.93)):
        fk = f1 * mode * rng.uniform(0.99, 1.01)
        if fk < 0.45 * sr:
            x += np.sin(2 * np.pi * fk * t) * np.exp(-t / (rng.uniform(0.08, 0.3) / (1 + k)))
    x += 0.5 * np.sin(2 * np.pi * rng.uniform(100, 200) * t) * np.exp(-t / 0.03)
    return x


def _click(rng: np.random.Generator, sr: int) -> np.ndarray:
    n = int(0.04 * sr)
    t = np.arange(n) / sr
    press = _band(rng.standard_normal(n), sr, 1000, 5000) * np.exp(-t / rng.uniform(0.003, 0.008))
    x = press + 0.25 * np.sin(2 * np.pi * rng.uniform(300, 600) * t) * np.exp(-t / 0.006)
    release = int(rng.uniform(0.012, 0.03) * sr)  # the key coming back up: a softer click
    x[release:] += 0.4 * press[: n - release]
    if rng.uniform() < 0.08:  # a heavier key (space bar)
        x += 0.5 * np.sin(2 * np.pi * rng.uniform(100, 200) * t) * np.exp(-t / 0.015)
    return x * rng.uniform(0.5, 1.0)


def _ring(
    rng: np.random.Generator, sr: int, dur: float, bell: bool, tones: np.ndarray
) -> np.ndarray:
    n = int(dur * sr)
    t = np.arange(n) / sr
    if bell:  # an electro-mechanical bell: struck partials at ~20 Hz
        strike = rng.uniform(17, 24)
        ph = np.mod(t * strike, 1.0) / strike
        x = sum(np.sin(2 * np.pi * fk * t) for fk in tones * 3.2) * np.exp(-ph / 0.02)
    else:  # an electronic two-tone ring with a warble
        x = np.sin(2 * np.pi * tones[0] * t) + np.sin(2 * np.pi * tones[1] * t)
        x = x * (0.75 + 0.25 * np.sign(np.sin(2 * np.pi * 20 * t)))
    env = np.minimum(t / 0.01, 1.0) * np.clip((dur - t) / 0.02, 0, 1)
    return x * env


def _drop(rng: np.random.Generator, sr: int) -> np.ndarray:
    n = int(0.03 * sr)
    t = np.arange(n) / sr
    f = rng.uniform(1500, 4500) * (1 + 0.5 * t / 0.03)
    tick = _band(rng.standard_normal(n), sr, 2000, None) * np.exp(-t / 0.002)
    tone = np.sin(2 * np.pi * np.cumsum(f) / sr) * np.exp(-t / 0.005)
    return (tick + 0.4 * tone) * rng.uniform(0.2, 1.0)


def _clap(rng: np.random.Generator, sr: int) -> np.ndarray:
    n = int(0.05 * sr)
    t = np.arange(n) / sr
    fc = 700.0 * 2 ** (int(rng.integers(0, 11)) / 6)  # 700-2500 Hz in 1/6-octave steps
    x = _band(rng.standard_normal(n), sr, fc / 1.8, fc * 1.8)
    return x * np.exp(-t / rng.uniform(0.005, 0.012)) * rng.uniform(0.4, 1.0)


def _splash(rng: np.random.Generator, sr: int, dur: float, strength: float) -> np.ndarray:
    n = int((dur + 0.5) * sr)
    t = np.arange(n) / sr
    tau = rng.uniform(0.15, 0.4)
    gurgle = 1 + 0.8 * _band(rng.standard_normal(n), sr, None, 30)  # slow wobble of the water
    body = _band(rng.standard_normal(n), sr, 200, 3500) * gurgle
    x = body * np.minimum(t / 0.04, 1.0) * np.exp(-t / tau)
    x += 0.3 * np.sin(2 * np.pi * rng.uniform(60, 120) * t) * np.exp(-t / 0.06)
    for _ in range(int(10 * strength)):  # bubbles: short upward chirps
        m = int(rng.uniform(0.01, 0.04) * sr)
        f = rng.uniform(300, 1200) * (1 + 2 * np.arange(m) / m)
        bub = np.sin(2 * np.pi * np.cumsum(f) / sr) * np.hanning(m)
        _place(x, sr, rng.uniform(0.05, 0.5), 0.3 * bub)
    return x * strength


def class_sound(category: str, tl: Timeline, rng: np.random.Generator, sr: int) -> np.ndarray:
    """The class's sound events for one clip, before noise; ``(DURATION * sr,)`` float64."""
    n = int(round(DURATION * sr))
    out = np.zeros(n)
    t = np.arange(n) / sr
    events = list(zip(tl.onsets, tl.durations, tl.strengths, strict=True))
    if category == "barking":
        for on, dur, s in events:
            _place(out, sr, on, s * _bark(rng, sr, dur))
    elif category == "whistling":
        for on, dur, s in events:
            _place(out, sr, on, s * _whistle(rng, sr, dur))
    elif category == "drumming":
        voices = np.stack(
            [rng.uniform(60, 200, 3), rng.uniform(0.08, 0.3, 3), rng.uniform(0, 1, 3)], 1
        )
        for on, _, s in events:
            _place(out, sr, on, s * _drum(rng, sr, voices[int(rng.integers(0, 3))]))
    elif category == "hammering":
        f1 = rng.uniform(600, 1500)
        for on, _, s in events:
            _place(out, sr, on, s * _hammer(rng, sr, f1))
    elif category == "typing":
        for on, _, s in events:
            _place(out, sr, on, s * _click(rng, sr))
    elif category == "telephoning":
        bell = bool(rng.uniform() < 0.5)
        tones = np.array([440.0, 480.0]) if rng.uniform() < 0.6 else np.array([400.0, 450.0])
        for on, dur, s in events:
            _place(out, sr, on, s * _ring(rng, sr, dur, bell, tones))
    elif category in ("raining", "applauding"):
        unit, gain = (_drop, 1.0) if category == "raining" else (_clap, 0.2)
        for on, _, s in events:
            _place(out, sr, on, gain * s * unit(rng, sr))
        # the dense texture the particles stand for: rain hiss / many distant claps
        density = tl.control_at(t)
        if category == "raining":
            bed = _band(_pink(rng, n), sr, 500, None) * 0.6
        else:  # hundreds of claps per second: noise gated by a dense decaying pulse train
            pulses = np.zeros(n)
            count = int(rng.uniform(600, 1200) * DURATION)
            pulses[rng.integers(0, n, count)] = rng.uniform(0.3, 1.0, count) ** 2
            gate = lfilter([1.0], [1.0, -np.exp(-1.0 / (0.005 * sr))], pulses)
            dry = _band(rng.standard_normal(n), sr, 700, 3500) * gate
            tail = np.arange(int(0.4 * sr))
            ir = rng.standard_normal(tail.size) * np.exp(-tail / (0.12 * sr))
            wet = fftconvolve(dry, ir)[:n]  # a hall: applause is heard with its reverberation
            bed = dry + 0.6 * wet * np.std(dry) / (np.std(wet) + 1e-12)
        out += bed * density
    elif category == "driving":
        speed = tl.control_at(t)
        f0 = rng.uniform(25, 45) + rng.uniform(30, 60) * speed
        phase = 2 * np.pi * np.cumsum(f0) / sr
        engine = sum(np.sin(k * phase + rng.uniform(0, 6)) / k**0.7 for k in range(1, 12))
        engine *= 1 + 0.3 * np.sin(0.5 * phase)
        road = _band(rng.standard_normal(n), sr, None, 1200) * (0.2 + 0.5 * speed)
        out += (engine * (0.3 + speed) / 3.0 + road) * 0.4  # louder when revving
        for on, _dur, s in events:
            thump = np.sin(2 * np.pi * 60 * t[: int(0.2 * sr)]) * np.exp(-t[: int(0.2 * sr)] / 0.05)
            _place(out, sr, on, 0.8 * s * thump)
    elif category == "splashing":
        out += 0.05 * _band(_pink(rng, n), sr, 200, 3000) * tl.control_at(t)
        for on, dur, s in events:
            _place(out, sr, on + dur / 2 - 0.02, _splash(rng, sr, dur, s))
    else:
        raise ValueError(f"unknown demo category {category!r}")
    return out


def make_audio(
    category: str, tl: Timeline, rng: np.random.Generator, sr: int, channels: int, kind: str
) -> np.ndarray:
    """The full track of one clip: class sound + background noise, or a silent track.

    Parameters
    ----------
    category, tl, rng
        Class, timeline and the clip's audio generator.
    sr, channels
        Sample rate and channel count of the track.
    kind
        ``"normal"`` (SNR 6-30 dB), ``"weak"`` (SNR -10-0 dB: the class is hard to hear) or
        ``"silent"`` (digital silence or noise below -70 dBFS).

    Returns
    -------
    np.ndarray
        ``(channels, DURATION * sr)`` float32 in ``[-1, 1]``.
    """
    n = int(round(DURATION * sr))
    if kind == "silent":
        if rng.uniform() < 0.5:
            return np.zeros((channels, n), np.float32)
        level = 10 ** (rng.uniform(-90, -72) / 20)
        return (level * rng.standard_normal((channels, n))).astype(np.float32)
    sig = class_sound(category, tl, rng, sr)
    sig /= np.sqrt(np.mean(sig**2)) + 1e-12
    snr = rng.uniform(-10, 0) if kind == "weak" else rng.uniform(6, 30)
    colour = int(rng.integers(0, 3))
    noises = []
    for _ in range(channels):
        w = rng.standard_normal(n) if colour == 0 else _pink(rng, n)
        if colour == 2:  # brown-ish: low rumble
            w = _band(w, sr, None, 300)
        noises.append(w / (np.sqrt(np.mean(w**2)) + 1e-12))
    hum = np.zeros(n)
    if rng.uniform() < 0.3:
        mains = 50.0 if rng.uniform() < 0.5 else 60.0
        hum = 0.3 * np.sin(2 * np.pi * mains * np.arange(n) / sr)
    pan = rng.uniform(0.3, 0.7)
    gains = [1.0] if channels == 1 else [np.sqrt(2 * (1 - pan)), np.sqrt(2 * pan)]
    noise_gain = 10 ** (-snr / 20)
    tracks = np.stack(
        [g * sig + noise_gain * (w + hum) for g, w in zip(gains, noises, strict=True)]
    )
    peak = np.max(np.abs(tracks)) + 1e-12
    level = 10 ** (rng.uniform(-12, -1) / 20)
    return np.clip(tracks * (level / peak), -1.0, 1.0).astype(np.float32)
