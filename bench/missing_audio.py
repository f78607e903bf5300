"""The oracle-gap table: each method on the test clips whose audio is withheld, over seeds.

Centralised training (every client's training clips pooled, the validation split carved from
them) of each method for each seed; prints, per method, top-1 on the missing-audio clips beside
video only and the real audio on the same clips, gap closed, macro-F1, the change on clips that
keep their audio (vs gt_audio) and the paired bootstrap 95% CI of (method - video_only); the
linear probe beside video_only. Needs the plan, the feature cache and (for svdmap / cafmap) the
dictionary: run ``fedvida run`` (or the stages) first.

    python bench/missing_audio.py --config configs/default.yaml --seeds 0 1 2
    python bench/missing_audio.py --methods video_only gt_audio prototype --set train.epochs=20
    python bench/missing_audio.py --json runs/bench-missing.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fedvida.config import METHODS, load_config  # noqa: E402
from fedvida.reporting.console import print_table  # noqa: E402
from fedvida.reporting.missing import SEED_CAPTION, SEED_HEADER, seed_rows  # noqa: E402
from fedvida.training.central import load_central_data, run_seeds  # noqa: E402
from fedvida.training.evaluation import caption_label_agreement  # noqa: E402

# what validation chose per method and seed (printed per seed, in the JSON)
CHOSEN = ("best_epoch", "fill_weight", "modality_dropout", "svdmap_threshold")
SHORT = {"fill_weight": "fill", "modality_dropout": "dropout", "svdmap_threshold": "thr"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--config", default="configs/default.yaml")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--json", type=Path, default=None, help="also write the summary as JSON")
    args = ap.parse_args()
    t0 = time.perf_counter()
    cfg = load_config(args.config, args.overrides)

    choices: dict[int, dict[str, dict[str, float]]] = {}  # seed -> method -> chosen knobs

    def said(seed: int, results: list) -> None:
        choices[seed] = {r.method: {k: float(r.train[k]) for k in CHOSEN if k in r.train}
                         for r in results}
        print(f"seed {seed}: " + ", ".join(
            f"{r.method} {r.test.get('top1_missing', float('nan')):.3f}"
            f"(ep {r.train.get('best_epoch', 0):.0f}"
            + "".join(f", {SHORT[k]} {r.train[k]:g}" for k in CHOSEN[1:] if k in r.train) + ")"
            for r in results), flush=True)

    runs = run_seeds(cfg, args.methods, args.seeds, on_seed=said)
    n = int(runs.per_seed[0]["video_only"].get("n_missing", 0))
    print_table(f"Missing-audio test clips ({n} clips whose real audio is withheld), "
                f"{len(args.seeds)} seeds, centralised", SEED_HEADER, seed_rows(runs.summary),
                caption=SEED_CAPTION)
    summary, per_seed = runs.summary, runs.per_seed
    if "cafmap" in args.methods:  # does CAFMap's condition carry information on this data?
        data = load_central_data(cfg, ["cafmap"])
        assert data.dictionary is not None
        agree = caption_label_agreement(data.test.captions, data.test.labels, data.classes,
                                        data.dictionary, cfg.dictionary.model)
        print(f"CAFMap condition (test captions -> top-3 AudioSet labels) names a dictionary "
              f"label of the true class for {agree['agreement']:.3f} of {agree['clips']:.0f} "
              f"clips; of a random other class: {agree['chance']:.3f}")
        per_seed.append({"cafmap_condition": agree})
    print(f"{time.perf_counter() - t0:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"seeds": args.seeds, "overrides": args.overrides,
                                         "summary": summary, "per_seed": per_seed,
                                         "chosen_on_validation": choices}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
