"""The partition plan: training clips spread over clients, audio withheld per clip and per client.

`make_plan` is deterministic for a seed and uses one random stream per decision, so changing the
withholding rates never moves a clip to another client, and withholding is *nested*: every clip
withheld at rate r is also withheld at any rate r' > r (each clip keeps one uniform draw and is
withheld when it ranks below the rate). A withholding sweep therefore compares like with like.
`summarize_plan` describes each partition (size, label skew, withheld audio).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedvida.config import PartitionConfig, WithholdConfig
from fedvida.data.mit import ClipRef, DatasetIndex, bulk_objects
from fedvida.errors import ConfigError, InputError

PLAN_FORMAT = "fedvida-plan"
PLAN_VERSION = 1
CLIP_FIELDS = ("relpath", "label", "withheld")
TEST_PARTITION = "test"
DIRICHLET_ATTEMPTS = 100

# One random stream per decision: np.random.default_rng([seed, STREAM, ...]).
_SPLIT, _RATES, _TRAIN_WITHHOLD, _TEST_WITHHOLD, _NO_AUDIO = range(5)


@dataclass(slots=True)
class PlannedClip:
    """A clip in the plan; `withheld` means the experiment hides its audio."""

    relpath: str
    label: int
    withheld: bool


@dataclass
class Plan:
    """Which client holds which training clips, the server's test set, and what is withheld."""

    dataset_root: str
    classes: list[str]
    clients: list[list[PlannedClip]]
    test: list[PlannedClip]
    client_rates: list[float]
    seed: int
    config_hash: str

    @property
    def num_clients(self) -> int:
        return len(self.clients)

    def partition(self, pid: int | str) -> list[PlannedClip]:
        """Clips of client `pid` (an int or its string) or of the test set (``"test"``)."""
        if pid == TEST_PARTITION:
            return self.test
        try:
            k = int(pid)
        except ValueError:
            raise InputError(f"partition id {pid!r}: expected 0..{self.num_clients - 1} "
                             f"or '{TEST_PARTITION}'") from None
        if not 0 <= k < self.num_clients:
            raise InputError(f"partition id {pid!r}: the plan has {self.num_clients} clients")
        return self.clients[k]

    @bulk_objects
    def save(self, path: Path) -> None:
        """Write the plan as JSON (clips as ``[relpath, label, withheld]`` rows)."""
        def rows(clips: list[PlannedClip]) -> list[list[Any]]:
            return [[c.relpath, c.label, int(c.withheld)] for c in clips]

        doc = {
            "format": PLAN_FORMAT,
            "version": PLAN_VERSION,
            "config_hash": self.config_hash,
            "seed": self.seed,
            "dataset_root": self.dataset_root,
            "classes": self.classes,
            "client_rates": self.client_rates,
            "clip_fields": list(CLIP_FIELDS),
            "clients": [rows(c) for c in self.clients],
            "test": rows(self.test),
        }
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(doc, separators=(",", ":")))
        tmp.replace(path)

    @classmethod
    @bulk_objects
    def load(cls, path: Path) -> Plan:
        """Read a plan written by `save`.

        Raises
        ------
        InputError
            Missing file, not JSON, another format or version, or inconsistent content.
        """
        path = Path(path)
        if not path.is_file():
            raise InputError(f"plan not found: {path} (run `fedvida partition` first)")
        try:
            doc = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"plan {path}: not valid JSON ({exc})") from None
        if not isinstance(doc, dict) or doc.get("format") != PLAN_FORMAT:
            raise InputError(f"plan {path}: not a fedvida plan")
        if doc.get("version") != PLAN_VERSION:
            raise InputError(f"plan {path}: format version {doc.get('version')!r}, "
                             f"this fedvida reads {PLAN_VERSION}; re-run `fedvida partition`")
        try:
            def clips(rows: list[list[Any]]) -> list[PlannedClip]:
                return [PlannedClip(str(r[0]), int(r[1]), bool(r[2])) for r in rows]

            plan = cls(
                dataset_root=str(doc["dataset_root"]),
                classes=[str(c) for c in doc["classes"]],
                clients=[clips(c) for c in doc["clients"]],
                test=clips(doc["test"]),
                client_rates=[float(r) for r in doc["client_rates"]],
                seed=int(doc["seed"]),
                config_hash=str(doc["config_hash"]),
            )
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise InputError(f"plan {path}: malformed ({type(exc).__name__}: {exc})") from None
        if len(plan.client_rates) != len(plan.clients):
            raise InputError(f"plan {path}: {len(plan.clients)} clients but "
                             f"{len(plan.client_rates)} client_rates")
        return plan


