"""Feature extraction speed: seconds per clip by stage, end-to-end clips/s, vs decode only.

Writes a small demo dataset (or uses ``--data``), puts its clips into one partition, loads the
configured encoders (not timed), then:

1. decode only: `decode_grid` on every clip (the floor any extractor pays);
2. end to end: `extract_partition` into a fresh cache (decode worker processes, batched
   encoders in this process; ``--set extract.workers=N``).

Prints per-stage seconds per clip (stages are summed over threads, so they can add up to more
than the wall time when decoding overlaps encoding), end-to-end clips/s, the ratio of
end-to-end to decode-only time, and the machine's load average (other processes share the CPU).
On a loaded machine wall time overstates the cost; the process's CPU time per clip gives the
throughput the same work reaches on idle cores (cores / CPU seconds per clip, an upper bound
that assumes the cores stay busy).

Run: ``python bench/extract.py [--clips 32] [--device cpu|cuda] [--batch-clips 8]
[--torch-threads 0] [--data DIR] [--set extract.KEY=VALUE ...]``.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

from fedvida.config import load_config
from fedvida.data.demo import write_demo_dataset
from fedvida.data.partition import Plan, PlannedClip
from fedvida.data.video import decode_grid
from fedvida.features.extract import STAGES, FrozenEncoders, extract_partition
from fedvida.reporting.console import console, print_table


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process (all threads) and its finished children (the
    decode worker processes, counted once they have exited)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        ru = resource.getrusage(who)
        total += ru.ru_utime + ru.ru_stime
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-clips", type=int, default=None)
    ap.add_argument("--torch-threads", type=int, default=None)
    ap.add_argument("--data", type=Path, default=None, help="an MiT-layout folder (default: demo)")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="fedvida-bench-extract-"))
    overrides = [f"extract.cache_dir={work / 'cache'}", f"extract.device={args.device}",
                 *args.overrides]
    if args.batch_clips:
        overrides.append(f"extract.batch_clips={args.batch_clips}")
    if args.torch_threads is not None:
        overrides.append(f"extract.torch_threads={args.torch_threads}")
    cfg = load_config(None, overrides)
    root = args.data
    if root is None:
        root = work / "demo"
        per_class = max(1, -(-args.clips // cfg.demo.classes))
        demo = cfg.demo.model_copy(update={"clips_per_class": per_class,
                                           "val_clips_per_class": 1})
        write_demo_dataset(demo, root)
    paths = sorted(p for p in Path(root).rglob("*.mp4"))[: args.clips]
    clips = [PlannedClip(str(p.relative_to(root)), 0, False) for p in paths]
    plan = Plan(str(root), ["all"], [clips], [], [0.0], 0, "bench")

    models = FrozenEncoders(cfg.extract)
    t0 = time.perf_counter()
    _ = (models.frame, models.audio, models.tagger, models.captioner)
    load = time.perf_counter() - t0

    t0 = time.perf_counter()
    for p in paths:
        decode_grid(p, cfg.extract.fps, cfg.extract.image_size, max_grid=cfg.extract.max_grid)
    decode_only = time.perf_counter() - t0

    load_before = os.getloadavg()
    cpu0 = _cpu_seconds()
    stats = extract_partition(cfg, plan, 0, models)
    models.close()  # reap the decode workers, so that their CPU time is counted
    cpu = _cpu_seconds() - cpu0
    load_after = os.getloadavg()
    n = max(1, stats.video_computed)
    rows = [(s, stats.seconds[s] / n) for s in STAGES]
    rows.append(("end-to-end (wall)", stats.wall / n))
    rows.append(("decode only (wall)", decode_only / len(paths)))
    rows.append(("CPU time, this process + decode workers (user + sys)", cpu / n))
    import torch

    print_table(
        f"extraction, {n} clips, {cfg.extract.frame_encoder} + {cfg.extract.audio_encoder} on "
        f"{models.device}", ["stage", "s/clip"], rows,
        caption=(f"end-to-end {n / stats.wall:.2f} clips/s; end-to-end / decode-only time "
                 f"{stats.wall / max(decode_only, 1e-9):.1f}x; batch_clips "
                 f"{cfg.extract.batch_clips}, torch threads {torch.get_num_threads()}, decode "
                 f"workers {cfg.extract.workers if cfg.extract.workers is not None else 'auto'}, "
                 f"{os.cpu_count()} cores, load average {load_before[0]:.1f} -> "
                 f"{load_after[0]:.1f}; models loaded in {load:.1f} s (not timed). "
                 f"CPU time bound on {os.cpu_count()} idle cores: "
                 f"{(os.cpu_count() or 1) * n / max(cpu, 1e-9):.2f} clips/s"),
    )
    if stats.failed:
        console.print(f"failed clips: {dict(stats.failed)}", markup=False)


if __name__ == "__main__":
    main()
