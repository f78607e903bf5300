#!/usr/bin/env bash
# GPU check, prepared for a machine with an NVIDIA GPU (run from the repository root after
# `make install`): the demo dataset extracted with `--device cuda`, then a 100-client simulation
# with fractional GPUs per client (`federation.num_gpus_per_client`), training on cuda.
# Prints one table: extraction clips/s, simulation round time, peak GPU memory of each stage.
# Without a GPU (torch.cuda.is_available() false) it says so and exits 0.
#
#   bash bench/gpu.sh                  # defaults below; override with the environment:
#   CLIENTS=100 GPU_FRAC=0.1 ROUNDS=3 METHOD=gt_audio WORK=/tmp/x bash bench/gpu.sh
set -euo pipefail
PY=${PY:-.venv/bin/python}
FEDVIDA=${FEDVIDA:-.venv/bin/fedvida}
CLIENTS=${CLIENTS:-100}
GPU_FRAC=${GPU_FRAC:-0.1}
ROUNDS=${ROUNDS:-3}
METHOD=${METHOD:-gt_audio}

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "bench/gpu.sh: no GPU (torch.cuda.is_available() is False); nothing measured"
    exit 0
fi
WORK=${WORK:-$(mktemp -d /tmp/fedvida-gpu-XXXXXX)}
SETS=(--set "data.root=$WORK/demo" --set "partition.plan=$WORK/plan.json"
      --set "extract.cache_dir=$WORK/cache" --set "dictionary.out=$WORK/dictionary"
      --set "train.runs_dir=$WORK/runs" --set "partition.num_clients=$CLIENTS"
      --set "partition.scheme=iid" --set "extract.device=cuda" --set "train.device=cuda")

peak_gpu() {  # sample used GPU memory (MiB, all GPUs summed) into $1 until killed
    while true; do
        nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits \
            | awk '{s += $1} END {print s}' >> "$1"
        sleep 0.5
    done
}

"$FEDVIDA" data demo --out "$WORK/demo" > "$WORK/demo.log"
"$FEDVIDA" partition "${SETS[@]}" > "$WORK/partition.log"

peak_gpu "$WORK/extract.mem" & SAMPLER=$!
t0=$(date +%s.%N)
"$FEDVIDA" extract --all --device cuda "${SETS[@]}" | tee "$WORK/extract.log"
t1=$(date +%s.%N)
kill "$SAMPLER"

"$FEDVIDA" dictionary build "${SETS[@]}" > "$WORK/dictionary.log"

peak_gpu "$WORK/simulate.mem" & SAMPLER=$!
"$FEDVIDA" simulate --method "$METHOD" --name "gpu$CLIENTS" "${SETS[@]}" \
    --set "federation.rounds=$ROUNDS" --set "federation.num_gpus_per_client=$GPU_FRAC" \
    --set "federation.select_round=last" \
    | tee "$WORK/simulate.log"
kill "$SAMPLER"

"$PY" - "$WORK" "$t0" "$t1" "$CLIENTS" "$GPU_FRAC" "$METHOD" <<'PYEOF'
import sys
from pathlib import Path

from fedvida.data.partition import Plan
from fedvida.reporting.console import print_table
from fedvida.reporting.runlog import RunLog

work, t0, t1, clients, frac, method = Path(sys.argv[1]), *map(float, sys.argv[2:4]), *sys.argv[4:]
plan = Plan.load(work / "plan.json")
clips = sum(len(plan.partition(p)) for p in [*range(plan.num_clients), "test"])
peak = {s: max((float(x) for x in (work / f"{s}.mem").read_text().split()), default=0.0)
        for s in ("extract", "simulate")}
lines = RunLog(work / "runs" / f"gpu{clients}").rounds(method)
ends = [ln["finished_at"] for ln in lines]
warm = (ends[-1] - ends[0]) / (len(ends) - 1) if len(ends) > 1 else lines[0]["seconds"]
print_table(f"GPU bench ({work})", ["stage", "measure", "value", "peak GPU MiB"], [
    ("extract --device cuda", f"clips/s ({clips} clips, models loading included)",
     clips / (t1 - t0), peak["extract"]),
    (f"simulate {clients} clients, {frac} GPU each", f"s/round after the first ({method})",
     float(warm), peak["simulate"]),
])
PYEOF
