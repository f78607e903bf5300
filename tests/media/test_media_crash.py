"""Torture set, whole stages: a worker that really dies (SIGABRT) costs one clip, not the run;
`data inspect` bins frame rates and reports rotation; 7.1 audio goes through extraction."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from media_helpers import tone
from media_torture import set_mp4_rotation, write_av

from fedvida.config import load_config
from fedvida.data.inspect import fps_bin, inspect_clips
from fedvida.data.isolate import CRASH_ENV, Crashed, IsolatedPool, WorkerStartError
from fedvida.data.mit import ClipRef, DatasetIndex
from fedvida.data.partition import Plan, PlannedClip
from fedvida.errors import ProblemLog
from fedvida.features.cache import open_stores
from fedvida.features.extract import FrozenEncoders, extract_partition


def test_pool_survives_a_real_abort_and_keeps_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CRASH_ENV, "boom.mp4")
    pool = IsolatedPool(os.path.basename, 2)  # a stdlib task: the workers start fast
    tasks = [(f"/x/{name}.mp4",) for name in ["a", "b", "boom", "c", "d"]]
    out = list(pool.imap(tasks))
    assert out[:2] == ["a.mp4", "b.mp4"] and out[3:] == ["c.mp4", "d.mp4"]
    assert isinstance(out[2], Crashed) and "SIGABRT" in out[2].describe()


def test_pool_keeps_workers_between_calls_and_drops_them_when_abandoned() -> None:
    pool = IsolatedPool(os.getpid, 2)
    first = set(pool.imap([()] * 6))
    second = set(pool.imap([()] * 6))
    assert len(first) == 2 and second == first and os.getpid() not in first
    unfinished = pool.imap([()] * 6)
    next(unfinished)
    unfinished.close()  # abandoned: its workers may hold results nobody reads -> closed
    third = set(pool.imap([()] * 2))
    pool.close()
    assert third.isdisjoint(first)


def test_a_worker_dying_at_start_is_an_error_not_a_crashed_clip() -> None:
    pool = IsolatedPool(os.path.basename, 1, initializer=os.abort)  # dies before it is ready
    with pytest.raises(WorkerStartError, match="died while starting .SIGABRT."):
        list(pool.imap([("/x/a.mp4",)]))


@pytest.fixture(scope="module")
def crash_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("crash")
    d = root / "t"
    write_av(d / "a/one.mp4", audio=tone(440, 3, 48000))
    write_av(d / "a/boom.mp4", audio=tone(440, 3, 48000))
    write_av(d / "b/surround71.mp4", audio=tone(660, 3, 48000), layout="7.1")
    write_av(d / "b/two.mp4", audio=tone(880, 3, 48000))
    return root


RELS = ["t/a/one.mp4", "t/a/boom.mp4", "t/b/surround71.mp4", "t/b/two.mp4"]


@pytest.mark.slow
def test_extraction_records_a_crashed_clip_and_keeps_the_rest(
        crash_set: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CRASH_ENV, "boom.mp4")  # the worker on that clip calls os.abort()
    clips = [PlannedClip(r, int("/b/" in r), False) for r in RELS]
    plan = Plan(str(crash_set), ["a", "b"], [clips], clips[:1], [0.2], 0, "test")
    cfg = load_config(None, [f"extract.cache_dir={tmp_path}", "extract.image_size=64",
                             "extract.flow_size=32", "extract.batch_clips=1",
                             "extract.torch_threads=1", "extract.workers=2"])
    models = FrozenEncoders(cfg.extract)
    problems = ProblemLog()
    stats = extract_partition(cfg, plan, 0, models, problems=problems)
    models.close()
    assert stats.failed == {"crashed": 1} and stats.audio_present == 3
    crashed = [p for p in problems.problems if p.reason == "crashed"]
    assert len(crashed) == 1 and crashed[0].path == "t/a/boom.mp4"
    assert str(crash_set / "t/a/boom.mp4") in crashed[0].detail
    assert "SIGABRT" in crashed[0].detail
    assert all(p.path and p.reason and p.detail for p in problems.problems)
    vstore, astore = open_stores(cfg.extract)
    assert len(vstore.index()) == 4 and len(astore.index()) == 4  # all recorded, crash included
    # the crash is in the store: a rerun (even with the hook gone) recomputes nothing
    monkeypatch.delenv(CRASH_ENV)
    again = extract_partition(cfg, plan, 0, models)
    models.close()
    assert again.cached == 4 and again.computed == 0


def test_inspect_records_a_crash_and_probes_the_rest(crash_set: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CRASH_ENV, "boom.mp4")
    refs = [ClipRef(r, r.split("/")[1], int("/b/" in r), "training") for r in RELS]
    index = DatasetIndex(crash_set, "v1", ["a", "b"], refs, [])
    report = inspect_clips(index, refs, -60.0, workers=2)
    assert report.probed == 4 and len(report.facts) == 3
    assert [(p.path, p.reason) for p in report.problems.problems] == [("t/a/boom.mp4",
                                                                        "crashed")]
    assert str(crash_set / "t/a/boom.mp4") in report.problems.problems[0].detail
    surround = next(f for f in report.facts if f.clip.relpath == "t/b/surround71.mp4")
    assert surround.audio_ok and not surround.silent  # 7.1 AAC decodes (it crashed before)


def test_inspect_bins_frame_rates_and_reports_rotation(tmp_path: Path) -> None:
    assert [fps_bin(r) for r in (29.97002997, 29.99, 30.0, 23.976, 17.3, 0.0)] == [
        "29.970", "30.000", "30.000", "23.976", "17", "unknown"]
    assert fps_bin(27.3, variable=True) == "variable"
    d = tmp_path / "t" / "a"
    write_av(d / "cfr.mp4", fps=25, seconds=1.0)
    write_av(d / "phone.mp4", fps=30, seconds=1.0)
    set_mp4_rotation(d / "phone.mp4", 90)
    (d / "empty.mp4").write_bytes(b"")
    refs = [ClipRef(f"t/a/{n}", "a", 0, "training") for n in ("cfr.mp4", "phone.mp4",
                                                               "empty.mp4")]
    index = DatasetIndex(tmp_path, "v1", ["a"], refs, [])
    report = inspect_clips(index, refs, -60.0, workers=0)
    assert report.fps_counts() == [("25.000", 1), ("30.000", 1)]
    assert dict(report.counts("rotation")) == {"0": 1, "270": 1}
    (problem,) = report.problems.problems
    assert (problem.path, problem.reason, problem.detail) == ("t/a/empty.mp4", "unreadable",
                                                              "empty file (0 bytes)")

