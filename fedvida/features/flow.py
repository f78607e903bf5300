"""Optical flow of a clip's sampled frames: Farneback images, DIS magnitudes, representative steps.

Both flows run between consecutive frames of the sampling grid (see `fedvida.data.video`), at a
reduced size (``flow_size`` x ``flow_size``, the frames are already square crops) for speed.
The first step has no predecessor and duplicates the second, as in the research, so a grid of
``n`` frames gives ``n`` flow images and ``n`` magnitudes.

Farneback flow is rendered as the research did: hue = direction, value = magnitude normalised
to [0, 255] per pair, full saturation (HSV -> colour image). We convert HSV straight to RGB, the
channel order the frame encoders take; that is the same picture the research's BGR PNGs show.
"""

from __future__ import annotations

import cv2
import numpy as np


def _grays(frames: np.ndarray, flow_size: int) -> list[np.ndarray]:
    """(n, S, S, 3) uint8 RGB -> n grayscale (flow_size, flow_size) uint8 images."""
    out = []
    for f in frames:
        small = cv2.resize(f, (flow_size, flow_size), interpolation=cv2.INTER_AREA)
        out.append(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY))
    return out


def render_flow(flow: np.ndarray, out_size: int) -> np.ndarray:
    """Render a dense flow field ``(h, w, 2)`` as an RGB image ``(out_size, out_size, 3)`` uint8."""
    mag, ang = cv2.cartToPolar(flow[..., 0], flow[..., 1])
    hsv = np.empty((*flow.shape[:2], 3), dtype=np.uint8)
    hsv[..., 0] = (ang * (90.0 / np.pi)).astype(np.uint8)  # radians -> OpenCV hue 0..180
    hsv[..., 1] = 255
    lo, hi = float(mag.min()), float(mag.max())
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    hsv[..., 2] = ((mag - lo) * scale).astype(np.uint8)  # min-max normalised magnitude
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    return cv2.resize(rgb, (out_size, out_size), interpolation=cv2.INTER_LINEAR)


def farneback_images(frames: np.ndarray, flow_size: int, out_size: int) -> np.ndarray:
    """Farneback flow images between consecutive frames, the first one duplicated.

    Parameters
    ----------
    frames
        ``(n, S, S, 3)`` uint8 RGB frames of the sampling grid.
    flow_size
        Side at which the flow is computed.
    out_size
        Side of the rendered images (the frame encoder's input).

    Returns
    -------
    np.ndarray
        ``(n, out_size, out_size, 3)`` uint8 RGB.
    """
    grays = _grays(frames, flow_size)
    if len(grays) == 1:
        zero = np.zeros((flow_size, flow_size, 2), np.float32)
        return render_flow(zero, out_size)[None]
    images = []
    for a, b in zip(grays[:-1], grays[1:], strict=True):
        flow = cv2.calcOpticalFlowFarneback(  # type: ignore[call-overload]
            a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0
        )
        images.append(render_flow(flow, out_size))
    return np.stack([images[0], *images])


def dis_magnitudes(frames: np.ndarray, flow_size: int) -> np.ndarray:
    """Mean DIS optical-flow magnitude (pixels at ``flow_size``) per frame, first duplicated.

    Returns
    -------
    np.ndarray
        ``(n,)`` float32.
    """
    grays = _grays(frames, flow_size)
    if len(grays) == 1:
        return np.zeros(1, np.float32)
    dis = cv2.DISOpticalFlow_create(  # type: ignore[attr-defined]
        cv2.DISOPTICAL_FLOW_PRESET_FAST
    )
    mags = []
    for a, b in zip(grays[:-1], grays[1:], strict=True):
        flow = dis.calc(a, b, None)
        mags.append(float(np.mean(np.hypot(flow[..., 0], flow[..., 1]))))
    return np.asarray([mags[0], *mags], dtype=np.float32)


def representative_steps(magnitudes: np.ndarray, threshold: float) -> np.ndarray:
    """Steps whose motion exceeds ``threshold`` x the clip mean; at least the strongest one.

    Parameters
    ----------
    magnitudes
        ``(T,)`` DIS magnitudes per step.
    threshold
        Factor over the mean (1.2 in the research).

    Returns
    -------
    np.ndarray
        ``(T,)`` bool.
    """
    rep = magnitudes > threshold * float(np.mean(magnitudes))
    if not rep.any():
        rep[int(np.argmax(magnitudes))] = True
    return rep
