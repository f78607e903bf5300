"""Demo dataset: generation speed, and how much each modality tells about the class.

1. Writes the demo (default: 10 classes x 40 training + 12 validation clips) and reports clips/s.
2. Modality-informativeness check with no pretrained model. The clips are decoded from the mp4
   files (the same files every stage reads; the generator's own metadata is not used) and turned
   into simple hand-made features:
   - video (6 fps): 18 frames sampled like the extraction stage; per frame mean colour and
     frame-difference motion energy on a 4x4 grid, summarised over time (mean, std, max, the
     spectrum of the global motion energy), plus the time-averaged 8x6 grey thumbnail (layout);
   - video (all frames): the same summaries at the clip's full frame rate (a stronger view of
     the motion timing, e.g. hit tempo);
   - audio: 16 kHz mono, 40-band log-mel, per band mean / std / 90th percentile, plus the
     modulation spectrum of the broadband energy; clips without a usable track (no stream, or
     RMS below -60 dBFS) get zeros and a "missing" flag, and stay in the test set;
   - both: the concatenation (video 6 fps + audio).
   Each set is classified by multinomial logistic regression (numpy + scipy L-BFGS, features
   standardised on the training split, L2 strength picked by 5-fold CV on the training split
   only), trained on ``training`` and tested on ``validation``.

Run: ``python bench/demo_data.py [--out DIR] [--classes 10] [--clips-per-class 40]
[--val-clips-per-class 12] [--seed 0] [--workers 2] [--reuse]``.
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import tempfile
from pathlib import Path

import av
import cv2
import numpy as np
from scipy.optimize import minimize

from fedvida.config import DemoConfig
from fedvida.data.demo import write_demo_dataset
from fedvida.data.demo_spec import ARCHETYPE
from fedvida.reporting.console import console, print_table

STEPS, SR = 18, 16000


def decode(path: Path) -> tuple[np.ndarray, np.ndarray, float, np.ndarray | None]:
    """All frames ``(N, 48, 64, 3)`` uint8, their times, the fps, and 16 kHz mono audio or None."""
    frames, times = [], []
    with av.open(str(path)) as box:
        vs = box.streams.video[0]
        fps = float(vs.average_rate)
        for fr in box.decode(vs):
            frames.append(
                cv2.resize(fr.to_ndarray(format="bgr24"), (64, 48), interpolation=cv2.INTER_AREA)
            )
            times.append(float(fr.pts * fr.time_base))
    audio = None
    with av.open(str(path)) as box:
        if box.streams.audio:
            res = av.AudioResampler(format="flt", layout="mono", rate=SR)
            parts = [
                p.to_ndarray().reshape(-1) for fr in box.decode(audio=0) for p in res.resample(fr)
            ]
            parts += [p.to_ndarray().reshape(-1) for p in res.resample(None)]
            audio = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    return np.stack(frames), np.asarray(times), fps, audio


def motion_features(frames: np.ndarray, rate: float) -> np.ndarray:
    """Summaries of colour and grid motion energy for frames ``(T, 48, 64, 3)`` at ``rate`` Hz."""
    f = frames.astype(np.float32)
    colour = f.mean(axis=(1, 2))  # (T, 3)
    grey = f.mean(axis=3)
    diff = np.abs(np.diff(grey, axis=0))  # (T-1, 48, 64)
    grid = diff.reshape(diff.shape[0], 4, 12, 4, 16).mean(axis=(2, 4)).reshape(diff.shape[0], 16)
    energy = grid.mean(axis=1)
    spec = np.abs(np.fft.rfft(energy - energy.mean()))
    bins = np.interp(
        np.linspace(0.5, min(rate / 2, 12.0), 12), np.fft.rfftfreq(energy.size, 1 / rate), spec
    )
    thumb = cv2.resize(grey.mean(axis=0), (8, 6), interpolation=cv2.INTER_AREA).reshape(-1)
    return np.concatenate(
        [
            colour.mean(0),
            colour.std(0),
            grid.mean(0),
            grid.std(0),
            grid.max(0),
            [energy.mean(), energy.std(), energy.max()],
            np.log1p(bins),
            thumb / 255,
        ]
    )


def mel_bank(n_fft: int = 512, bands: int = 40) -> np.ndarray:
    """Triangular HTK mel filters, ``(bands, n_fft // 2 + 1)``."""
    mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731
    edges = 700 * (10 ** (np.linspace(mel(60), mel(7800), bands + 2) / 2595) - 1)
    freqs = np.fft.rfftfreq(n_fft, 1 / SR)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    return np.maximum(0, np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)))


