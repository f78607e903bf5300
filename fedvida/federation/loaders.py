"""What a process of the federation reads from disk, memoised: plan, features, dictionary.

No Flower import: the node's plain code (`fedvida.federation.node`) and the server's evaluator
(`fedvida.federation.server`) both load through here. A node reads its cached features (never the
raw videos, see docs/features.md); the server reads the plan's ``"test"`` partition the same way.
A Ray actor serves many virtual clients in turn, so each process keeps a few partitions, one plan
and a few train/validation splits in small least-recently-used caches.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from fedvida.config import Config

if TYPE_CHECKING:
    from fedvida.data.partition import Plan
    from fedvida.features.cache import FeatureSet
    from fedvida.semantics.dictionary import SemanticDictionary

FEATURE_CACHE_SIZE = 12  # partitions kept per process (~16 MB each on the demo; bounded for 1000)


class Lru:
    """A small thread-safe least-recently-used map (per-process caches of a Ray actor)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        """The value (marked as just used), or None."""
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def pop(self, key: Any) -> Any:
        """Take the value out of the cache (None when absent)."""
        with self._lock:
            return self._items.pop(key, None)

    def put(self, key: Any, value: Any) -> None:
        """Store the value, dropping the least recently used beyond `size`."""
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


_FEATURES = Lru(FEATURE_CACHE_SIZE)  # (plan, cache, partition) -> (Plan, FeatureSet)
_PLANS = Lru(1)  # (plan file, mtime) -> Plan: a 1000-client plan is slow to parse
_SPLITS = Lru(FEATURE_CACHE_SIZE)  # (FeatureSet id, split settings) -> (ref, train, val)


def local_features(cfg: Config, partition: int | str) -> tuple[Plan, FeatureSet]:
    """The plan and one partition's cached features, memoised per process (a small LRU).

    Parameters
    ----------
    cfg
        The (node-localized) config: ``partition.plan`` and ``extract.cache_dir`` are read.
    partition
        A client index of the plan, or ``"test"`` (the server's evaluation split).

    Returns
    -------
    tuple
        The `Plan` and the partition's `FeatureSet` (read-only arrays; share them, never edit).

    Raises
    ------
    InputError
        The plan or the feature cache is missing or does not match (from `Plan.load` and
        `fedvida.features.cache.load_features`, naming the file).
    """
    from fedvida.data.partition import Plan
    from fedvida.features.cache import load_features

    plan_path = Path(cfg.partition.plan)
    stamp = str(plan_path.stat().st_mtime_ns) if plan_path.is_file() else "missing"
    key = (str(plan_path.resolve()), stamp, str(Path(cfg.extract.cache_dir).resolve()),
           cfg.section_hash("extract", "partition"), str(partition))
    cached = _FEATURES.get(key)
    if cached is not None:
        return cast("tuple[Plan, FeatureSet]", cached)
    plan = _PLANS.get(key[:2])
    if plan is None:  # one plan per (file, mtime): a 1000-client plan is slow to parse
        plan = Plan.load(plan_path)
        _PLANS.put(key[:2], plan)
    data = load_features(cfg, plan, partition)
    _FEATURES.put(key, (plan, data))
    return plan, data


def train_and_validation(cfg: Config, partition: int) -> tuple[Plan, FeatureSet, FeatureSet]:
    """A client's training clips split into (train, validation), as the centralised reference
    splits them (`fedvida.training.data.split_validation`, seeded by ``partition.seed``)."""
    from fedvida.training.data import split_validation

    plan, data = local_features(cfg, partition)
    key = ("split", id(data), cfg.train.val_fraction, cfg.partition.seed)
    cached = _SPLITS.get(key)
    if cached is None or cached[0]() is not data:
        train, val = split_validation(data, cfg.train.val_fraction, cfg.partition.seed,
                                      partition)
        cached = (weakref.ref(data), train, val)
        _SPLITS.put(key, cached)
    return plan, cached[1], cached[2]


def dictionary_for(cfg: Config, digest: str) -> SemanticDictionary | None:
    """The dictionary at ``dictionary.out``, verified against the server's digest (``""``: the
    run uses none). Raises `fedvida.semantics.dictionary`'s error on a digest mismatch."""
    if not digest:
        return None
    from fedvida.semantics.dictionary import SemanticDictionary

    return SemanticDictionary.load(Path(cfg.dictionary.out), expected_digest=digest)
