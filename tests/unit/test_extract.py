"""Extraction into the cache, `load_features`, invalidation, resume after SIGKILL, bad inputs."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import yaml
from media_helpers import tone, write_clip, write_tiny_hf_models, write_wav

from fedvida.config import Config, load_config
from fedvida.data.partition import Plan, PlannedClip
from fedvida.errors import FedvidaError, ProblemLog
from fedvida.features.cache import ensure_pack, load_features, open_stores
from fedvida.features.extract import FrozenEncoders, extract_partition

pytestmark = pytest.mark.slow
N_CLIPS = 11
BAD = {"t/b/missing.mp4": "missing", "t/b/short.mp4": "too_short",
       "t/b/garbage.mp4": "unreadable", "t/b/truncated.mp4": "truncated|unreadable"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """7 usable clips (various fps, layouts, rates, missing audio) and 4 bad ones."""
    root = tmp_path_factory.mktemp("ds")
    d = root / "t"
    write_clip(d / "a/mono48k.mp4", fps=30, audio=tone(440, 3, 48000))
    write_clip(d / "b/stereo44k.mp4", fps=25, seconds=2.5, audio=tone(660, 2.5, 44100),
               audio_rate=44100, layout="stereo")
    write_clip(d / "a/surround.mp4", fps=Fraction(30000, 1001), seconds=3.2,
               audio=tone(880, 3.2, 48000), layout="5.1")
    write_clip(d / "b/nostream.mp4", fps=24)
    write_clip(d / "a/silent.mp4", audio=np.zeros(3 * 48000, np.float32))
    write_clip(d / "b/sidecar11k.mp4")
    write_wav(d / "b/sidecar11k.wav", tone(500, 3, 11025), 11025)
    write_clip(d / "a/emptywav.mp4")
    write_wav(d / "a/emptywav.wav", np.zeros(0, np.float32), 16000)
    write_clip(d / "b/short.mp4", seconds=0.5, audio=tone(440, 0.5, 48000))
    (d / "b/garbage.mp4").write_bytes(b"\x00not a video" * 200)
    full = write_clip(root / "full.mp4", audio=tone(440, 3, 48000)).read_bytes()
    (d / "b/truncated.mp4").write_bytes(full[: len(full) // 3])
    return root


def _plan(root: Path, withheld: frozenset[str] = frozenset({"t/a/mono48k.mp4",
                                                            "t/b/nostream.mp4"})) -> Plan:
    good = ["t/a/mono48k.mp4", "t/b/stereo44k.mp4", "t/a/surround.mp4", "t/b/nostream.mp4",
            "t/a/silent.mp4", "t/b/sidecar11k.mp4", "t/a/emptywav.mp4"]
    order = [good[0], "t/b/missing.mp4", *good[1:3], "t/b/short.mp4", *good[3:5],
             "t/b/garbage.mp4", good[5], "t/b/truncated.mp4", good[6]]
    clips = [PlannedClip(p, int("/b/" in p), p in withheld) for p in order]
    return Plan(str(root), ["a", "b"], [clips], clips[:3], [0.2], 0, "test")


def _cfg(cache: Path, *overrides: str) -> Config:
    # min_duration 1.0: short clips are skipped only when asked (the default keeps them)
    base = [f"extract.cache_dir={cache}", "extract.image_size=64", "extract.flow_size=32",
            "extract.batch_clips=2", "extract.torch_threads=1", "extract.min_duration=1.0"]
    return load_config(None, [*base, *overrides])


@pytest.fixture(scope="module")
def models() -> FrozenEncoders:
    return FrozenEncoders(_cfg(Path("unused")).extract)


@pytest.fixture(scope="module")
def extracted(dataset: Path, models: FrozenEncoders, tmp_path_factory: pytest.TempPathFactory
              ) -> tuple[Config, Plan, object, ProblemLog]:
    cfg = _cfg(tmp_path_factory.mktemp("cache"))
    plan = _plan(dataset)
    problems = ProblemLog()
    stats = extract_partition(cfg, plan, 0, models, problems=problems)
    return cfg, plan, stats, problems


def test_extraction_records_every_bad_input(extracted: tuple) -> None:
    cfg, plan, stats, problems = extracted
    assert stats.total == N_CLIPS and stats.video_computed == N_CLIPS
    assert sum(stats.failed.values()) == 4
    assert stats.failed["missing"] == 1 and stats.failed["too_short"] == 1
    reasons = {p.path: p.reason for p in problems.problems}
    for rel, allowed in BAD.items():
        assert reasons[rel] in allowed.split("|")
    assert reasons["t/b/nostream.mp4"] == "audio_no_stream"
    assert reasons["t/a/silent.mp4"] == "audio_silent"
    assert reasons["t/a/emptywav.mp4"] == "audio_silent"
    assert all("\n" not in p.detail for p in problems.problems)


def test_load_features_follows_the_contract(extracted: tuple) -> None:
    cfg, plan, _, _ = extracted
    fs = load_features(cfg, plan, 0)
    kept = [c.relpath for c in plan.clients[0] if c.relpath not in BAD]
    assert fs.relpaths == kept and len(fs) == 7
    assert {p for p, _ in fs.skipped} == set(BAD)
    assert fs.rgb.shape == (7, 18, 1280) and fs.flow.shape == (7, 18, 1280)
    assert fs.audio.shape == (7, 18, 1024) and fs.tags.shape == (7, 527)
    assert fs.rep_steps.shape == (7, 18) and fs.rep_steps.any(axis=1).all()
    assert fs.labels.dtype == np.int64 and fs.labels.tolist() == [0, 1, 0, 1, 0, 1, 0]
    assert isinstance(fs.rgb, np.memmap) and not fs.rgb.flags.writeable
    assert np.isfinite(fs.rgb).all() and np.isfinite(fs.flow).all()
    assert not np.allclose(fs.rgb, fs.flow)
    reason = dict(zip(fs.relpaths, fs.audio_reason, strict=True))
    assert reason == {"t/a/mono48k.mp4": "withheld", "t/b/stereo44k.mp4": "",
                      "t/a/surround.mp4": "", "t/b/nostream.mp4": "no_stream",
                      "t/a/silent.mp4": "silent", "t/b/sidecar11k.mp4": "",
                      "t/a/emptywav.mp4": "silent"}
    present = np.array([r == "" for r in fs.audio_reason])
    assert np.array_equal(fs.audio_present, present)
    assert not fs.audio[~present].any() and not fs.tags[~present].any()
    assert (np.abs(fs.audio[present]).sum(axis=(1, 2)) > 0).all() and fs.tags[present].max() > 0
    assert all(c.startswith("a video showing ") for c in fs.captions)


def test_loading_needs_only_the_cache(extracted: tuple, tmp_path: Path) -> None:
    cfg, plan, _, _ = extracted
    elsewhere = dataclasses.replace(plan, dataset_root=str(tmp_path / "no-dataset-here"))
    t0 = time.perf_counter()
    fs = load_features(cfg, elsewhere, 0)
    seconds = time.perf_counter() - t0
    assert fs.relpaths == load_features(cfg, plan, 0).relpaths
    assert seconds < 0.5  # memory-mapped pack: cheap per client per round


def test_withholding_sweep_reuses_the_pack(extracted: tuple) -> None:
    cfg, plan, _, _ = extracted
    load_features(cfg, plan, 0)
    packs = sorted((Path(cfg.extract.cache_dir) / "0" / "packs").iterdir())
    swept = _plan(Path(plan.dataset_root), withheld=frozenset())
    fs = load_features(cfg, swept, 0)
    assert sorted((Path(cfg.extract.cache_dir) / "0" / "packs").iterdir()) == packs
    assert fs.audio_reason[0] == "" and fs.audio_present[0] and fs.audio[0].any()


def test_rerun_is_a_cached_no_op(extracted: tuple) -> None:
    cfg, plan, _, _ = extracted
    fresh = FrozenEncoders(cfg.extract)
    stats = extract_partition(cfg, plan, 0, fresh)
    assert (stats.cached, stats.video_computed, stats.audio_computed) == (N_CLIPS, 0, 0)
    assert fresh.load_seconds == 0.0  # no encoder was even loaded


def test_config_change_invalidates_exactly_its_group(
    extracted: tuple, models: FrozenEncoders
) -> None:
    cfg, plan, _, _ = extracted
    cache = cfg.extract.cache_dir
    fps = extract_partition(_cfg(cache, "extract.fps=5"), plan, 0, models)
    assert (fps.video_computed, fps.audio_computed) == (N_CLIPS, 0)
    silence = extract_partition(_cfg(cache, "extract.silence_dbfs=-20"), plan, 0, models)
    assert (silence.video_computed, silence.audio_computed) == (0, N_CLIPS)
    clip = Path(plan.dataset_root) / "t/b/stereo44k.mp4"
    st = clip.stat()
    pack = ensure_pack(cfg.extract, plan, 0)
    os.utime(clip, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    touched = extract_partition(cfg, plan, 0, models)
    assert (touched.video_computed, touched.audio_computed, touched.cached) == (1, 1, 10)
    assert ensure_pack(cfg.extract, plan, 0) != pack  # the edited clip's new rows are packed


def test_unextracted_partition_is_a_clear_error(dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(FedvidaError, match="fedvida extract --client test"):
        load_features(_cfg(tmp_path), _plan(dataset), "test")


def test_sigkill_mid_run_then_resume_recomputes_nothing(
    extracted: tuple, models: FrozenEncoders, tmp_path: Path
) -> None:
    ref_cfg, plan, _, _ = extracted
    cfg = _cfg(tmp_path / "cache", "extract.batch_clips=1")
    plan_path = tmp_path / "plan.json"
    plan.save(plan_path)
    doc = cfg.model_dump(mode="json")
    doc["partition"]["plan"] = str(plan_path)
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(doc))
    video_store, audio_store = open_stores(cfg.extract)
    shards = video_store.root / "shards"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedvida.cli", "extract", "-c", str(tmp_path / "cfg.yaml"),
         "--client", "0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if shards.is_dir() and sum(not d.name.startswith(".") for d in shards.iterdir()) >= 2:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_v = len(open_stores(cfg.extract)[0].index())
    done_a = len(open_stores(cfg.extract)[1].index())
    assert 2 <= done_v < N_CLIPS
    stats = extract_partition(cfg, plan, 0, models)
    assert stats.video_computed == N_CLIPS - done_v
    assert stats.audio_computed == N_CLIPS - done_a
    assert not any(d.name.startswith(".tmp-") for d in shards.iterdir())
    index = open_stores(cfg.extract)[0].index()
    assert len(index) == N_CLIPS
    assert sum(1 for _ in shards.iterdir()) == N_CLIPS  # batch_clips=1: no clip written twice
    got, ref = load_features(cfg, plan, 0), load_features(ref_cfg, plan, 0)
    assert got.relpaths == ref.relpaths and got.captions == ref.captions
    np.testing.assert_allclose(got.rgb, ref.rgb, atol=1e-4)
    np.testing.assert_allclose(got.flow, ref.flow, atol=1e-4)
    np.testing.assert_allclose(got.audio, ref.audio, atol=1e-4)
    assert np.array_equal(got.rep_steps, ref.rep_steps)


def test_hf_encoders_and_blip_through_the_pipeline(dataset: Path, tmp_path: Path) -> None:
    # Arrange: tiny local ViT / bare AST (no tags: YAMNet tags instead) / BLIP directories
    hf = write_tiny_hf_models(tmp_path / "hf")
    cfg = _cfg(tmp_path / "cache", "extract.frame_encoder=hf-vit", "extract.audio_encoder=hf-ast",
               "extract.captioner=hf-blip", f"extract.hf_vit_path={hf['vit']}",
               f"extract.hf_ast_path={hf['ast']}", f"extract.hf_blip_path={hf['blip']}")
    plan = _plan(dataset)
    plan.clients[0] = [c for c in plan.clients[0] if c.relpath in
                       ("t/b/stereo44k.mp4", "t/b/nostream.mp4", "t/b/short.mp4")]
    # Act
    stats = extract_partition(cfg, plan, 0, FrozenEncoders(cfg.extract))
    fs = load_features(cfg, plan, 0)
    # Assert
    assert stats.failed["too_short"] == 1 and len(fs) == 2
    assert fs.rgb.shape == (2, 18, 32) and fs.audio.shape == (2, 18, 32)
    assert fs.audio_reason == ["", "no_stream"] and fs.tags[0].max() > 0 and not fs.tags[1].any()
    assert all(isinstance(c, str) for c in fs.captions)



REPLAN = ["t/a/mono48k.mp4", "t/b/stereo44k.mp4", "t/b/nostream.mp4", "t/a/silent.mp4",
          "t/b/short.mp4"]


def _split(root: Path, groups: list[list[str]], withheld: frozenset[str] = frozenset(),
           seed: int = 0) -> Plan:
    clients = [[PlannedClip(p, int("/b/" in p), p in withheld) for p in g] for g in groups]
    test = [PlannedClip("t/b/sidecar11k.mp4", 1, False)]
    return Plan(str(root), ["a", "b"], clients, test, [0.0] * len(groups), seed,
                f"split-{len(groups)}-{seed}")


def _per_clip(fs: object) -> dict[str, tuple]:
    assert hasattr(fs, "relpaths")
    return {rel: (np.array(fs.rgb[i]), np.array(fs.flow[i]), np.array(fs.audio[i]),
                  np.array(fs.tags[i]), np.array(fs.rep_steps[i]), fs.captions[i])
            for i, rel in enumerate(fs.relpaths)}


def test_repartitioning_reextracts_nothing(
    dataset: Path, models: FrozenEncoders, tmp_path: Path
) -> None:
    # Arrange: a 2-client plan extracted into one store; client 0's pack survives client 1
    cfg = _cfg(tmp_path / "cache")
    c = REPLAN
    two = _split(dataset, [c[:3], c[3:]], withheld=frozenset({c[0]}))
    first = [extract_partition(cfg, two, 0, models)]
    pack0 = ensure_pack(cfg.extract, two, 0)
    first += [extract_partition(cfg, two, p, models) for p in (1, "test")]
    assert [s.computed for s in first] == [3, 2, 1]
    assert ensure_pack(cfg.extract, two, 0) == pack0  # other clients' shards: pack still valid
    elsewhere = dataclasses.replace(two, dataset_root=str(tmp_path / "no-dataset-here"))
    assert load_features(cfg, elsewhere, 0).relpaths == [c[0], c[1], c[2]]
    ref: dict[str, tuple] = {}
    for p in (0, 1, "test"):
        ref.update(_per_clip(load_features(cfg, two, p, withhold=False)))
    assert set(ref) == {*c, "t/b/sidecar11k.mp4"} - {"t/b/short.mp4"}
    replans = [
        _split(dataset, [c[4:], c[1:3], [c[0], c[3]]]),  # 3 clients
        _split(dataset, [c[::2], c[1::2]], withheld=frozenset(c[:2]), seed=7),  # seed, withheld
        _split(dataset, [[x] for x in reversed(c)], seed=3),  # one clip per client
    ]
    fresh = FrozenEncoders(cfg.extract)
    for plan in replans:
        for p in [*range(plan.num_clients), "test"]:
            # Act
            stats = extract_partition(cfg, plan, p, fresh)
            fs = load_features(cfg, plan, p)
            oracle = _per_clip(load_features(cfg, plan, p, withhold=False))
            # Assert
            assert stats.computed == 0 and stats.cached == len(plan.partition(p))
            withheld = {x.relpath for x in plan.partition(p) if x.withheld}
            for i, rel in enumerate(fs.relpaths):
                if rel in withheld and ref[rel][2].any():
                    assert fs.audio_reason[i] == "withheld" and not fs.audio[i].any()
                for got, want in zip(oracle[rel], ref[rel], strict=True):
                    if isinstance(want, str):
                        assert got == want
                    else:
                        np.testing.assert_array_equal(got, want)
    assert fresh.load_seconds == 0.0  # no encoder was even loaded
    cache = Path(cfg.extract.cache_dir)
    groups = sorted(d.name.split("-")[0] for d in (cache / "store").iterdir())
    assert groups == ["audio", "video"]
    assert {d.name for d in cache.iterdir()} == {"store", "0", "1", "2", "3", "4", "test"}
    assert all([x.name for x in d.iterdir()] == ["packs"] for d in cache.iterdir()
               if d.name != "store")  # partitions hold views only


def test_node_extracts_only_its_clients_clips_into_its_own_store(
    dataset: Path, models: FrozenEncoders, tmp_path: Path
) -> None:
    # Arrange: a node's data-dir (plan.json + cache/), as `--node-config data-dir=...` names it
    from fedvida.federation.run_config import localize

    node = tmp_path / "node1"
    plan = _split(dataset, [REPLAN[:3], REPLAN[3:]])
    cfg = localize(_cfg(tmp_path / "server-cache"), {"data-dir": str(node), "partition-id": 1})
    node.mkdir()
    plan.save(node / "plan.json")
    # Act
    stats = extract_partition(cfg, Plan.load(cfg.partition.plan), 1, models)
    moved = dataclasses.replace(plan, dataset_root=str(tmp_path / "no-dataset-on-this-node"))
    fs = load_features(cfg, moved, 1)
    # Assert
    assert stats.computed == 2 and fs.relpaths == [REPLAN[3]]  # short.mp4 is skipped
    vstore, astore = open_stores(cfg.extract)
    assert vstore.root.parent == node / "cache" / "store"
    assert len(vstore.index()) == len(astore.index()) == 2  # client 1's clips only
    assert not (tmp_path / "server-cache").exists()
    with pytest.raises(FedvidaError, match="fedvida extract --client 0"):
        load_features(cfg, plan, 0)


def test_cache_from_before_the_shared_store_is_moved_not_recomputed(
    extracted: tuple, tmp_path: Path
) -> None:
    # Arrange: the old layout, groups under the partition (<cache>/0/video-<hash>/...)
    ref_cfg, plan, _, _ = extracted
    cfg = _cfg(tmp_path / "cache")
    shutil.copytree(Path(ref_cfg.extract.cache_dir) / "store", tmp_path / "cache" / "0")
    # Act
    fresh = FrozenEncoders(cfg.extract)
    stats = extract_partition(cfg, plan, 0, fresh)
    # Assert
    assert stats.computed == 0 and stats.cached == N_CLIPS and fresh.load_seconds == 0.0
    assert [d.name for d in (tmp_path / "cache" / "0").iterdir()] == ["packs"]
    got, ref = load_features(cfg, plan, 0), load_features(ref_cfg, plan, 0)
    assert got.relpaths == ref.relpaths and got.captions == ref.captions
    np.testing.assert_array_equal(got.rgb, ref.rgb)
    np.testing.assert_array_equal(got.audio, ref.audio)


def test_two_processes_extract_two_partitions_into_one_store(
    dataset: Path, models: FrozenEncoders, tmp_path: Path
) -> None:
    # Arrange: two `fedvida extract` processes, one per client, one cache
    cfg = _cfg(tmp_path / "cache", "extract.workers=0", "extract.batch_clips=1")
    plan = _split(dataset, [REPLAN[:3], REPLAN[3:]])
    plan.save(tmp_path / "plan.json")
    doc = cfg.model_dump(mode="json")
    doc["partition"]["plan"] = str(tmp_path / "plan.json")
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(doc))
    # Act
    procs = [subprocess.Popen(
        [sys.executable, "-m", "fedvida.cli", "extract", "-c", str(tmp_path / "cfg.yaml"),
         "--client", k], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for k in ("0", "1")]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    # Assert: every shard indexed once, whole lines only; nothing left to compute
    assert [p.returncode for p in procs] == [0, 0], errors
    for store in open_stores(cfg.extract):
        lines = (store.root / "index.jsonl").read_text().splitlines()
        assert len(lines) == len(REPLAN) and len(store.index()) == len(REPLAN)
    again = [extract_partition(cfg, plan, k, models) for k in (0, 1)]
    assert [s.computed for s in again] == [0, 0]
    assert len(load_features(cfg, plan, 0)) == 3 and len(load_features(cfg, plan, 1)) == 1