def plan_hash(index: DatasetIndex, cfg: PartitionConfig) -> str:
    """Short SHA-256 of the partition config (without the output path) and the indexed clips."""
    h = hashlib.sha256()
    h.update(json.dumps(cfg.model_dump(mode="json", exclude={"plan"}), sort_keys=True).encode())
    h.update(json.dumps([str(index.root), index.classes]).encode())
    for clip in [*index.train, *index.test]:
        h.update(f"{clip.split}\0{clip.relpath}\0{clip.label}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:16]


def split_iid(n_items: int, n_clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffle and cut into `n_clients` parts whose sizes differ by at most one."""
    return [np.sort(p) for p in np.array_split(rng.permutation(n_items), n_clients)]


def _dirichlet_once(labels: np.ndarray, n_clients: int, alpha: float, balance: bool,
                    rng: np.random.Generator) -> list[list[int]]:
    parts: list[list[int]] = [[] for _ in range(n_clients)]
    sizes = np.zeros(n_clients, dtype=np.int64)
    mean_size = len(labels) / n_clients
    order = np.argsort(labels, kind="stable")  # the clips of each class, in index order
    starts = np.searchsorted(labels[order], np.unique(labels))
    members = dict(zip(np.unique(labels).tolist(),
                       np.split(order, starts[1:]), strict=True))
    for c in rng.permutation(np.unique(labels)):
        idx = rng.permutation(members[int(c)])
        p = rng.dirichlet(np.full(n_clients, alpha))
        if balance:  # NIID-Bench: clients already above the mean size get no share of this class
            p = p * (sizes < mean_size)
        if not np.isfinite(p).all() or p.sum() <= 0:
            p = np.eye(n_clients)[rng.integers(n_clients)]
        cuts = (np.cumsum(p / p.sum()) * len(idx)).astype(int)[:-1]
        bounds = [0, *cuts.tolist(), len(idx)]
        chunks = idx.tolist()
        for k in range(n_clients):
            if bounds[k + 1] > bounds[k]:
                parts[k].extend(chunks[bounds[k]:bounds[k + 1]])
        sizes += np.diff(bounds)
    return parts


def _rebalance(parts: list[list[int]], labels: np.ndarray, min_size: int,
               rng: np.random.Generator) -> None:
    """Move clips from the largest clients to those below `min_size`, in place.

    A receiving client takes, where it can, a clip of its own dominant class, so the label skew
    that the Dirichlet draw created is kept as far as possible.
    """
    sizes = np.array([len(p) for p in parts])
    while True:
        needy = int(np.argmin(sizes))
        if sizes[needy] >= min_size:
            return
        donor = int(np.argmax(sizes))
        own = labels[parts[needy]] if parts[needy] else np.array([], dtype=labels.dtype)
        donor_labels = labels[parts[donor]]
        wanted = np.bincount(own).argmax() if own.size else None
        pool = np.flatnonzero(donor_labels == wanted) if wanted is not None else np.array([])
        if pool.size == 0:
            pool = np.arange(len(parts[donor]))
        pick = int(pool[rng.integers(pool.size)])
        parts[needy].append(parts[donor].pop(pick))
        sizes[needy] += 1
        sizes[donor] -= 1


def split_dirichlet(labels: np.ndarray, n_clients: int, alpha: float, min_size: int,
                    balance: bool, rng: np.random.Generator) -> list[np.ndarray]:
    """The per-class Dirichlet label split (Hsu et al. 2019; NIID-Bench; FedMultimodal).

    For every class, proportions ``p ~ Dir(alpha * 1_N)`` cut its shuffled clips over the
    clients. Draws are repeated (up to `DIRICHLET_ATTEMPTS`) until every client holds at least
    `min_size` clips; if none succeeds, the best draw is rebalanced by moving clips.
    """
    best: list[list[int]] | None = None
    for _ in range(DIRICHLET_ATTEMPTS):
        parts = _dirichlet_once(labels, n_clients, alpha, balance, rng)
        if best is None or min(map(len, parts)) > min(map(len, best)):
            best = parts
        if min(map(len, best)) >= min_size:
            break
    assert best is not None
    _rebalance(best, labels, min_size, rng)
    return [np.sort(np.array(p, dtype=np.int64)) for p in best]


def client_rates(n_clients: int, cfg: WithholdConfig, seed: int) -> list[float]:
    """The withholding rate of every client (``no_audio_client_share`` of them get 1.0)."""
    rng = np.random.default_rng([seed, _RATES])
    if cfg.client_dist == "uniform":
        rates = rng.uniform(cfg.client_low, cfg.client_high, n_clients)
    elif cfg.client_dist == "beta":
        rates = rng.beta(cfg.client_beta_a, cfg.client_beta_b, n_clients)
    else:
        rates = np.full(n_clients, cfg.clip_rate)
    n_silent = int(round(cfg.no_audio_client_share * n_clients))
    rates[np.random.default_rng([seed, _NO_AUDIO]).permutation(n_clients)[:n_silent]] = 1.0
    return [float(r) for r in rates]


def withhold_mask(labels: np.ndarray, rate: float, exact: bool,
                  rng: np.random.Generator) -> np.ndarray:
    """Which of these clips lose their audio.

    ``exact=False``: each clip independently with probability `rate`. ``exact=True``: exactly
    ``round(rate * n)`` clips, spread over the labels in proportion (stratified). Both keep one
    uniform draw per clip, so a higher rate withholds a superset.
    """
    n = len(labels)
    u = rng.random(n)
    if not exact:
        return u < rate
    key = np.empty(n)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        ranks = np.argsort(np.argsort(u[members]))
        key[members] = (ranks + u[members]) / len(members)  # stratified position in [0, 1)
    mask = np.zeros(n, dtype=bool)
    mask[np.argsort(key, kind="stable")[: int(round(rate * n))]] = True
    return mask


def _planned(clips: list[ClipRef], mask: np.ndarray) -> list[PlannedClip]:
    return [PlannedClip(c.relpath, c.label, w)
            for c, w in zip(clips, mask.tolist(), strict=True)]


@bulk_objects
def make_plan(index: DatasetIndex, cfg: PartitionConfig) -> Plan:
    """Partition the training clips over clients and decide the withheld audio.

    Parameters
    ----------
    index
        The dataset (`load_dataset`); its test clips become the server's evaluation set.
    cfg
        The `partition` config section.

    Raises
    ------
    ConfigError
        When the dataset is too small for ``num_clients * min_clips_per_client``.
    """
    n, need = cfg.num_clients, cfg.num_clients * cfg.min_clips_per_client
    if len(index.train) < need:
        raise ConfigError(
            f"partition.num_clients: {n} clients x partition.min_clips_per_client="
            f"{cfg.min_clips_per_client} needs {need} training clips, the dataset has "
            f"{len(index.train)}"
        )
    train = sorted(index.train, key=lambda c: c.relpath)
    labels = np.array([c.label for c in train], dtype=np.int64)
    rng = np.random.default_rng([cfg.seed, _SPLIT])
    if cfg.scheme == "iid":
        parts = split_iid(len(train), n, rng)
    else:
        parts = split_dirichlet(labels, n, cfg.alpha, cfg.min_clips_per_client, cfg.balance, rng)
    w = cfg.withhold
    rates = client_rates(n, w, cfg.seed)
    exact = w.client_dist != "none"
    clients = []
    for k, part in enumerate(parts):
        clips = [train[i] for i in part.tolist()]
        rate_rng = np.random.default_rng([cfg.seed, _TRAIN_WITHHOLD, k])
        mask = withhold_mask(labels[part], rates[k], exact, rate_rng)
        clients.append(_planned(clips, mask))
    test = sorted(index.test, key=lambda c: c.relpath)
    test_labels = np.array([c.label for c in test], dtype=np.int64)
    test_mask = withhold_mask(test_labels, w.test_rate, True,
                              np.random.default_rng([cfg.seed, _TEST_WITHHOLD]))
    return Plan(
        dataset_root=str(index.root),
        classes=list(index.classes),
        clients=clients,
        test=_planned(test, test_mask),
        client_rates=rates,
        seed=cfg.seed,
        config_hash=plan_hash(index, cfg),
    )


@dataclass(frozen=True)
class PartitionSummary:
    """What one partition (a client or the test set) holds."""

    name: str               # client index as a string, or "test"
    clips: int
    classes: int            # distinct labels present
    entropy_bits: float     # label entropy; log2(#classes of the plan) means perfectly even
    dominant: str           # the most common class ("" when empty)
    dominant_share: float   # its share of the clips
    withheld: int           # clips whose audio the experiment withholds
    rate: float | None      # planned withholding rate (None for the test set)

    @property
    def withheld_share(self) -> float:
        return self.withheld / self.clips if self.clips else 0.0


def label_entropy(labels: list[int]) -> float:
    """Shannon entropy (bits) of a label list."""
    counts = np.array(list(Counter(labels).values()), dtype=np.float64)
    if counts.size == 0:
        return 0.0
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum() + 0.0)


def _summary(name: str, clips: list[PlannedClip], classes: list[str],
             rate: float | None) -> PartitionSummary:
    labels = [c.label for c in clips]
    top = Counter(labels).most_common(1)
    return PartitionSummary(
        name=name,
        clips=len(clips),
        classes=len(set(labels)),
        entropy_bits=label_entropy(labels),
        dominant=classes[top[0][0]] if top else "",
        dominant_share=top[0][1] / len(clips) if top else 0.0,
        withheld=sum(c.withheld for c in clips),
        rate=rate,
    )


def summarize_plan(plan: Plan) -> list[PartitionSummary]:
    """One summary per client, in order, then one for the test set (name ``"test"``)."""
    out = [_summary(str(k), clips, plan.classes, plan.client_rates[k])
           for k, clips in enumerate(plan.clients)]
    out.append(_summary(TEST_PARTITION, plan.test, plan.classes, None))
    return out


def skew_stats(plan: Plan) -> dict[str, float]:
    """Plan-level label skew: mean client label entropy (bits and as a share of the maximum)
    and mean dominant-class share; plus the overall training withheld share."""
    clients = summarize_plan(plan)[:-1]
    max_bits = math.log2(len(plan.classes)) if len(plan.classes) > 1 else 1.0
    total = sum(s.clips for s in clients)
    return {
        "mean_entropy_bits": float(np.mean([s.entropy_bits for s in clients])),
        "mean_entropy_share": float(np.mean([s.entropy_bits for s in clients])) / max_bits,
        "mean_dominant_share": float(np.mean([s.dominant_share for s in clients])),
        "train_withheld_share": sum(s.withheld for s in clients) / total if total else 0.0,
    }
