"""Do SVDMap's and CAFMap's semantic links carry the class on real photos and real recordings?

CAFMap conditions the generator on the AudioSet labels mapped from a caption of the clip's
frames; SVDMap keeps generated audio whose AudioSet tags agree with the dictionary entry of a
candidate action. Both can only help where those labels name the clip's class. On the synthetic
demo the captions are ImageNet pseudo-captions of drawn shapes and name the true class no more
often than a random one (docs/results.md). This bench measures the same two links on real media,
with the pipeline's own parts (no training, no test split of any run):

- video side: the pseudo-caption of each photo (`fedvida.features.captions.PseudoCaptioner`,
  EfficientNet-Lite0's top-3 ImageNet labels) -> its top-3 AudioSet labels
  (`fedvida.training.data.caption_condition`, CAFMap's condition);
- audio side: the YAMNet tags of the photo's recorded sound (`fedvida.features.yamnet.Yamnet`,
  the first 3 s at 16 kHz, averaged over the 18 steps) -> its top-3 AudioSet labels.

For each side: ``agreement`` (one of the 3 labels is in the dictionary entry of the true class,
`fedvida.training.evaluation.caption_label_agreement`'s rule) against ``chance`` (the same rate
for a random other class of the set), and a zero-shot top-1: the class whose dictionary entry
holds the most mass of those labels (ties and no mass count as wrong).

Media. ``--images DIR``: ``DIR/<MiT v1 action>/<name>.png|jpg`` with an optional sound file of the
same stem (``.ogg``, ``.wav``, ``.mp3``, ``.flac``). ``--tuxpaint STAMPS``: the stamps of Debian's
``tuxpaint-stamps-default`` (2022.06.04-1, GPL-2; photos of animals, instruments and tools,
most with the real recorded sound of the thing shown), mapped to MiT actions by `TUXPAINT`
(written from the stamp names before any output was seen). Get them (a package registry, not
a run-time download)::

    apt-get download tuxpaint-stamps-default && dpkg-deb -x tuxpaint-stamps-default_*.deb stamps
    python bench/real_media_semantics.py --tuxpaint stamps/usr/share/tuxpaint/stamps

The dictionary (``--dictionary``, default: the 339 MiT v1 actions built into a temporary
folder) is the one `fedvida dictionary build --all-mit-v1` writes.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fedvida.reporting.console import console, print_table

# MiT v1 action -> stamp files (relative to the stamps folder); each stamp's .ogg is its sound
TUXPAINT: dict[str, list[str]] = {
    "barking": ["animals/mammals/dogs/dog.png", "animals/mammals/dogs/fox.png"],
    "roaring": ["animals/mammals/cats/lion.png", "animals/mammals/cats/tiger.png",
                "animals/mammals/bears/bear.png"],
    "drumming": ["hobbies/music/percussion/drumkit.png",
                 "hobbies/music/percussion/drum_tomtom_floor.png",
                 "hobbies/music/percussion/cymbal_crash.png"],
    "playing+music": ["hobbies/music/string/cello.png", "hobbies/music/string/violin.png",
                      "hobbies/music/wind/bassoon.png"],
    "hammering": ["household/tools/hammer.png", "household/tools/mallet_metal.png"],
    "sawing": ["household/tools/saw.png"],
    "singing": ["animals/birds/blackbird.png", "animals/birds/lark.png",
                "animals/birds/cuckoo.png", "animals/birds/crow.png"],
}
SOUND_SUFFIXES = (".ogg", ".wav", ".mp3", ".flac")
K = 3  # AudioSet labels per clip, as CAFMap's condition (caption_condition's default k)


def collect(args: argparse.Namespace) -> list[tuple[str, Path, Path | None]]:
    """(action, image, sound or None) per item, in a fixed order."""
    items: list[tuple[str, Path, Path | None]] = []
    if args.tuxpaint is not None:
        for action, rels in TUXPAINT.items():
            for rel in rels:
                image = args.tuxpaint / rel
                if not image.is_file():
                    sys.exit(f"real_media_semantics: {image}: missing (is {args.tuxpaint} the "
                             "stamps folder of tuxpaint-stamps-default?)")
                sound = image.with_suffix(".ogg")
                items.append((action, image, sound if sound.is_file() else None))
        return items
    for folder in sorted(p for p in args.images.iterdir() if p.is_dir()):
        for image in sorted(folder.iterdir()):
            if image.suffix.lower() not in (".png", ".jpg", ".jpeg"):
                continue
            sounds = [image.with_suffix(s) for s in SOUND_SUFFIXES
                      if image.with_suffix(s).is_file()]
            items.append((folder.name.replace("_", "+"), image, sounds[0] if sounds else None))
    return items


def load_image(path: Path, size: int = 224) -> np.ndarray:
    """(size, size, 3) uint8 RGB; transparent parts (cut-out stamps) on mid grey."""
    from PIL import Image

    with Image.open(path) as im:
        rgba = im.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (128, 128, 128, 255))
    canvas.alpha_composite(rgba)
    return np.asarray(canvas.convert("RGB").resize((size, size)), dtype=np.uint8)


def top_labels(scores: np.ndarray, k: int = K) -> np.ndarray:
    """(N, 527) scores -> (N, 527) bool, True at each row's k best (rows of zeros: none)."""
    out = np.zeros(scores.shape, dtype=bool)
    for i, row in enumerate(scores):
        if row.max() > 0:
            out[i, np.argsort(-row, kind="stable")[:k]] = True
    return out


