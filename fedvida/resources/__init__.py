"""Label lists shipped as package data (AudioSet 527, ImageNet 1000, MiT v1 339)."""

from __future__ import annotations

import csv
from functools import lru_cache
from importlib import resources


def _text(name: str) -> str:
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def audioset_labels() -> tuple[tuple[str, str], ...]:
    """AudioSet's 527 labels as (mid, display_name), in index order."""
    rows = list(csv.DictReader(_text("audioset_class_labels_indices.csv").splitlines()))
    return tuple((r["mid"], r["display_name"]) for r in sorted(rows, key=lambda r: int(r["index"])))


@lru_cache(maxsize=1)
def imagenet_labels() -> tuple[str, ...]:
    """ImageNet-1k class names in index order."""
    rows = list(csv.DictReader(_text("imagenet_classes.csv").splitlines()))
    return tuple(r["name"] for r in sorted(rows, key=lambda r: int(r["index"])))


@lru_cache(maxsize=1)
def mit_v1_categories() -> tuple[str, ...]:
    """The 339 Moments-in-Time v1 action categories."""
    return tuple(line.strip() for line in _text("moments_in_time_v1_categories.txt").splitlines()
                 if line.strip())
