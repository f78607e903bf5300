"""Training throughput of the methods: samples/s per method, on CPU or CUDA.

Builds a synthetic FeatureSet with the demo's shapes (T=18 steps, D=1280 EfficientNet-Lite0 RGB and
flow features, Da=1024 YAMNet audio features, 527 AudioSet tags, 50% of clips with audio) and a real
semantic dictionary for the first C MiT v1 classes (all-MiniLM-L6-v2, in a temporary directory),
then times `train_local` (after one warm-up epoch) and `evaluate` for every method with the model
sizes of the given config. CAFMap's one-off caption mapping is part of the warm-up.

Run: ``python bench/train_step.py [--config configs/default.yaml] [--device cpu|cuda]
[--threads 1] [--clips 256] [--epochs 3] [--classes 10] [--methods generated svdmap]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fedvida.config import METHODS, load_config
from fedvida.features.cache import FeatureSet
from fedvida.models.container import FeatureDims, build_model
from fedvida.reporting.console import console, print_table
from fedvida.resources import mit_v1_categories
from fedvida.semantics import build_dictionary, load_sentence_embedder
from fedvida.training.local import evaluate, train_local


def synthetic_features(n: int, classes: int, seed: int = 0) -> FeatureSet:
    """Random features with realistic shapes; audio and tags for about half the clips."""
    rng = np.random.default_rng(seed)
    t, d, da, k = 18, 1280, 1024, 527
    labels = rng.integers(0, classes, n).astype(np.int64)
    present = rng.random(n) < 0.5
    audio = rng.normal(size=(n, t, da)).astype(np.float32) * present[:, None, None]
    tags = rng.random((n, k)).astype(np.float32) * present[:, None]
    return FeatureSet(
        relpaths=[f"bench/{i}.mp4" for i in range(n)],
        labels=labels,
        rgb=rng.random((n, t, d), dtype=np.float32),
        flow=rng.random((n, t, d), dtype=np.float32),
        audio=audio,
        audio_present=present,
        audio_reason=["" if p else "withheld" for p in present],
        tags=tags,
        rep_steps=rng.random((n, t)) < 0.2,
        captions=[f"a photo of a {w}" for w in rng.choice(["dog", "drum", "car", "bird"], n)],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None, help="model sizes and batch size from here")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: default)")
    parser.add_argument("--clips", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("bench: --device cuda but CUDA is not available")
    cfg = load_config(
        args.config, [f"train.device={args.device}", f"train.num_threads={args.threads}"]
    )
    classes = list(mit_v1_categories()[: args.classes])
    fs = synthetic_features(args.clips, len(classes))
    with tempfile.TemporaryDirectory() as tmp:
        embedder = load_sentence_embedder(cfg.dictionary.model)
        dictionary = build_dictionary(
            classes, Path(tmp) / "dictionary", embedder=embedder,
            action_template=cfg.dictionary.action_template,
            audio_template=cfg.dictionary.audio_template, top_k=cfg.dictionary.top_k,
        )
        dims = FeatureDims.from_features(fs, len(classes))
        rows = []
        for method in args.methods:
            model = build_model(cfg, dims)
            kw = {"method": method, "class_names": classes}
            train_local(model, fs, cfg, dictionary, epochs=1, seed=0, **kw)  # warm-up
            start = time.perf_counter()
            train_local(model, fs, cfg, dictionary, epochs=args.epochs, seed=0, **kw)
            train_s = time.perf_counter() - start
            start = time.perf_counter()
            evaluate(model, fs, cfg, dictionary, **kw)
            eval_s = time.perf_counter() - start
            params = sum(p.numel() for p in model.parameters())
            rows.append([method, args.clips * args.epochs / train_s, args.clips / eval_s,
                         1000 * train_s / (args.epochs * -(-args.clips // cfg.train.batch_size)),
                         params])
    print_table(
        f"Training throughput ({args.device}, {args.threads or torch.get_num_threads()} thread(s), "
        f"{args.clips} clips, batch {cfg.train.batch_size})",
        ["method", "train samples/s", "eval samples/s", "ms/step", "parameters"],
        rows,
    )
    console.print(f"torch {torch.__version__}")


if __name__ == "__main__":
    main()