def side_scores(named: np.ndarray, labels: np.ndarray, entries: np.ndarray) -> dict[str, float]:
    """Agreement, chance and zero-shot top-1 of (N, 527) named labels against (C, k) entries."""
    c = len(entries)
    hits = np.array([named[i, entries[y]].any() for i, y in enumerate(labels)])
    chance = np.array([np.mean([named[i, entries[o]].any() for o in range(c) if o != y])
                       for i, y in enumerate(labels)])
    mass = np.stack([named[:, entries[o]].sum(axis=1) for o in range(c)], axis=1)  # (N, C)
    best = mass.argmax(axis=1)
    unique = (mass == mass.max(axis=1, keepdims=True)).sum(axis=1) == 1
    zero_shot = (best == labels) & unique & (mass.max(axis=1) > 0)
    return {"agreement": float(hits.mean()), "chance": float(chance.mean()),
            "zero_shot_top1": float(zero_shot.mean()), "items": float(len(labels))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", type=Path, help="DIR/<MiT action>/<photo> (+ same-stem sound)")
    src.add_argument("--tuxpaint", type=Path, help="tuxpaint-stamps-default's stamps folder")
    parser.add_argument("--dictionary", type=Path, default=None,
                        help="a built dictionary holding every action (default: MiT v1, built)")
    parser.add_argument("--verbose", action="store_true", help="print every item's labels")
    args = parser.parse_args()

    from fedvida.data.audio import load_audio
    from fedvida.features.captions import PseudoCaptioner
    from fedvida.features.effnet import EffNetLite0
    from fedvida.features.yamnet import Yamnet
    from fedvida.resources import audioset_labels, mit_v1_categories
    from fedvida.semantics.dictionary import SemanticDictionary
    from fedvida.training.data import caption_condition

    items = collect(args)
    actions = list(dict.fromkeys(a for a, _, _ in items))
    if len(actions) < 2:
        sys.exit("real_media_semantics: needs photos of at least 2 actions")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        if args.dictionary is not None:
            dictionary = SemanticDictionary.load(args.dictionary)
        else:
            from fedvida.config import DictionaryConfig
            from fedvida.semantics import build_dictionary
            from fedvida.semantics.embedder import load_sentence_embedder

            dcfg = DictionaryConfig()
            dictionary = build_dictionary(
                mit_v1_categories(), Path(tmp) / "dictionary",
                embedder=load_sentence_embedder(dcfg.model), top_k=dcfg.top_k,
                action_template=dcfg.action_template, audio_template=dcfg.audio_template)
        missing = [a for a in actions if a not in dictionary]
        if missing:
            sys.exit(f"real_media_semantics: action '{missing[0]}' is not in the dictionary")
        entries = np.asarray(dictionary.topk_indices)[dictionary.indices(actions)]  # (C, k)
        labels = np.array([actions.index(a) for a, _, _ in items])
        captioner = PseudoCaptioner(EffNetLite0("cpu"), K)
        frames = [load_image(img)[None] for _, img, _ in items]
        logits = [captioner.encoder.encode(f)[1] for f in frames]
        captions = captioner.caption(frames, logits, [np.ones(1)] * len(items))
        video = top_labels(caption_condition(captions, dictionary, dictionary.model_name, k=K))
        with_sound = [i for i, (_, _, s) in enumerate(items) if s is not None]
        yamnet = Yamnet("cpu")
        waves = []
        for i in with_sound:
            track = load_audio(items[i][2], 16000)  # type: ignore[arg-type]
            wave = np.zeros(48000, np.float32)
            if track is not None:
                wave[: min(48000, len(track.samples))] = track.samples[:48000]
            waves.append(wave)
        _, tags = yamnet.encode(waves, 16000, 18)  # (S, 527)
        audio = top_labels(np.asarray(tags))
    names = [name for _, name in audioset_labels()]
    if args.verbose:
        rows = []
        for i, (action, image, _) in enumerate(items):
            j = with_sound.index(i) if i in with_sound else None
            heard = ", ".join(names[t] for t in np.flatnonzero(audio[j])) if j is not None else "-"
            rows.append([action, image.stem, captions[i].removeprefix("a video showing "),
                         ", ".join(names[t] for t in np.flatnonzero(video[i])), heard])
        print_table("Items", ["action", "item", "caption (ImageNet top-3)",
                              "caption -> AudioSet top-3", "sound -> YAMNet top-3"], rows)
    v = side_scores(video, labels, entries)
    a = side_scores(audio, labels[with_sound], entries)
    print_table(
        f"Semantic links on real media: {len(items)} photos ({len(with_sound)} with sound), "
        f"{len(actions)} MiT actions, dictionary top-{entries.shape[1]}; "
        f"{time.perf_counter() - t0:.0f} s",
        ["link", "items", "agreement", "chance (other class)", "zero-shot top-1",
         "1 / classes"],
        [["photo caption -> AudioSet (CAFMap condition)", int(v["items"]), f"{v['agreement']:.3f}",
          f"{v['chance']:.3f}", f"{v['zero_shot_top1']:.3f}", f"{1 / len(actions):.3f}"],
         ["recorded sound -> YAMNet tags (SVDMap's premise)", int(a["items"]),
          f"{a['agreement']:.3f}", f"{a['chance']:.3f}", f"{a['zero_shot_top1']:.3f}",
          f"{1 / len(actions):.3f}"]])
    console.print("actions: " + ", ".join(actions), soft_wrap=True)


if __name__ == "__main__":
    main()
