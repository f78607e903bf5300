"""Drawing helpers for the demo scenes: the shared pool of shapes and colours, and backgrounds."""

from __future__ import annotations

import colorsys

import cv2
import numpy as np

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "hexagon", "ellipse")
Colour = tuple[int, int, int]


def random_colour(
    rng: np.random.Generator,
    sat: tuple[float, float] = (0.45, 1.0),
    val: tuple[float, float] = (0.45, 1.0),
) -> Colour:
    """A BGR colour with random hue and the given saturation / value ranges."""
    r, g, b = colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(*sat), rng.uniform(*val))
    return (int(b * 255), int(g * 255), int(r * 255))


def blend(c: Colour, other: Colour, w: float) -> Colour:
    return (
        int(c[0] * (1 - w) + other[0] * w),
        int(c[1] * (1 - w) + other[1] * w),
        int(c[2] * (1 - w) + other[2] * w),
    )


def draw_shape(
    img: np.ndarray,
    kind: str,
    centre: tuple[float, float],
    radius: float,
    angle: float,
    colour: Colour,
) -> None:
    """Fill one shape of the shared pool (anti-aliased) into ``img`` in place."""
    x, y = centre
    if kind == "circle":
        cv2.circle(img, (int(x), int(y)), max(1, int(radius)), colour, -1, cv2.LINE_AA)
        return
    if kind == "ellipse":
        cv2.ellipse(
            img,
            (int(x), int(y)),
            (max(1, int(radius)), max(1, int(radius * 0.6))),
            float(np.degrees(angle)),
            0,
            360,
            colour,
            -1,
            cv2.LINE_AA,
        )
        return
    sides = {"square": 4, "triangle": 3, "diamond": 4, "hexagon": 6}[kind]
    offset = np.pi / 4 if kind == "square" else 0.0
    ang = angle + offset + 2 * np.pi * np.arange(sides) / sides
    pts = np.stack([x + radius * np.cos(ang), y + radius * np.sin(ang)], axis=1)
    cv2.fillPoly(img, [np.round(pts).astype(np.int32)], colour, cv2.LINE_AA)


def background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A static textured background: gradient + smooth blotches + optional stripes/grid."""
    c1 = np.array(random_colour(rng, (0.0, 0.6), (0.15, 0.9)), np.float32)
    c2 = np.array(random_colour(rng, (0.0, 0.6), (0.15, 0.9)), np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    texture = rng.uniform(-1, 1, size=(4, 5)).astype(np.float32)
    style, period, tex_amp = int(rng.integers(0, 4)), rng.uniform(0.05, 0.2), rng.uniform(5, 30)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32) / height
    ramp = np.cos(angle) * xx + np.sin(angle) * yy
    ramp = (ramp - ramp.min()) / max(1e-6, float(ramp.max() - ramp.min()))
    img = c1 * (1 - ramp[..., None]) + c2 * ramp[..., None]
    img += tex_amp * cv2.resize(texture, (width, height), interpolation=cv2.INTER_CUBIC)[..., None]
    if style == 1:  # stripes
        img += 18 * np.sign(np.sin(2 * np.pi * ramp / period))[..., None]
    elif style == 2:  # grid (tiles, a wall)
        lines = (np.mod(xx, period) < 0.01) | (np.mod(yy, period) < 0.01)
        img -= 35 * lines[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)
