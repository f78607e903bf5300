"""The embedded demo dataset: real 3-second mp4 clips with audio, in the Moments-in-Time layout.

`write_demo_dataset` writes ``<out>/training/<category>/<clip>.mp4``,
``<out>/validation/<category>/<clip>.mp4``, ``trainingSet.csv`` / ``validationSet.csv`` (rows
``category/clip.mp4,category,3,0``, no header, like MiT), ``moments_categories.txt`` (``name,index``
for the demo's classes, sorted), plus two files the loader ignores: ``demo.json`` (the config and
summary; it also marks the folder as a demo that may be overwritten) and ``demo_clips.csv`` (the
format and conditions of every clip, for checks and analysis).

The design (classes in visually confusable pairs that differ by sound, events synchronised
between picture and sound, noise in both) is described in ``docs/demo-data.md``.
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fedvida.config import DemoConfig
from fedvida.data.demo_clip import (
    AUDIO_CHOICES,
    CODEC_CHOICES,
    FPS_CHOICES,
    SIZE_CHOICES,
    ClipSpec,
    write_clip,
)
from fedvida.data.demo_spec import CLASS_ORDER
from fedvida.errors import InputError

SPLITS: tuple[str, ...] = ("training", "validation")
CSV_NAMES: dict[str, str] = {"training": "trainingSet.csv", "validation": "validationSet.csv"}
MARKER = "demo.json"


@dataclass
class DemoSummary:
    """What `write_demo_dataset` wrote, and how fast.

    Attributes
    ----------
    root
        The dataset root.
    classes
        The demo's classes, sorted (label i == classes[i]).
    clips
        Clips written (both splits).
    no_stream, silent
        Clips without an audio stream / with a silent track.
    seconds
        Wall-clock time of the whole generation.
    """

    root: Path
    classes: list[str]
    clips: int
    no_stream: int
    silent: int
    seconds: float

    def clips_per_second(self) -> float:
        """Generation speed in clips per second."""
        return self.clips / self.seconds if self.seconds > 0 else float("inf")


def demo_classes(k: int) -> list[str]:
    """The first ``k`` classes of the fixed pair order (2 <= k <= 10), sorted by name."""
    if not 2 <= k <= len(CLASS_ORDER):
        raise ValueError(f"demo classes must be in 2..{len(CLASS_ORDER)}, got {k}")
    return sorted(CLASS_ORDER[:k])


def _quota_flags(rng: np.random.Generator, n: int, rates: list[float]) -> np.ndarray:
    """Assign each of ``n`` items one of ``len(rates) + 1`` groups with exact quotas.

    Group ``g < len(rates)`` gets ``round(rates[g] * n)`` items (chosen by a seeded
    permutation); the rest get group ``len(rates)``.
    """
    groups = np.full(n, len(rates))
    order = rng.permutation(n)
    start = 0
    for g, rate in enumerate(rates):
        count = min(n - start, int(round(rate * n)))
        groups[order[start : start + count]] = g
        start += count
    return groups


def _balanced(rng: np.random.Generator, n: int, choices: int) -> np.ndarray:
    """Indices into ``choices`` options, as balanced as possible, in a seeded random order."""
    return rng.permutation(n) % choices


def plan_clips(cfg: DemoConfig) -> list[ClipSpec]:
    """Every clip of the demo with its format and conditions (deterministic for ``cfg.seed``).

    Formats and conditions are spread over each split by seeded permutations, so they are
    independent of the class; the quotas are exact: ``round(rate * clips_in_split)``.
    """
    specs: list[ClipSpec] = []
    for split_index, split in enumerate(SPLITS):
        per_class = cfg.clips_per_class if split == "training" else cfg.val_clips_per_class
        cells = [(c, i) for c in demo_classes(cfg.classes) for i in range(per_class)]
        n = len(cells)
        rng = np.random.default_rng([cfg.seed, 1_000_003, split_index])
        kinds = _quota_flags(rng, n, [cfg.no_stream_rate, cfg.silent_rate, cfg.weak_audio_rate])
        kind_names = ("none", "silent", "weak", "normal")
        ambiguous = _quota_flags(rng, n, [cfg.ambiguous_video_rate]) == 0
        fps = _balanced(rng, n, len(FPS_CHOICES))
        size = _balanced(rng, n, len(SIZE_CHOICES))
        codec = _balanced(rng, n, len(CODEC_CHOICES))
        audio = _balanced(rng, n, len(AUDIO_CHOICES))
        prefix = "t" if split == "training" else "v"
        for j, (category, clip_index) in enumerate(cells):
            specs.append(
                ClipSpec(
                    relpath=f"{split}/{category}/demo_{prefix}{clip_index:04d}.mp4",
                    category=category,
                    split=split,
                    class_index=CLASS_ORDER.index(category),
                    clip_index=clip_index,
                    split_index=split_index,
                    seed=cfg.seed,
                    codec=CODEC_CHOICES[codec[j]],
                    fps_num=FPS_CHOICES[fps[j]][0],
                    fps_den=FPS_CHOICES[fps[j]][1],
                    width=SIZE_CHOICES[size[j]][0],
                    height=SIZE_CHOICES[size[j]][1],
                    audio=kind_names[kinds[j]],
                    sample_rate=AUDIO_CHOICES[audio[j]][0],
                    channels=AUDIO_CHOICES[audio[j]][1],
                    ambiguous=bool(ambiguous[j]),
                    max_distractors=cfg.max_distractors,
                    visual_identity=cfg.visual_identity,
                )
            )
    return specs


def _prepare_root(root: Path) -> None:
    """Create ``root``; clear it only when it is empty or an earlier demo (has `MARKER`)."""
    if root.exists() and not root.is_dir():
        raise InputError(f"{root}: exists and is not a directory")
    if root.is_dir() and any(root.iterdir()):
        if not (root / MARKER).is_file():
            raise InputError(
                f"{root}: not empty and not a fedvida demo dataset; choose another --out"
            )
        for split in SPLITS:
            shutil.rmtree(root / split, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)


def _write_index(root: Path, classes: list[str], specs: list[ClipSpec]) -> None:
    """Write the split CSVs, the categories file and the per-clip table."""
    for split in SPLITS:
        with (root / CSV_NAMES[split]).open("w", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            for s in specs:
                if s.split == split:
                    writer.writerow([s.relpath.split("/", 1)[1], s.category, 3, 0])
    (root / "moments_categories.txt").write_text(
        "".join(f"{name},{i}\n" for i, name in enumerate(classes))
    )
    rows = [s.row() for s in specs]
    with (root / "demo_clips.csv").open("w", newline="") as fh:
        writer2 = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        writer2.writeheader()
        writer2.writerows(rows)


def write_demo_dataset(
    cfg: DemoConfig, out: Path | None = None, progress: bool = False
) -> DemoSummary:
    """Write the demo dataset in the Moments-in-Time layout.

    Parameters
    ----------
    cfg
        The ``demo`` config section (classes, clips per class and split, seed, rates, workers).
    out
        Dataset root; ``None`` means ``cfg.out``. An existing non-empty folder is only replaced
        when it holds an earlier demo (its ``demo.json``).
    progress
        Show a progress bar with the rate in clips/s.

    Returns
    -------
    DemoSummary
        Root, classes, counts and the wall-clock time.

    Raises
    ------
    InputError
        When ``out`` is a file, or a non-empty folder that is not a demo dataset.
    """
    t0 = time.perf_counter()
    root = Path(out if out is not None else cfg.out)
    classes = demo_classes(cfg.classes)
    specs = plan_clips(cfg)
    _prepare_root(root)
    # the marker goes first, so that a run that stops half-way can be repeated over this folder
    (root / MARKER).write_text(json.dumps({"complete": False}) + "\n")
    _write_index(root, classes, specs)
    _run(specs, root, cfg.workers, progress)
    seconds = time.perf_counter() - t0
    summary = DemoSummary(
        root=root,
        classes=classes,
        clips=len(specs),
        no_stream=sum(s.audio == "none" for s in specs),
        silent=sum(s.audio == "silent" for s in specs),
        seconds=seconds,
    )
    info = {
        "complete": True,
        "config": cfg.model_dump(mode="json"),
        "summary": {**asdict(summary), "root": str(root)},
    }
    (root / MARKER).write_text(json.dumps(info, indent=2) + "\n")
    return summary


def _run(specs: list[ClipSpec], root: Path, workers: int, progress: bool) -> None:
    """Write every clip, in this process or in a pool of ``workers`` processes."""
    from fedvida.reporting.console import rate_progress

    bar = rate_progress("clips") if progress else None
    task = bar.add_task("demo clips", total=len(specs)) if bar else None
    if bar:
        bar.start()
    try:
        if workers <= 1 or len(specs) < 8:
            for spec in specs:
                write_clip(spec, root)
                if bar and task is not None:
                    bar.advance(task)
        else:
            # spawn, not fork: the caller may already run threads (progress bars, torch, Ray),
            # and a forked child can inherit one of their locks held and hang forever
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker,
                                     mp_context=ctx) as pool:
                for _ in pool.map(write_clip, specs, [root] * len(specs), chunksize=2):
                    if bar and task is not None:
                        bar.advance(task)
    finally:
        if bar:
            bar.stop()


def _init_worker() -> None:
    """One OpenCV thread per worker: the pool already uses the cores."""
    import cv2

    cv2.setNumThreads(1)
