"""Drawing demo video frames with OpenCV: one archetype scene, distractors, camera and noise.

All random choices of a scene are drawn once, in `Scene.__init__`, from the clip's generator and
in normalised units (fractions of the frame height), so a clip's content does not depend on its
frame size or frame rate. Everything that matters is drawn inside the centre square that an
encoder keeps after "short side 256, centre crop 224" (about +-0.44 of the height around the
centre); distractors roam the whole frame.
"""

from __future__ import annotations

import cv2
import numpy as np

from fedvida.data.demo_draw import SHAPES, Colour, background, blend, draw_shape, random_colour
from fedvida.data.demo_spec import DURATION, Look, Timeline, envelope

AMBIGUITY: tuple[str, ...] = ("low_contrast", "tiny_offcentre", "blur_noise", "dark")


class Scene:
    """The picture of one clip; `frame(t)` renders the frame at time ``t`` seconds.

    Parameters
    ----------
    tl
        The clip's event timeline (shared with the sound).
    rng
        The clip's scene generator.
    width, height
        Frame size in pixels.
    ambiguous
        Degrade the main object (low contrast, tiny and off-centre, blur + noise, or dark).
    max_distractors
        Upper bound of independently moving distractor shapes.
    noise_bank
        ``(Hb, Wb, 3)`` float32 unit Gaussian noise, ``Hb > height``, ``Wb > width``.
    """

    def __init__(
        self,
        tl: Timeline,
        rng: np.random.Generator,
        width: int,
        height: int,
        ambiguous: bool,
        max_distractors: int,
        noise_bank: np.ndarray,
        look: Look | None = None,
    ) -> None:
        self.tl, self.w, self.h = tl, width, height
        u = float(height)
        self.u = u
        self.bg = background(rng, width, height)
        bg_mean: Colour = tuple(int(v) for v in self.bg.reshape(-1, 3).mean(0))  # type: ignore
        # main layout: centre, scale, colours and shapes from the shared pool
        self.cx = width / 2 + rng.uniform(-0.1, 0.1) * u
        self.cy = height / 2 + rng.uniform(-0.08, 0.08) * u
        self.scale = rng.uniform(0.95, 1.35)
        self.cols = [random_colour(rng) for _ in range(4)]
        self.kinds = [SHAPES[int(i)] for i in rng.integers(0, len(SHAPES), size=2)]
        if look is not None:  # visual identity per class: the main object wears its class's look
            self.kinds = list(look.kinds)
            self.cols[:2] = list(look.cols)
        self.side = 1.0 if rng.uniform() < 0.5 else -1.0
        self.p = rng.uniform(size=8)  # archetype-specific proportions
        n_ev = tl.onsets.size
        self.ev_xy = rng.uniform(-1, 1, size=(max(n_ev, 1), 2))  # per-event positions/directions
        self.kick = rng.uniform(-1, 1, size=(max(n_ev, 1), 8, 2))  # particles kicked by dips
        self.dirs = rng.uniform(-1, 1, size=(64, 2))  # shake directions
        # distractors
        n_d = int(rng.integers(0, max_distractors + 1))
        self.distractors = [
            (
                SHAPES[int(rng.integers(0, len(SHAPES)))],
                random_colour(rng),
                rng.uniform(0.025, 0.07),
                rng.uniform(0, 1, 2),
                rng.uniform(-0.3, 0.3, 2),
                rng.uniform(0.2, 1.5),
                rng.uniform(0, 2 * np.pi),
                bool(rng.uniform() < 0.5),
            )
            for _ in range(n_d)
        ]
        if look is not None:  # distractors wear the looks of random classes
            self.distractors = [(look.distractors[i % len(look.distractors)][0],
                                 look.distractors[i % len(look.distractors)][1], *d[2:])
                                for i, d in enumerate(self.distractors)]
        # camera, light and noise
        shake = rng.uniform(0.0, 0.012) if rng.uniform() < 0.8 else rng.uniform(0.012, 0.03)
        self.cam = (shake * u, rng.uniform(0.3, 2.0, 2), rng.uniform(0, 2 * np.pi, 2))
        self.flicker = (rng.uniform(0, 0.08), rng.uniform(0.2, 3.0), rng.uniform(0, 2 * np.pi))
        self.noise_sigma = rng.uniform(1.5, 7.0)
        self.noise_offsets = rng.integers(0, 10_000, size=(128, 2))
        self.gain, self.blur = 1.0, 0
        self.mode = AMBIGUITY[int(rng.integers(0, len(AMBIGUITY)))] if ambiguous else ""
        if self.mode == "low_contrast":
            self.cols = [blend(c, bg_mean, 0.8) for c in self.cols]
        elif self.mode == "tiny_offcentre":
            self.scale *= 0.45
            self.cx = width / 2 + self.side * 0.4 * u
            self.cy = height / 2 + rng.uniform(-0.38, 0.38) * u
        elif self.mode == "blur_noise":
            self.blur, self.noise_sigma = 9, rng.uniform(15.0, 25.0)
        elif self.mode == "dark":
            self.gain = rng.uniform(0.2, 0.35)
        self.noise_bank = noise_bank
        self._draw = {
            "pulse": self._pulse,
            "strike": self._strike,
            "vibrate": self._vibrate,
            "swarm": self._swarm,
            "slide": self._slide,
        }[tl.archetype]

    # ---------------------------------------------------------------- archetypes
    def _pulse(self, img: np.ndarray, t: float) -> None:
        """A head that swells, lunges and opens its mouth with the sound envelope."""
        s, u, p = self.scale, self.u, self.p
        e = float(envelope(self.tl, np.array([t]))[0])
        r = (0.1 + 0.06 * p[0]) * u * s
        body = (int(self.cx - self.side * 0.12 * u * s), int(self.cy + 0.16 * u * s))
        cv2.ellipse(
            img,
            body,
            (int(0.16 * u * s), int(0.1 * u * s)),
            0,
            0,
            360,
            self.cols[1],
            -1,
            cv2.LINE_AA,
        )
        hx = self.cx + self.side * 0.05 * u * s * e
        hy = self.cy - 0.03 * u * s * e
        rad = r * (1 + 0.3 * e)
        draw_shape(img, self.kinds[0], (hx, hy), rad, 0.0, self.cols[0])
        half = np.radians(5 + 35 * e)
        ang = np.array([-half, half]) + (0.0 if self.side > 0 else np.pi)
        mouth = np.array(
            [
                [hx, hy],
                [hx + 1.05 * rad * np.cos(ang[0]), hy + rad * np.sin(ang[0])],
                [hx + 1.05 * rad * np.cos(ang[1]), hy + rad * np.sin(ang[1])],
            ]
        )
        cv2.fillPoly(img, [np.round(mouth).astype(np.int32)], (20, 20, 30), cv2.LINE_AA)
        eye = (int(hx + self.side * 0.35 * rad), int(hy - 0.4 * rad))
        cv2.circle(img, eye, max(1, int(0.13 * rad)), (15, 15, 15), -1, cv2.LINE_AA)

    def _strike(self, img: np.ndarray, t: float) -> None:
        """A stick (head from the shape pool) swinging down onto a surface at every hit."""
        s, u, p, hits = self.scale, self.u, self.p, self.tl.onsets
        sw, sh = (0.3 + 0.15 * p[0]) * u * s, (0.06 + 0.04 * p[1]) * u * s
        top = self.cy + 0.12 * u * s
        lift = (0.15 + 0.13 * p[2]) * u * s
        h = 1.0
        if hits.size:
            k = int(np.searchsorted(hits, t))
            if k == 0:
                h = min(1.0, max(0.0, (hits[0] - t) / 0.3)) ** 0.5
            elif k == hits.size:
                h = min(1.0, (t - hits[-1]) / 0.3) ** 0.5
            else:
                ph = (t - hits[k - 1]) / (hits[k] - hits[k - 1])
                h = float(np.sin(np.pi * ph**0.7)) ** 0.8
        flash = 0.0
        if hits.size:
            flash = max(0.0, 1.0 - float(np.min(np.abs(hits - t))) / 0.06)
        col = blend(self.cols[1], (255, 255, 255), 0.4 * flash)
        dy = 2.0 * flash
        x0, y0 = int(self.cx - sw / 2), int(top + dy)
        if self.kinds[1] in ("circle", "ellipse", "hexagon"):  # a drum-like body
            cv2.rectangle(img, (x0, y0), (int(x0 + sw), int(y0 + 2 * sh)), self.cols[2], -1)
            cv2.ellipse(
                img, (int(self.cx), y0), (int(sw / 2), int(sh / 2)), 0, 0, 360, col, -1, cv2.LINE_AA
            )
        else:  # a block / anvil-like body
            cv2.rectangle(img, (x0, y0), (int(x0 + sw), int(y0 + sh)), col, -1)
            cv2.rectangle(
                img,
                (int(x0 + sw / 4), int(y0 + sh)),
                (int(x0 + 3 * sw / 4), int(y0 + 2.2 * sh)),
                self.cols[2],
                -1,
            )
        hr = (0.03 + 0.02 * p[3]) * u * s
        head = (self.cx + 0.1 * sw * (p[4] - 0.5), top - hr - h * lift)
        hand = (head[0] + self.side * 0.25 * u * s, head[1] - 0.1 * u * s + 0.08 * h * u * s)
        cv2.line(
            img,
            (int(head[0]), int(head[1])),
            (int(hand[0]), int(hand[1])),
            self.cols[3],
            max(1, int(0.015 * u * s)),
            cv2.LINE_AA,
        )
        draw_shape(img, self.kinds[0], head, hr, 0.3 * h * self.side, self.cols[0])

    def _shake(self, t: float) -> np.ndarray:
        """Displacement of the vibrating box: a jolt per click, a 20 Hz buzz while ringing."""
        tl = self.tl
        if tl.onsets.size == 0:
            return np.zeros(2)
        active = (t >= tl.onsets) & (t < tl.onsets + tl.durations + 0.06)
        if not active.any():
            return np.zeros(2)
        k = int(np.flatnonzero(active)[-1])
        dt = t - tl.onsets[k]
        if tl.durations[k] > 0.1:  # a long event: buzz with a new direction every 1/20 s
            amp = float(envelope(tl, np.array([t]))[0])
            return amp * self.dirs[int(t * 20) % 64]
        return tl.strengths[k] * np.exp(-dt / 0.03) * self.dirs[k % 64]

    def _vibrate(self, img: np.ndarray, t: float) -> None:
        """A box with keys on a table line, shaking with the events."""
        s, u, p = self.scale, self.u, self.p
        bw, bh = (0.28 + 0.12 * p[0]) * u * s, (0.16 + 0.08 * p[1]) * u * s
        base = self.cy + bh / 2
        cv2.line(
            img,
            (int(self.cx - 0.42 * u), int(base + 2)),
            (int(self.cx + 0.42 * u), int(base + 2)),
            self.cols[2],
            max(1, int(0.02 * u)),
            cv2.LINE_AA,
        )
        d = self._shake(t) * (0.012 + 0.013 * p[2]) * u * s
        x0, y0 = self.cx - bw / 2 + d[0], self.cy - bh / 2 + d[1]
        cv2.rectangle(img, (int(x0), int(y0)), (int(x0 + bw), int(y0 + bh)), self.cols[0], -1)
        rows, cols = 2 + int(p[3] * 3), 3 + int(p[4] * 4)
        kw, kh = bw / (cols + 1), bh / (rows + 1)
        for i in range(rows):
            for j in range(cols):
                kx, ky = x0 + kw * (j + 0.6), y0 + kh * (i + 0.6)
                cv2.rectangle(
                    img,
                    (int(kx), int(ky)),
                    (int(kx + 0.7 * kw), int(ky + 0.7 * kh)),
                    self.cols[1],
                    -1,
                )

    def _swarm(self, img: np.ndarray, t: float) -> None:
        """Particles falling onto a ground band; each landing is an event (a drop, a clap)."""
        s, u, p, tl = self.scale, self.u, self.p, self.tl
        half = (0.25 + 0.1 * p[0]) * u * s
        top, ground = self.cy - 0.38 * u * s, self.cy + (0.2 + 0.1 * p[1]) * u * s
        cv2.rectangle(
            img,
            (int(self.cx - half - 0.05 * u), int(ground)),
            (int(self.cx + half + 0.05 * u), int(ground + 0.05 * u * s)),
            self.cols[1],
            -1,
        )
        land, fall = tl.onsets, tl.aux
        live = np.flatnonzero((t >= land - fall) & (t < land + 0.15))
        thick = max(1, int(0.02 * u * s))
        for k in live:
            x = self.cx + half * self.ev_xy[k, 0]
            if t < land[k]:
                ph = (t - (land[k] - fall[k])) / fall[k]
                y = top + (ground - top) * ph**1.3
                length = 0.05 * u * s * (0.5 + ph)
                cv2.line(
                    img,
                    (int(x), int(y - length)),
                    (int(x), int(y)),
                    self.cols[0],
                    thick + int(tl.strengths[k] > 0.7),
                    cv2.LINE_AA,
                )
            else:
                g = (t - land[k]) / 0.15
                ax = int(0.01 * u * s + 0.03 * u * s * g)
                cv2.ellipse(
                    img,
                    (int(x), int(ground)),
                    (ax, max(1, ax // 3)),
                    0,
                    180,
                    360,
                    self.cols[0],
                    1,
                    cv2.LINE_AA,
                )

    def _slide(self, img: np.ndarray, t: float) -> None:
        """An object rolling along a surface with its speed curve, dipping at events."""
        s, u, p, tl = self.scale, self.u, self.p, self.tl
        ys = self.cy + (0.05 + 0.1 * p[0]) * u * s
        cv2.rectangle(
            img,
            (int(self.cx - 0.42 * u), int(ys)),
            (int(self.cx + 0.42 * u), int(ys + 0.06 * u * s)),
            self.cols[1],
            -1,
        )
        travel = (0.35 + 0.25 * p[1]) * u * s
        cum = np.cumsum(tl.control + 0.05)  # distance travelled, (CONTROL_HZ * 3 + 1,)
        cum = cum / cum[-1]
        grid = np.arange(cum.size) / (cum.size - 1) * DURATION

        def pos(tt: float) -> float:
            return float(self.cx + self.side * travel * (np.interp(tt, grid, cum) - 0.5))

        r = (0.06 + 0.03 * p[2]) * u * s
        dip = 0.0
        for on, dur, st in zip(tl.onsets, tl.durations, tl.strengths, strict=True):
            if on <= t < on + dur:
                dip += st * np.sin(np.pi * (t - on) / dur)
        x = pos(t)
        y = ys - r + dip * 0.08 * u * s
        draw_shape(img, self.kinds[0], (x, y), r, self.side * (x - self.cx) / r, self.cols[0])
        for k, (on, dur) in enumerate(zip(tl.onsets, tl.durations, strict=True)):
            t0 = on + dur / 2
            if t0 <= t < t0 + 0.5:
                dt, xk = t - t0, pos(t0)
                for vx, vy in self.kick[k]:
                    px = xk + vx * 0.4 * u * s * dt
                    py = ys - (0.6 + 0.4 * abs(vy)) * 1.2 * u * s * dt + 2.5 * u * s * dt * dt
                    if py <= ys:
                        cv2.circle(
                            img,
                            (int(px), int(py)),
                            max(1, int(0.008 * u * s)),
                            self.cols[3],
                            -1,
                            cv2.LINE_AA,
                        )

    # ---------------------------------------------------------------- frame
    def _distract(self, img: np.ndarray, t: float, front: bool) -> None:
        for kind, col, rad, start, vel, wob, phase, in_front in self.distractors:
            if in_front != front:
                continue
            q = start + vel * t + 0.05 * np.sin(2 * np.pi * wob * t + phase)
            q = 1.0 - np.abs(1.0 - np.mod(q, 2.0))  # bounce inside the frame
            draw_shape(img, kind, (q[0] * self.w, q[1] * self.h), rad * self.u, wob * t, col)

    def frame(self, t: float, index: int) -> np.ndarray:
        """The frame at ``t`` seconds (``index`` picks the noise): ``(H, W, 3)`` BGR uint8."""
        img = self.bg.copy()
        self._distract(img, t, front=False)
        self._draw(img, t)
        self._distract(img, t, front=True)
        amp, freqs, phases = self.cam
        ox, oy = amp * np.sin(2 * np.pi * freqs * t + phases)
        if amp > 0.3:
            shift = np.array([[1, 0, ox], [0, 1, oy]], dtype=np.float32)
            img = cv2.warpAffine(img, shift, (self.w, self.h), borderMode=cv2.BORDER_REFLECT)
        if self.blur:
            img = cv2.GaussianBlur(img, (self.blur, self.blur), 0)
        fa, ff, fp = self.flicker
        gain = self.gain * (1 + fa * np.sin(2 * np.pi * ff * t + fp))
        oy_n, ox_n = self.noise_offsets[index % 128]
        bh, bw = self.noise_bank.shape[:2]
        y0, x0 = oy_n % (bh - self.h), ox_n % (bw - self.w)
        noise = self.noise_bank[y0 : y0 + self.h, x0 : x0 + self.w]
        out = img.astype(np.float32) * gain + noise * self.noise_sigma
        return np.clip(out, 0, 255).astype(np.uint8)
