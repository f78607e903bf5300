"""Quality of the semantic dictionary: does each action's entry hold the AudioSet labels it should?

A hand-made list of (MiT v1 action, expected AudioSet labels) pairs, written before looking at any
dictionary output, is scored for every text-template preset of `fedvida.semantics.build`:

- hit@1, hit@5: the share of actions whose top-1 / top-5 holds at least one expected label;
- MRR: mean reciprocal rank of the first expected label (over all 527);
- found@5: mean number of expected labels in the top 5 (the research's "3.7 true labels in the top
  5" figure is of this kind, but depends on how many labels are expected per action; we list
  1-4, mean printed below), P@5 = found@5 / 5, R@5 = found@5 / min(|expected|, 5).

The preset with the best R@5 over all pairs (tie-break MRR) is the default of DictionaryConfig:
R@5 because SVDMap uses exactly the top-k entry (k = 5). "direct" pairs share a word between the
action and a label (easy); "indirect" pairs share none (checked), e.g. driving -> Car, Engine.

Run: ``python bench/dictionary_quality.py [--model all-MiniLM-L6-v2] [--device cpu]``.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time

import numpy as np

from fedvida.config import DictionaryConfig
from fedvida.reporting.console import console, print_table
from fedvida.resources import audioset_labels, mit_v1_categories
from fedvida.semantics import TEMPLATE_PRESETS, build_dictionary, embed_labels
from fedvida.semantics.embedder import load_sentence_embedder
from fedvida.semantics.labels import normalise_action

# (MiT v1 action, AudioSet display names that a good entry should rank first)
PAIRS: list[tuple[str, list[str]]] = [
    ("barking", ["Bark", "Dog", "Bow-wow", "Yip"]),
    ("applauding", ["Applause", "Clapping", "Cheering"]),
    ("clapping", ["Clapping", "Applause", "Hands"]),
    ("drumming", ["Drum", "Drum kit", "Snare drum", "Bass drum"]),
    ("typing", ["Typing", "Computer keyboard", "Typewriter"]),
    ("raining", ["Rain", "Raindrop", "Rain on surface"]),
    ("coughing", ["Cough", "Throat clearing"]),
    ("sneezing", ["Sneeze"]),
    ("laughing", ["Laughter", "Giggle", "Chuckle, chortle", "Belly laugh"]),
    ("crying", ["Crying, sobbing", "Baby cry, infant cry", "Whimper"]),
    ("whistling", ["Whistling", "Whistle"]),
    ("singing", ["Singing", "Vocal music", "Choir"]),
    ("howling", ["Howl", "Canidae, dogs, wolves"]),
    ("roaring", ["Roar", "Roaring cats (lions, tigers)"]),
    ("hammering", ["Hammer"]),
    ("sawing", ["Sawing", "Power tool"]),
    ("drilling", ["Drill", "Power tool"]),
    ("vacuuming", ["Vacuum cleaner"]),
    ("mowing", ["Lawn mower"]),
    ("frying", ["Frying (food)", "Sizzle"]),
    ("boiling", ["Boiling"]),
    ("pouring", ["Pour", "Liquid", "Trickle, dribble"]),
    ("dripping", ["Drip"]),
    ("splashing", ["Splash, splatter", "Water"]),
    ("knocking", ["Knock", "Door"]),
    ("chewing", ["Chewing, mastication"]),
    ("snapping", ["Finger snapping"]),
    ("sniffing", ["Sniff"]),
    ("shouting", ["Shout", "Yell", "Bellow"]),
    ("cheering", ["Cheering", "Crowd", "Applause"]),
    ("erupting", ["Eruption", "Explosion"]),
    ("telephoning", ["Telephone", "Telephone bell ringing", "Ringtone"]),
    ("chopping", ["Chopping (food)", "Chop"]),
    ("sanding", ["Sanding"]),
    ("sewing", ["Sewing machine"]),
    ("tearing", ["Tearing"]),
    ("smashing", ["Smash, crash", "Breaking", "Shatter"]),
    ("shooting", ["Gunshot, gunfire", "Machine gun"]),
    ("burning", ["Fire", "Crackle"]),
    ("storming", ["Thunderstorm", "Thunder"]),
    ("rowing", ["Rowboat, canoe, kayak"]),
    ("sailing", ["Sailboat, sailing ship"]),
    ("racing", ["Race car, auto racing"]),
    ("adult+female+singing", ["Female singing", "Singing"]),
    ("adult+male+speaking", ["Male speech, man speaking", "Speech"]),
    ("child+speaking", ["Child speech, kid speaking"]),
    ("giggling", ["Giggle", "Laughter"]),
    ("stirring", ["Stir"]),
    ("spraying", ["Spray"]),
    ("surfing", ["Waves, surf", "Ocean"]),
    ("shaving", ["Electric shaver, electric razor"]),
    ("slapping", ["Slap, smack"]),
    ("walking", ["Walk, footsteps"]),
    ("photographing", ["Camera", "Single-lens reflex camera"]),
    ("playing+music", ["Music", "Musical instrument"]),
    ("washing", ["Water tap, faucet", "Sink (filling or washing)"]),
]

# Harder: the action's words do not name the sound (no shared word with an expected label).
INDIRECT_PAIRS: list[tuple[str, list[str]]] = [
    ("bicycling", ["Bicycle", "Bicycle bell"]),
    ("driving", ["Car", "Vehicle", "Motor vehicle (road)", "Engine"]),
    ("bulldozing", ["Heavy engine (low frequency)", "Engine"]),
    ("dining", ["Cutlery, silverware", "Dishes, pots, and pans", "Chewing, mastication"]),
    ("skating", ["Skateboard"]),
    ("cooking", ["Frying (food)", "Sizzle", "Dishes, pots, and pans"]),
    ("boating", ["Boat, Water vehicle", "Motorboat, speedboat"]),
    ("landing", ["Aircraft", "Fixed-wing aircraft, airplane", "Jet engine"]),
    ("piloting", ["Aircraft", "Helicopter", "Aircraft engine"]),
    ("sleeping", ["Snoring", "Breathing"]),
    ("lecturing", ["Speech", "Narration, monologue"]),
    ("discussing", ["Conversation", "Speech"]),
    ("socializing", ["Chatter", "Conversation", "Hubbub, speech noise, speech babble"]),
    ("dancing", ["Dance music", "Music"]),
    ("punching", ["Whack, thwack", "Slap, smack", "Thump, thud"]),
    ("closing", ["Door", "Slam"]),
    ("paying", ["Cash register", "Coin (dropping)"]),
    ("handwriting", ["Writing"]),
    ("bathing", ["Bathtub (filling or washing)", "Water"]),
    ("leaking", ["Drip", "Trickle, dribble"]),
    ("swimming", ["Splash, splatter", "Water"]),
    ("eating", ["Chewing, mastication", "Biting"]),
    ("colliding", ["Smash, crash", "Bang"]),
    ("exercising", ["Pant", "Breathing"]),
    ("towing", ["Truck", "Engine"]),
    ("pedaling", ["Bicycle"]),
    ("locking", ["Keys jangling", "Clicking"]),
    ("waking", ["Alarm clock"]),
]


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", normalise_action(text)))


def check_pairs() -> list[str]:
    """Every action must be a MiT v1 category and every label an AudioSet display name;
    an indirect pair must share no word between the action and its expected labels."""
    actions = set(mit_v1_categories())
    labels = {name for _, name in audioset_labels()}
    pairs = PAIRS + INDIRECT_PAIRS
    errors = [f"action '{a}' is not a MiT v1 category" for a, _ in pairs if a not in actions]
    errors += [
        f"label '{lab}' (for {a}) is not an AudioSet label"
        for a, exp in pairs
        for lab in exp
        if lab not in labels
    ]
    errors += [
        f"indirect pair {a}: shares a word with '{lab}'"
        for a, exp in INDIRECT_PAIRS
        for lab in exp
        if _words(a) & _words(lab)
    ]
    if len({a for a, _ in pairs}) != len(pairs):
        errors.append("an action is listed twice")
    return errors


def score(similarity: np.ndarray, expected: list[set[int]]) -> dict[str, float]:
    """Ranking metrics of (A, 527) similarities against each action's expected label indices."""
    order = np.argsort(-similarity, axis=1, kind="stable")  # (A, 527)
    hit1, hit5, rr, found, recall = [], [], [], [], []
    for row, exp in zip(order, expected, strict=True):
        top5 = set(row[:5].tolist())
        first = next(r for r, lab in enumerate(row.tolist(), start=1) if lab in exp)
        hit1.append(float(row[0] in exp))
        hit5.append(float(bool(top5 & exp)))
        rr.append(1.0 / first)
        found.append(float(len(top5 & exp)))
        recall.append(len(top5 & exp) / min(len(exp), 5))
    return {
        "hit@1": float(np.mean(hit1)),
        "hit@5": float(np.mean(hit5)),
        "MRR": float(np.mean(rr)),
        "found@5": float(np.mean(found)),
        "P@5": float(np.mean(found)) / 5.0,
        "R@5": float(np.mean(recall)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--show", type=int, default=0, help="print N entries per template")
    args = parser.parse_args(argv)

    errors = check_pairs()
    if errors:
        for err in errors:
            print(f"dictionary_quality: {err}", file=sys.stderr)
        return 2
    names = [n for _, n in audioset_labels()]
    index = {n: i for i, n in enumerate(names)}
    pairs = PAIRS + INDIRECT_PAIRS
    actions = [a for a, _ in pairs]
    expected = [{index[lab] for lab in exp} for _, exp in pairs]
    groups = {
        "all": slice(0, len(pairs)),
        "direct": slice(0, len(PAIRS)),
        "indirect": slice(len(PAIRS), len(pairs)),
    }

    t0 = time.perf_counter()
    embedder = load_sentence_embedder(args.model, args.device)
    load_s = time.perf_counter() - t0
    rows: list[tuple[object, ...]] = []
    metric_names: list[str] = []
    overall: dict[str, dict[str, float]] = {}
    for preset, (action_t, audio_t) in TEMPLATE_PRESETS.items():
        console.print(f"{preset:12s} action: '{action_t}'   audio: '{audio_t}'")
        sim = embed_labels(embedder, actions, action_t, audio_t, names).similarity  # (A, 527)
        for group, sl in groups.items():
            m = score(sim[sl], expected[sl])
            metric_names = list(m)
            if group == "all":
                overall[preset] = m
            rows.append((preset, group, *m.values()))
        for a, row in list(zip(actions, sim, strict=True))[: args.show]:
            top = ", ".join(f"{names[i]} {row[i]:.2f}" for i in np.argsort(-row)[:5])
            console.print(f"  [{preset}] {a} -> {top}")
    sizes = [len(e) for e in expected]
    print_table(
        f"dictionary quality, {args.model}: {len(PAIRS)} direct + {len(INDIRECT_PAIRS)} "
        "indirect MiT v1 actions",
        ["preset", "pairs", *metric_names],
        rows,
        caption=f"expected labels per action: mean {np.mean(sizes):.2f} ({min(sizes)}-"
        f"{max(sizes)}), so found@5 is at most {np.mean([min(n, 5) for n in sizes]):.2f}",
    )

    best = max(overall, key=lambda p: (overall[p]["R@5"], overall[p]["MRR"]))
    console.print(
        f"best preset by R@5 over all pairs (tie-break MRR): {best} "
        f"(R@5 {overall[best]['R@5']:.3f}, MRR {overall[best]['MRR']:.3f}); "
        f"the configured default is '{DictionaryConfig().action_template}' / "
        f"'{DictionaryConfig().audio_template}'"
    )

    # Full build timing: all 339 MiT v1 categories with the configured default templates.
    dcfg = DictionaryConfig()
    with tempfile.TemporaryDirectory() as tmp:
        t1 = time.perf_counter()
        d = build_dictionary(
            sorted(mit_v1_categories()),
            tmp,
            embedder=embedder,
            action_template=dcfg.action_template,
            audio_template=dcfg.audio_template,
            top_k=dcfg.top_k,
        )
        build_s = time.perf_counter() - t1
    console.print(
        f"full build: {len(d.actions)} actions x {len(d.audio_labels)} labels in {build_s:.2f} s "
        f"(+ model load {load_s:.2f} s) with the default templates "
        f"'{dcfg.action_template}' / '{dcfg.audio_template}'"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