def audio_features(audio: np.ndarray | None, bank: np.ndarray) -> np.ndarray:
    """Log-mel summaries and modulation spectrum (+ a missing flag); zeros when no usable audio."""
    size = 3 * 40 + 10 + 1
    if audio is None or audio.size < SR or 20 * np.log10(np.sqrt(np.mean(audio**2)) + 1e-12) < -60:
        out = np.zeros(size)
        out[-1] = 1.0
        return out
    x = audio[: 3 * SR]
    frames = np.lib.stride_tricks.sliding_window_view(x, 400)[::160] * np.hanning(400)
    power = np.abs(np.fft.rfft(frames, 512)) ** 2
    logmel = np.log(power @ bank.T + 1e-6)  # (F, 40) at 100 Hz
    loud = logmel.mean(axis=1)
    mod = np.abs(np.fft.rfft(loud - loud.mean()))
    mod_bins = np.interp(np.linspace(1, 30, 10), np.fft.rfftfreq(loud.size, 0.01), mod)
    return np.concatenate(
        [
            logmel.mean(0),
            logmel.std(0),
            np.percentile(logmel, 90, axis=0),
            np.log1p(mod_bins),
            [0.0],
        ]
    )


def clip_features(path: Path, bank: np.ndarray) -> dict[str, np.ndarray]:
    frames, times, fps, audio = decode(path)
    dur = times[-1] + 1 / fps
    picks = [int(np.argmin(np.abs(times - (i + 0.5) * dur / STEPS))) for i in range(STEPS)]
    return {
        "video": motion_features(frames[picks], STEPS / dur),
        "video_all": motion_features(frames, fps),
        "audio": audio_features(audio, bank),
    }


def _softmax_fit(x: np.ndarray, y: np.ndarray, k: int, lam: float) -> np.ndarray:
    """Multinomial logistic regression with an L2 penalty; weights ``(D + 1, K)``."""
    xb = np.hstack([x, np.ones((x.shape[0], 1))])
    onehot = np.eye(k)[y]

    def loss(w_flat: np.ndarray) -> tuple[float, np.ndarray]:
        w = w_flat.reshape(xb.shape[1], k)
        z = xb @ w
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        nll = -np.mean(np.sum(onehot * np.log(p + 1e-12), axis=1)) + lam * np.sum(w[:-1] ** 2)
        grad = xb.T @ (p - onehot) / x.shape[0]
        grad[:-1] += 2 * lam * w[:-1]
        return float(nll), grad.reshape(-1)

    res = minimize(
        loss, np.zeros(xb.shape[1] * k), jac=True, method="L-BFGS-B", options={"maxiter": 500}
    )
    return res.x.reshape(xb.shape[1], k)


