"""Partition plans: completeness, minimum sizes, label skew, withholding, determinism, files."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from fedvida.cli import main
from fedvida.config import PartitionConfig, WithholdConfig
from fedvida.data.mit import ClipRef, DatasetIndex
from fedvida.data.partition import Plan, make_plan, skew_stats, summarize_plan
from fedvida.errors import ConfigError, InputError, ProblemLog


def make_index(classes: int = 10, per_class: int = 40, test_per_class: int = 10,
               uneven: bool = False) -> DatasetIndex:
    """An index of `classes` x `per_class` training clips (fewer for later classes if uneven)."""
    names = [f"class{c:02d}" for c in range(classes)]
    train, test = [], []
    for c, name in enumerate(names):
        n = max(2, per_class - 3 * c) if uneven else per_class
        train += [ClipRef(f"training/{name}/c{i:04d}.mp4", name, c, "training") for i in range(n)]
        test += [ClipRef(f"validation/{name}/v{i:04d}.mp4", name, c, "validation")
                 for i in range(test_per_class)]
    return DatasetIndex(Path("data/mit"), "v1", names, train, test, ProblemLog())


def relpaths(plan: Plan) -> list[list[str]]:
    return [[c.relpath for c in clips] for clips in plan.clients]


@pytest.mark.parametrize("scheme", ["iid", "dirichlet"])
def test_partitions_are_disjoint_and_complete(scheme: str) -> None:
    index = make_index(uneven=True)
    plan = make_plan(index, PartitionConfig(num_clients=7, scheme=scheme, alpha=0.3))

    every = [r for client in relpaths(plan) for r in client]
    assert len(every) == len(set(every)) == len(index.train)
    assert set(every) == {c.relpath for c in index.train}
    labels = {c.relpath: c.label for c in index.train}
    assert all(c.label == labels[c.relpath] for clips in plan.clients for c in clips)
    assert [c.relpath for c in plan.test] == sorted(c.relpath for c in index.test)
    assert plan.classes == index.classes and plan.num_clients == 7
    if scheme == "iid":
        sizes = [len(c) for c in plan.clients]
        assert max(sizes) - min(sizes) <= 1


def test_min_clips_per_client_holds_even_when_draws_fail() -> None:
    index = make_index(classes=6, per_class=20)  # 120 clips
    cfg = PartitionConfig(num_clients=20, scheme="dirichlet", alpha=0.05,
                          min_clips_per_client=5, balance=False)
    plan = make_plan(index, cfg)
    assert min(len(c) for c in plan.clients) >= 5
    assert sum(len(c) for c in plan.clients) == 120

    with pytest.raises(ConfigError, match=r"partition\.num_clients.*min_clips_per_client"):
        make_plan(index, PartitionConfig(num_clients=30, min_clips_per_client=5))


def test_small_alpha_is_more_skewed_than_iid() -> None:
    index = make_index()
    iid = [skew_stats(make_plan(index, PartitionConfig(scheme="iid", seed=s)))
           for s in range(3)]
    dirichlet = [skew_stats(make_plan(index, PartitionConfig(alpha=0.1, seed=s)))
                 for s in range(3)]

    iid_h = np.mean([s["mean_entropy_share"] for s in iid])
    dir_h = np.mean([s["mean_entropy_share"] for s in dirichlet])
    iid_dom = np.mean([s["mean_dominant_share"] for s in iid])
    dir_dom = np.mean([s["mean_dominant_share"] for s in dirichlet])
    assert iid_h > 0.85 and dir_h < 0.6 * iid_h
    assert dir_dom > 2 * iid_dom


def test_per_clip_withholding_rate() -> None:
    index = make_index(classes=10, per_class=200)
    w = WithholdConfig(clip_rate=0.3, client_dist="none", test_rate=0.25)
    plan = make_plan(index, PartitionConfig(num_clients=5, scheme="iid", withhold=w))

    withheld = [c.withheld for clips in plan.clients for c in clips]
    assert abs(np.mean(withheld) - 0.3) < 0.03  # 2000 Bernoulli draws: sd ~0.01
    assert plan.client_rates == [0.3] * 5
    assert len({sum(c.withheld for c in clips) for clips in plan.clients}) > 1  # not exact
    assert sum(c.withheld for c in plan.test) == 25  # exact at test time ...
    per_class = Counter(c.label for c in plan.test if c.withheld)
    assert all(abs(per_class[k] - 2.5) <= 1 for k in range(10))  # ... and stratified


@pytest.mark.parametrize("dist", ["fixed", "uniform", "beta"])
def test_per_client_withholding_rates(dist: str) -> None:
    index = make_index()
    w = WithholdConfig(clip_rate=0.4, client_dist=dist, client_low=0.2, client_high=0.7,
                       client_beta_a=2.0, client_beta_b=5.0)
    plan = make_plan(index, PartitionConfig(num_clients=8, withhold=w))

    for rate, clips in zip(plan.client_rates, plan.clients, strict=True):
        assert sum(c.withheld for c in clips) == round(rate * len(clips))
    rates = np.array(plan.client_rates)
    if dist == "fixed":
        assert np.all(rates == 0.4)
    elif dist == "uniform":
        assert np.all((rates >= 0.2) & (rates <= 0.7)) and rates.std() > 0.05
    else:
        assert np.all((rates > 0) & (rates < 1)) and abs(rates.mean() - 2 / 7) < 0.15


def test_no_audio_clients() -> None:
    index = make_index()
    w = WithholdConfig(clip_rate=0.2, no_audio_client_share=0.3, test_rate=0.0)
    plan = make_plan(index, PartitionConfig(num_clients=10, withhold=w))

    silent = [k for k, r in enumerate(plan.client_rates) if r == 1.0]
    assert len(silent) == 3
    assert all(all(c.withheld for c in plan.clients[k]) for k in silent)
    others = [c.withheld for k, clips in enumerate(plan.clients) if k not in silent
              for c in clips]
    assert 0.05 < np.mean(others) < 0.4
    assert not any(c.withheld for c in plan.test)


def test_seeded_determinism_and_nested_withholding(tmp_path: Path) -> None:
    index = make_index(uneven=True)
    a = make_plan(index, PartitionConfig(seed=4))
    b = make_plan(index, PartitionConfig(seed=4))
    a.save(tmp_path / "a.json")
    b.save(tmp_path / "b.json")
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    assert relpaths(make_plan(index, PartitionConfig(seed=5))) != relpaths(a)

    low = make_plan(index, PartitionConfig(seed=4, withhold=WithholdConfig(clip_rate=0.3,
                                                                           test_rate=0.2)))
    high = make_plan(index, PartitionConfig(seed=4, withhold=WithholdConfig(clip_rate=0.6,
                                                                            test_rate=0.7)))
    assert relpaths(low) == relpaths(high) == relpaths(a)  # rates never move clips
    assert low.config_hash != high.config_hash
    for part in range(low.num_clients):
        for lo, hi in zip(low.partition(part), high.partition(str(part)), strict=True):
            assert hi.withheld or not lo.withheld  # withheld at 0.3 => withheld at 0.6
    assert all(hi.withheld or not lo.withheld
               for lo, hi in zip(low.partition("test"), high.test, strict=True))


def test_plan_file_roundtrip_and_errors(tmp_path: Path) -> None:
    plan = make_plan(make_index(), PartitionConfig(num_clients=4))
    path = tmp_path / "sub" / "plan.json"
    plan.save(path)

    assert Plan.load(path) == plan
    doc = json.loads(path.read_text())
    assert doc["format"] == "fedvida-plan" and doc["version"] == 1
    assert doc["config_hash"] == plan.config_hash and len(plan.config_hash) == 16

    with pytest.raises(InputError, match="nothere.json"):
        Plan.load(tmp_path / "nothere.json")
    doc["version"] = 99
    path.write_text(json.dumps(doc))
    with pytest.raises(InputError, match="version 99"):
        Plan.load(path)
    path.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        Plan.load(path)
    with pytest.raises(InputError, match="4 clients"):
        plan.partition(7)


def test_summaries_count_what_the_plan_holds() -> None:
    index = make_index(classes=4, per_class=10, test_per_class=5)
    plan = make_plan(index, PartitionConfig(num_clients=3, alpha=0.2))
    summaries = summarize_plan(plan)

    assert [s.name for s in summaries] == ["0", "1", "2", "test"]
    assert sum(s.clips for s in summaries[:-1]) == 40 and summaries[-1].clips == 20
    for s, clips in zip(summaries, [*plan.clients, plan.test], strict=True):
        top, count = Counter(c.label for c in clips).most_common(1)[0]
        assert s.withheld == sum(c.withheld for c in clips)
        assert s.dominant_share == pytest.approx(count / len(clips))
        assert 0.0 <= s.entropy_bits <= 2.0
    assert summaries[-1].entropy_bits == pytest.approx(2.0)  # the test set is balanced


@pytest.mark.parametrize("override, field", [
    ("partition.alpha=-1", "partition.alpha"),
    ("partition.scheme=random", "partition.scheme"),
    ("partition.withhold.test_rate=1.5", "partition.withhold.test_rate"),
    ("partition.num_clients=0", "partition.num_clients"),
])
def test_config_errors_name_the_field(override: str, field: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["partition", "--set", override]) == 2
    err = capsys.readouterr().err
    assert field in err and err.count("\n") == 1


def test_partition_show_prints_a_saved_plan(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    plan = make_plan(make_index(classes=3, per_class=6, test_per_class=2),
                     PartitionConfig(num_clients=2, scheme="iid"))
    plan.save(tmp_path / "plan.json")

    assert main(["partition", "--show", "--set", f"partition.plan={tmp_path / 'plan.json'}"]) == 0
    out = capsys.readouterr().out
    assert plan.config_hash in out
    assert re.search(r"│ 1 +│ +9 │", out) and re.search(r"│ test +│ +6 │", out)
