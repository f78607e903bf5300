"""MiT-v2-sized index: loading, `data inspect --index-only`, class selection and a 1000-client plan.

Writes a synthetic Moments-in-Time v2 index (``moments_categories.txt`` with 305 ``name,index``
rows, ``trainingSet.csv`` ~800k and ``validationSet.csv`` ~30k rows
``category/clip.mp4,category,agree,disagree``) and empty class folders, no clip files. Then
each step runs in its own process and is timed, with its peak RSS (``os.wait4``):

- load, index only (``data.check_files=false``: the CSVs are trusted), all classes;
- load, files checked (one listing per folder; every listed clip is then ``missing``, the worst
  case of the problem log);
- ``fedvida data inspect --index-only`` (the command, counts per class/split and problems);
- class selection: random 20, a list of 20;
- ``make_plan`` + ``Plan.save`` + ``Plan.load`` for 1000 clients, Dirichlet 0.5 and IID;
- ``fedvida partition --set data.check_files=false`` (Dirichlet 0.5, 1000 clients: load, plan,
  save and the 1000-row table).

Prints one table against the floor (60 s, 2048 MiB per step).

Run: ``python bench/mit_index.py [--out DIR] [--rows 800000] [--val-rows 30000] [--clients 1000]
[--only STEP ...] [--keep]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

FLOOR_S = 60.0
FLOOR_MIB = 2048.0
N_CLASSES = 305


def write_index(root: Path, rows: int, val_rows: int, seed: int = 0) -> list[str]:
    """The MiT v2 index files (skewed class sizes, like MiT's 500..5000 per class)."""
    rng = np.random.default_rng(seed)
    classes = [f"class_{i:03d}_{w}" for i, w in
               enumerate(rng.choice(["ing", "ed", "s", "_x"], N_CLASSES))]
    root.mkdir(parents=True, exist_ok=True)
    (root / "moments_categories.txt").write_text(
        "".join(f"{c},{i}\n" for i, c in enumerate(classes)))
    for split, n in (("training", rows), ("validation", val_rows)):
        weights = rng.uniform(0.2, 1.0, N_CLASSES)
        labels = rng.choice(N_CLASSES, size=n, p=weights / weights.sum())
        with (root / f"{split}Set.csv").open("w") as fh:
            for i, lab in enumerate(labels):
                c = classes[int(lab)]
                fh.write(f"{c}/yt-{i:07d}_{i % 97}.mp4,{c},3,0\n")
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
    return classes


def _child(step: str, root: Path, clients: int, work: Path) -> dict[str, Any]:
    """One step, run in this (child) process; returns facts to print."""
    from fedvida.config import ClassSelection, DataConfig, PartitionConfig
    from fedvida.data.mit import load_dataset
    from fedvida.data.partition import Plan, make_plan

    data = DataConfig(root=root, check_files=False)
    if step == "load_checked":
        data = DataConfig(root=root, check_files=True)
    elif step == "select_random20":
        data = DataConfig(root=root, check_files=False,
                          classes=ClassSelection(mode="random", n=20, seed=1))
    elif step == "select_list20":
        names = [ln.split(",")[0] for ln in
                 (root / "moments_categories.txt").read_text().splitlines()[:300:15]]
        data = DataConfig(root=root, check_files=False,
                          classes=ClassSelection(mode="list", names=names))
    index = load_dataset(data)
    out: dict[str, Any] = {"classes": len(index.classes), "train": len(index.train),
                           "test": len(index.test), "problems": len(index.problems)}
    if step.startswith("plan_"):
        scheme = "iid" if step == "plan_iid" else "dirichlet"
        cfg = PartitionConfig(num_clients=clients, scheme=scheme, alpha=0.5,
                              plan=work / f"{step}.json")
        t0 = time.perf_counter()
        plan = make_plan(index, cfg)
        t1 = time.perf_counter()
        plan.save(cfg.plan)
        t2 = time.perf_counter()
        back = Plan.load(cfg.plan)
        t3 = time.perf_counter()
        assert back.num_clients == clients
        sizes = [len(c) for c in back.clients]
        out.update(make_s=t1 - t0, save_s=t2 - t1, load_s=t3 - t2,
                   plan_mib=cfg.plan.stat().st_size / 2**20, min_client=min(sizes),
                   max_client=max(sizes))
    return out


def _measure(cmd: list[str]) -> tuple[float, float, int, str]:
    """Seconds, peak RSS (MiB), exit status and stdout of one command."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    text = proc.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - t0
    return seconds, usage.ru_maxrss / 1024.0, proc.returncode, text


STEPS = ("load_index", "load_checked", "inspect_index_only", "select_random20", "select_list20",
         "plan_dirichlet", "plan_iid", "partition_cmd")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="index folder (default: a temp dir)")
    ap.add_argument("--rows", type=int, default=800_000)
    ap.add_argument("--val-rows", type=int, default=30_000)
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--only", nargs="*", choices=STEPS, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the index and plans")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        facts = _child(args.child, args.out, args.clients, args.out / "plans")
        facts["self_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        print("RESULT " + json.dumps(facts))
        return 0

    from fedvida.reporting.console import print_table

    root = args.out or Path(tempfile.mkdtemp(prefix="fedvida-mit-index-")) / "Moments_in_Time_Raw"
    t0 = time.perf_counter()
    if not (root / "trainingSet.csv").is_file():
        write_index(root, args.rows, args.val_rows)
    print(f"index {root}: {args.rows} + {args.val_rows} rows, {N_CLASSES} classes "
          f"(written in {time.perf_counter() - t0:.1f} s)", flush=True)
    (root / "plans").mkdir(exist_ok=True)
    rows = []
    failed = False
    for step in args.only or STEPS:
        if step == "inspect_index_only":
            cmd = [sys.executable, "-m", "fedvida.cli", "data", "inspect", "--index-only",
                   "--set", f"data.root={root}"]
        elif step == "partition_cmd":
            cmd = [sys.executable, "-m", "fedvida.cli", "partition", "--set", f"data.root={root}",
                   "--set", "data.check_files=false", "--set",
                   f"partition.num_clients={args.clients}", "--set",
                   f"partition.plan={root / 'plans' / 'cmd.json'}"]
        else:
            cmd = [sys.executable, __file__, "--child", step, "--out", str(root),
                   "--clients", str(args.clients)]
        seconds, mib, rc, text = _measure(cmd)
        facts = {}
        for line in text.splitlines():
            if line.startswith("RESULT "):
                facts = json.loads(line[len("RESULT "):])
        ok = rc == 0 and seconds < FLOOR_S and mib < FLOOR_MIB
        failed |= not ok
        note = ", ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}"
                         for k, v in facts.items() if k != "self_mib")
        if rc != 0:
            note = f"exit {rc}: {text.strip().splitlines()[-1] if text.strip() else ''}"
        rows.append((step, f"{seconds:.1f}", f"{mib:.0f}", "pass" if ok else "FAIL", note))
        print(f"{step}: {seconds:.1f} s, {mib:.0f} MiB", flush=True)
    print_table(f"MiT-v2-sized index ({args.rows} + {args.val_rows} rows, {args.clients} clients)",
                ["step", "s", "peak MiB", f"< {FLOOR_S:.0f} s, {FLOOR_MIB:.0f} MiB", "facts"],
                rows)
    if args.out is None and not args.keep:
        shutil.rmtree(root.parent, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
