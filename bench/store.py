"""Feature store reuse: clips re-extracted after re-partitioning (floor 0) and bytes per clip.

Writes a small demo dataset (or uses ``--data``), extracts a 2-client plan into a fresh cache
(one store shared by all partitions, `fedvida.features.cache`), then re-partitions the same clips
several ways (more clients, Dirichlet label skew with another alpha and seed, other withholding)
and runs `extract_partition` + `load_features` for every partition of each new plan. Prints, per
plan, the clips computed (re-extracted) and the seconds the plan's extraction pass and loading
took (pack building only, when nothing is computed), then the store's bytes per clip for the
video and audio groups and the packs' bytes per clip (each plan's views are plan-ordered copies).

Run: ``python bench/store.py [--clips 24] [--device cpu|cuda] [--data DIR]
[--set extract.KEY=VALUE ...] [--keep]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from fedvida.config import load_config
from fedvida.data.demo import write_demo_dataset
from fedvida.data.partition import Plan, PlannedClip
from fedvida.features.cache import load_features, store_dir
from fedvida.features.extract import FrozenEncoders, extract_partition
from fedvida.reporting.console import print_table


def _plan(root: Path, clips: list[tuple[str, int]], clients: int, alpha: float, seed: int,
          withhold: float) -> Plan:
    """Clips dealt to `clients` by Dirichlet(alpha) label skew (every client gets >= 1 clip)."""
    rng = np.random.default_rng(seed)
    labels = sorted({lab for _, lab in clips})
    parts: list[list[PlannedClip]] = [[] for _ in range(clients)]
    for lab in labels:
        mine = [rel for rel, lb in clips if lb == lab]
        rng.shuffle(mine)
        share = rng.dirichlet([alpha] * clients)
        for rel, k in zip(mine, rng.choice(clients, size=len(mine), p=share), strict=True):
            parts[int(k)].append(PlannedClip(rel, lab, bool(rng.random() < withhold)))
    for k in range(clients):  # an empty client takes a clip from the largest one
        if not parts[k]:
            parts[k].append(max(parts, key=len).pop())
    return Plan(str(root), [str(x) for x in labels], parts, [], [withhold] * clients, seed,
                f"bench-{clients}-{alpha}-{seed}")


def _bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=24)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--data", type=Path, default=None, help="an MiT-layout folder (default: demo)")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--keep", action="store_true", help="keep the work folder (default: deleted)")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="fedvida-bench-store-"))
    cfg = load_config(None, [f"extract.cache_dir={work / 'cache'}",
                             f"extract.device={args.device}", *args.overrides])
    root = args.data
    if root is None:
        root = work / "demo"
        per_class = max(1, -(-args.clips // cfg.demo.classes))
        write_demo_dataset(cfg.demo.model_copy(update={"clips_per_class": per_class,
                                                       "val_clips_per_class": 1}), root)
    paths = sorted(Path(root).rglob("*.mp4"))[: args.clips]
    rels = [str(p.relative_to(root)) for p in paths]
    names = sorted({Path(r).parent.name for r in rels})
    clips = [(r, names.index(Path(r).parent.name)) for r in rels]
    plans = [
        ("2 clients, alpha 0.5, seed 0, withhold 0.5", _plan(root, clips, 2, 0.5, 0, 0.5)),
        ("3 clients, alpha 0.5, seed 0, withhold 0.5", _plan(root, clips, 3, 0.5, 0, 0.5)),
        ("8 clients, alpha 0.1, seed 1, withhold 0.5", _plan(root, clips, 8, 0.1, 1, 0.5)),
        ("8 clients, alpha 0.1, seed 1, withhold 0.0", _plan(root, clips, 8, 0.1, 1, 0.0)),
        (f"{len(clips)} clients (1 clip each), seed 2", _plan(root, clips, len(clips), 100.0, 2,
                                                             0.25)),
    ]
    models = FrozenEncoders(cfg.extract)
    rows: list[tuple[object, ...]] = []
    cache = Path(cfg.extract.cache_dir)
    try:
        for name, plan in plans:
            packs_before = sum(_bytes(d / "packs") for d in cache.glob("[0-9]*"))
            t0 = time.perf_counter()
            computed = 0
            for k in range(plan.num_clients):
                computed += extract_partition(cfg, plan, k, models).computed
                load_features(cfg, plan, k)
            seconds = time.perf_counter() - t0
            packs = sum(_bytes(d / "packs") for d in cache.glob("[0-9]*")) - packs_before
            rows.append((name, plan.num_clients, computed,
                         "(first extraction)" if not rows else computed, seconds,
                         packs // len(clips)))
    finally:
        models.close()
    print_table(f"re-partitioning the same {len(clips)} clips (one shared store)",
                ["plan", "clients", "clips computed", "re-extracted", "s (extract + load)",
                 "new pack bytes/clip"], rows)
    size_rows = []
    for group in sorted(store_dir(cfg.extract).iterdir()):
        size_rows.append((group.name.split("-")[0], _bytes(group), len(clips),
                          _bytes(group) // len(clips)))
    print_table("store size on disk", ["group", "bytes", "clips", "bytes/clip"], size_rows,
                caption=f"{cfg.extract.frame_encoder} + {cfg.extract.audio_encoder}, "
                        f"T = {cfg.extract.steps}; load average {os.getloadavg()[0]:.1f}")
    if args.keep:
        print(f"work folder kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