def _scores(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Log-probabilities ``(N, K)``."""
    z = np.hstack([x, np.ones((x.shape[0], 1))]) @ w
    z -= z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def classify(
    xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, k: int, seed: int = 0
) -> np.ndarray:
    """Standardise on train, pick the L2 strength by 5-fold CV on train; test log-probabilities.

    Returns
    -------
    np.ndarray
        ``(N_test, K)`` log-probabilities of the classifier refitted on the whole training split.
    """
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    folds = np.random.default_rng(seed).permutation(len(ytr)) % 5
    best, best_acc = 1e-2, -1.0
    for lam in (1e-3, 1e-2, 1e-1):
        hits = []
        for f in range(5):
            w = _softmax_fit(xtr[folds != f], ytr[folds != f], k, lam)
            hits.append(np.mean(_scores(w, xtr[folds == f]).argmax(1) == ytr[folds == f]))
        if np.mean(hits) > best_acc:
            best, best_acc = lam, float(np.mean(hits))
    return _scores(_softmax_fit(xtr, ytr, k, best), xte)


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _load() -> float:
    return os.getloadavg()[0]


def load_split(root: Path, split: str, classes: list[str]) -> tuple[list[Path], np.ndarray]:
    csv_name = "trainingSet.csv" if split == "training" else "validationSet.csv"
    with (root / csv_name).open() as fh:
        rows = [r for r in csv.reader(fh) if r]
    return [root / split / r[0] for r in rows], np.array([classes.index(r[1]) for r in rows])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="dataset folder (default: a temp dir)")
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--clips-per-class", type=int, default=40)
    ap.add_argument("--val-clips-per-class", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--reuse", action="store_true", help="use an existing demo in --out as is")
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory(prefix="fedvida-demo-") if args.out is None else None
    root = Path(tmp.name) if tmp else args.out
    if not (args.reuse and (root / "demo.json").is_file()):
        cfg = DemoConfig(
            classes=args.classes,
            clips_per_class=args.clips_per_class,
            val_clips_per_class=args.val_clips_per_class,
            seed=args.seed,
            workers=args.workers,
        )
        cpu0 = _cpu_seconds()
        s = write_demo_dataset(cfg, root, progress=True)
        cpu = _cpu_seconds() - cpu0
        print_table(
            "demo generation",
            ["classes", "clips", "no stream", "silent", "seconds", "clips/s", "CPU s/clip"],
            [
                [
                    len(s.classes),
                    s.clips,
                    s.no_stream,
                    s.silent,
                    s.seconds,
                    s.clips_per_second(),
                    cpu / s.clips,
                ]
            ],
            caption=f"CPU time of this process and its workers; load average {_load():.1f}",
        )
    classes = [line.split(",")[0] for line in (root / "moments_categories.txt").read_text().split()]
    bank = mel_bank()
    data = {}
    with console.status("decoding clips and computing hand-made features"):
        for split in ("training", "validation"):
            paths, labels = load_split(root, split, classes)
            feats = [clip_features(p, bank) for p in paths]
            data[split] = ({k: np.stack([f[k] for f in feats]) for k in feats[0]}, labels)
    (ftr, ytr), (fte, yte) = data["training"], data["validation"]
    sets = {
        "video (6 fps)": ["video"],
        "video (all frames)": ["video_all"],
        "audio": ["audio"],
        "video + audio (concatenated)": ["video", "audio"],
    }
    k = len(classes)
    scores = {
        name: classify(
            np.hstack([ftr[f] for f in keys]), ytr, np.hstack([fte[f] for f in keys]), k, args.seed
        )
        for name, keys in sets.items()
    }
    # late fusion: sum of the two separately trained classifiers' log-probabilities
    scores["video + audio (late fusion)"] = scores["video (6 fps)"] + scores["audio"]
    pair = np.array([ARCHETYPE[c] for c in classes])
    has_audio = fte["audio"][:, -1] == 0
    rows = []
    for name, score in scores.items():
        pred = score.argmax(1)
        wrong = pred != yte
        rows.append(
            [
                name,
                float(np.mean(pred == yte)),
                float(np.mean(pred[has_audio] == yte[has_audio])),
                float(np.mean(pair[pred] == pair[yte])),
                float(np.mean(pair[pred[wrong]] == pair[yte[wrong]])) if wrong.any() else 0.0,
            ]
        )
    print_table(
        f"modality check: {len(ytr)} training / {len(yte)} validation clips, "
        f"{len(classes)} classes (chance {1 / len(classes):.3f})",
        ["features", "accuracy", "acc. (clips with audio)", "pair accuracy", "errors inside pair"],
        rows,
        caption="pair = the visual archetype two classes share; multinomial logistic regression",
    )
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
