"""The MiT loader on small real trees (v1 and v2 layouts) and `fedvida data inspect`."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import av
import numpy as np
import pytest

from fedvida.cli import main
from fedvida.config import ClassSelection, DataConfig
from fedvida.data.inspect import inspect_clips
from fedvida.data.mit import load_dataset
from fedvida.data.partition import Plan
from fedvida.errors import ConfigError, InputError

CLASSES = ["barking", "drumming", "typing"]  # real MiT v1 category names


def write_mp4(path: Path, audio: bool = True, silent: bool = False, fps: int = 24,
              frames: int = 6) -> None:
    """A tiny real H.264 mp4 (64x48) with an optional mono AAC track (a tone or silence)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = 16000
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        ast = out.add_stream("aac", rate=rate) if audio else None  # every stream before muxing
        if ast is not None:
            ast.layout = "mono"
        for i in range(frames):
            img = np.full((48, 64, 3), (i * 40) % 255, np.uint8)
            for pkt in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(pkt)
        for pkt in vs.encode():
            out.mux(pkt)
        if ast is not None:
            t = np.arange(rate * frames // fps) / rate
            x = np.zeros_like(t) if silent else 0.3 * np.sin(2 * np.pi * 440 * t)
            frame = av.AudioFrame.from_ndarray(x.astype(np.float32)[None], format="fltp",
                                               layout="mono")
            frame.sample_rate = rate
            for pkt in ast.encode(frame):
                out.mux(pkt)
            for pkt in ast.encode():
                out.mux(pkt)


def make_tree(root: Path, categories: list[str], per_class: tuple[int, int] = (4, 2),
              ann: str = "", videos: str = "", csv_extra: str = "") -> dict[str, list[str]]:
    """A MiT-style tree: every listed clip is a copy of one real mp4. Returns split -> rows."""
    src = root.parent / f"_{root.name}_src.mp4"
    write_mp4(src)
    ann_dir = root / ann if ann else root
    ann_dir.mkdir(parents=True, exist_ok=True)
    (ann_dir / "moments_categories.txt").write_text(
        "".join(f"{c},{i}\n" for i, c in enumerate(categories)))
    rows: dict[str, list[str]] = {}
    for split, n in zip(("training", "validation"), per_class, strict=True):
        lines = []
        for c in CLASSES:
            for k in range(n):
                rel = f"{c}/yt-{c[:3]}{k:03d}_{k}.mp4"
                dst = (root / videos / split / rel) if videos else (root / split / rel)
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)
                lines.append(f"{rel},{c},3,0{csv_extra}")
        rows[split] = lines
        (ann_dir / f"{split}Set.csv").write_text("\n".join(lines) + "\n")
    return rows


def test_v1_layout_parsed(tmp_path: Path) -> None:
    root = tmp_path / "mit"
    make_tree(root, [*CLASSES, "clapping"], csv_extra=",x,y")
    # a header row is tolerated
    csv = root / "trainingSet.csv"
    csv.write_text("filename,label,agree,disagree\n" + csv.read_text())

    index = load_dataset(DataConfig(root=root))

    assert index.version == "v1"
    assert index.classes == CLASSES  # "clapping" has no folder: not selected by mode 'all'
    assert len(index.train) == 12 and len(index.test) == 6
    first = index.train[0]
    assert first.relpath == "training/barking/yt-bar000_0.mp4"
    assert (first.category, first.label, first.split) == ("barking", 0, "training")
    assert {c.label for c in index.test if c.category == "typing"} == {2}
    assert all(index.path(c).is_file() for c in index.train + index.test)
    assert index.class_counts()["drumming"] == (4, 2)
    assert len(index.problems) == 0, index.problems.summary()


def test_v2_layout_detected(tmp_path: Path) -> None:
    # Moments_in_Time_Raw with annotations/ and videos/ (mmaction2 style), 305 categories
    root = tmp_path / "Moments_in_Time_Raw"
    cats = CLASSES + [f"action{i:03d}" for i in range(305 - len(CLASSES))]
    make_tree(root, cats, ann="annotations", videos="videos")

    index = load_dataset(DataConfig(root=root))

    assert index.version == "v2"
    assert index.classes == CLASSES
    assert index.train[0].relpath == "videos/training/barking/yt-bar000_0.mp4"
    assert index.path(index.test[-1]).is_file()
    assert load_dataset(DataConfig(root=root, version="v1")).version == "v1"


def test_class_selection_modes(tmp_path: Path) -> None:
    root = tmp_path / "mit"
    make_tree(root, CLASSES)

    listed = load_dataset(DataConfig(root=root, classes=ClassSelection(
        mode="list", names=["typing", "barking"])))
    assert listed.classes == ["barking", "typing"]
    assert {c.label for c in listed.train if c.category == "typing"} == {1}

    def rand(seed: int) -> list[str]:
        sel = ClassSelection(mode="random", n=2, seed=seed)
        return load_dataset(DataConfig(root=root, classes=sel)).classes

    assert rand(3) == rand(3) and len(rand(3)) == 2
    assert len({tuple(rand(s)) for s in range(8)}) > 1

    with pytest.raises(ConfigError, match=r"data\.classes\.names.*'sleeping'"):
        load_dataset(DataConfig(root=root, classes=ClassSelection(mode="list",
                                                                  names=["sleeping"])))
    with pytest.raises(ConfigError, match=r"data\.classes\.n"):
        load_dataset(DataConfig(root=root, classes=ClassSelection(mode="random", n=5)))


def test_cap_per_class_is_seeded_and_nested(tmp_path: Path) -> None:
    root = tmp_path / "mit"
    make_tree(root, CLASSES, per_class=(6, 3))

    def train(cap: int, seed: int = 0) -> set[str]:
        cfg = DataConfig(root=root, max_clips_per_class=cap, cap_seed=seed)
        return {c.relpath for c in load_dataset(cfg).train}

    two = train(2)
    assert len(two) == 6 and two == train(2)
    assert two < train(4)
    assert any(train(2, seed) != two for seed in range(1, 6))
    capped = load_dataset(DataConfig(root=root, max_clips_per_class=2,
                                     max_test_clips_per_class=1))
    assert len(capped.test) == 3
    assert load_dataset(DataConfig(root=root, max_clips_per_class=2)).test != capped.test


def test_bad_rows_missing_files_unknown_categories_are_recorded(tmp_path: Path) -> None:
    root = tmp_path / "mit"
    rows = make_tree(root, CLASSES)
    (root / "training" / "barking" / "yt-bar001_1.mp4").unlink()
    bad = [
        "typing/ghost.mp4,sleeping,3,0",          # unknown category
        "typing/ghost2.mp4,sleeping,3,0",
        "only-one-column",                         # too few columns
        "typing/notes.txt,typing,3,0",             # not a video
        "../outside.mp4,typing,3,0",               # escapes the split folder
        "/abs/typing/clip.mp4,typing,3,0",         # absolute path
        rows["training"][0],                       # duplicate
    ]
    (root / "trainingSet.csv").write_text("\n".join(rows["training"] + bad) + "\n")

    index = load_dataset(DataConfig(root=root))

    counts = index.problems.counts()
    assert counts == {"missing": 1, "unknown_category": 1, "bad_row": 4, "duplicate": 1}
    assert len(index.train) == 11 and len(index.test) == 6
    lines = [p.line() for p in index.problems.problems]
    assert any("training/barking/yt-bar001_1.mp4" in line for line in lines)
    assert any("'sleeping' in 2 row(s)" in line for line in lines)
    assert any("trainingSet.csv:" in line and "only-one-column" in line for line in lines)


def test_missing_root_or_csv_is_one_line_error(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(InputError, match="nowhere"):
        load_dataset(DataConfig(root=missing))

    code = main(["data", "inspect", "--root", str(missing)])
    err = capsys.readouterr().err
    assert code == 2
    assert str(missing) in err and err.count("\n") == 1

    config = tmp_path / "exp.yaml"
    config.write_text(f"data:\n  root: {missing}\n")
    assert main(["partition", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fedvida: error: dataset root not found") and str(missing) in err

    root = tmp_path / "mit"
    make_tree(root, CLASSES)
    (root / "validationSet.csv").unlink()
    with pytest.raises(InputError, match="validationSet.csv"):
        load_dataset(DataConfig(root=root))


@pytest.mark.slow  # probes every clip with PyAV in worker processes
def test_inspect_reports_corrupt_and_empty_files(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "mit"
    make_tree(root, CLASSES)
    truncated = root / "training" / "drumming" / "yt-dru002_2.mp4"
    truncated.write_bytes(truncated.read_bytes()[:300])
    (root / "validation" / "typing" / "yt-typ001_1.mp4").write_bytes(b"")
    write_mp4(root / "training" / "barking" / "yt-bar003_3.mp4", audio=False)
    write_mp4(root / "training" / "typing" / "yt-typ000_0.mp4", silent=True)

    index = load_dataset(DataConfig(root=root))
    report = inspect_clips(index, index.train + index.test, silence_dbfs=-60.0)

    assert report.probed == 18 and len(report.facts) == 16
    assert {p.path for p in report.problems.problems} == {
        "training/drumming/yt-dru002_2.mp4", "validation/typing/yt-typ001_1.mp4"}
    shares = report.shares()
    assert shares["audio_stream"] == pytest.approx(15 / 16)
    assert shares["silent"] == pytest.approx(1 / 16)
    assert report.fps_counts() == [("24.000", 16)]

    code = main(["data", "inspect", "--root", str(root), "--problems",
                 str(tmp_path / "problems.jsonl")])
    out = capsys.readouterr().out
    assert code == 0
    assert "yt-dru002_2.mp4" in out and "yt-typ001_1.mp4" in out
    assert "unreadable=2" in out
    assert len((tmp_path / "problems.jsonl").read_text().splitlines()) == 2


@pytest.mark.slow  # probes every clip with PyAV in worker processes
def test_inspect_and_partition_on_demo(tiny_demo: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    index = load_dataset(DataConfig(root=tiny_demo))
    assert len(index.classes) == 4 and len(index.train) == 16 and len(index.test) == 8
    report = inspect_clips(index, index.train + index.test, silence_dbfs=-60.0)
    assert len(report.facts) == 24 and not len(report.problems)
    assert report.shares()["audio_stream"] == pytest.approx(21 / 24)  # 1/8 without a stream
    assert report.shares()["silent"] == pytest.approx(3 / 24)  # 1/8 silent tracks

    code = main(["data", "inspect", "--root", str(tiny_demo)])
    out = capsys.readouterr().out
    assert code == 0
    assert "problems: none" in out and "87.5%" in out

    plan_path = tmp_path / "plan.json"
    code = main(["partition", "--probe", "--set", f"data.root={tiny_demo}", "--set",
                 f"partition.plan={plan_path}", "--set", "partition.num_clients=3"])
    out = capsys.readouterr().out
    assert code == 0 and re.search(r"│ 2 +│", out) and re.search(r"│ test +│ +8 │", out)
    assert "nat." in out and "problems: none" in out
    plan = Plan.load(plan_path)
    assert sum(len(c) for c in plan.clients) == 16 and len(plan.test) == 8
    assert sum(c.withheld for c in plan.test) == 4  # test_rate 0.5, exact


def test_data_demo_command_writes_a_readable_dataset(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "demo"
    code = main(["data", "demo", "--out", str(out_dir), "--classes", "2",
                 "--clips-per-class", "1", "--seed", "3", "--set", "demo.val_clips_per_class=1"])
    out = capsys.readouterr().out
    assert code == 0 and "clips/s" in out
    index = load_dataset(DataConfig(root=out_dir))
    assert len(index.classes) == 2 and len(index.train) == 2 and len(index.test) == 2

    assert main(["data", "demo", "--out", str(out_dir), "--classes", "11"]) == 2
    assert "demo.classes" in capsys.readouterr().err


def _index_only_tree(root: Path) -> None:
    """Index files only (no clip files): 3 classes listed, one more in the categories file."""
    root.mkdir(parents=True)
    (root / "moments_categories.txt").write_text(
        "".join(f"{c},{i}\n" for i, c in enumerate([*CLASSES, "clapping"])))
    for split, n in (("training", 5), ("validation", 2)):
        rows = [f"{c}/yt-{c[:3]}{k:03d}.mp4,{c},3,0" for c in CLASSES for k in range(n)]
        if split == "training":
            rows += ["typing/ghost.mp4,sleeping,3,0", "only-one-column"]
        (root / f"{split}Set.csv").write_text("\n".join(rows) + "\n")


def test_index_only_trusts_the_csvs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "mit"
    _index_only_tree(root)

    checked = load_dataset(DataConfig(root=root))
    assert checked.train == [] and checked.problems.counts()["missing_dir"] == 3

    index = load_dataset(DataConfig(root=root, check_files=False))
    assert index.classes == CLASSES  # "clapping" has no training row: not present
    assert len(index.train) == 15 and len(index.test) == 6
    assert index.problems.counts() == {"unknown_category": 1, "bad_row": 1}
    random2 = load_dataset(DataConfig(root=root, check_files=False,
                                      classes=ClassSelection(mode="random", n=2)))
    assert len(random2.classes) == 2 and set(random2.classes) <= set(CLASSES)
    capped = load_dataset(DataConfig(root=root, check_files=False, max_clips_per_class=2))
    assert len(capped.train) == 6

    code = main(["data", "inspect", "--index-only", "--root", str(root), "--problems",
                 str(tmp_path / "problems.jsonl")])
    out = " ".join(capsys.readouterr().out.split())  # console lines may wrap
    assert code == 0
    assert "3 classes, 15 training + 6 test clips" in out
    assert "bad_row=1" in out and "unknown_category=1" in out
    assert "frame rates" not in out and "clips probed" not in out  # nothing opened
    assert len((tmp_path / "problems.jsonl").read_text().splitlines()) == 2


def test_folder_listing_finds_the_same_missing_clips_as_stat(tmp_path: Path) -> None:
    root = tmp_path / "mit"
    _index_only_tree(root)
    # nested folder rows, a quoted row (the csv module path) and a few files present
    with (root / "trainingSet.csv").open("a") as fh:
        fh.write('barking/sub/deep.mp4,barking,3,0\n"drumming/q,uoted.mp4",drumming,3,0\n')
    for rel in ("barking/yt-bar000.mp4", "barking/yt-bar003.mp4", "drumming/yt-dru001.mp4",
                "barking/sub/deep.mp4", "drumming/q,uoted.mp4"):
        (root / "training" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "training" / rel).write_bytes(b"")
    (root / "training" / "typing").mkdir()  # present, every clip missing
    (root / "validation").mkdir()

    index = load_dataset(DataConfig(root=root))

    import csv as csv_module
    listed = [r[0] for r in csv_module.reader((root / "trainingSet.csv").open())
              if len(r) > 1 and r[1] in CLASSES]
    by_stat = {f"training/{rel}" for rel in listed if not (root / "training" / rel).is_file()}
    missing = {p.path for p in index.problems.problems if p.reason == "missing"}
    assert missing == by_stat
    assert {c.relpath for c in index.train} == {f"training/{rel}" for rel in listed} - by_stat
    assert index.problems.counts()["missing_dir"] == 3  # validation/<class> absent


def test_unquoted_fast_path_reads_rows_as_the_csv_module(tmp_path: Path) -> None:
    from fedvida.data.mit import read_split_csv
    from fedvida.errors import ProblemLog

    lines = ["path,label,agree,disagree", "barking/a.mp4,barking,3,0", "training/barking/b.mp4,"
             "barking ,3,0", " barking/c.mp4,barking", "barking\\d.MP4,barking", "./barking/e.mp4,"
             "barking", "barking//f.mp4,barking", "barking/../g.mp4,barking", "/abs/h.mp4,barking",
             "training/i.mp4,barking", "barking/j.txt,barking", "barking/a.mp4,barking", "   ",
             "", "barking/k.webm,,3", "drumming/sub/l.mp4,drumming\r", "barking/m.mp4 ,barking"]
    plain, quoted = tmp_path / "plain.csv", tmp_path / "quoted.csv"
    plain.write_text("\n".join(lines) + "\n")
    quoted.write_text("\n".join(lines) + '\n"barking/z.mp4",barking\n')  # a quote: csv module
    log_plain, log_quoted = ProblemLog(), ProblemLog()
    rows_plain = read_split_csv(plain, "training", log_plain)
    rows_quoted = read_split_csv(quoted, "training", log_quoted)
    assert rows_quoted == [*rows_plain, ("barking/z.mp4", "barking")]
    assert [(p.reason, p.detail, p.path.rsplit(":", 1)[1]) for p in log_plain.problems] == [
        (p.reason, p.detail, p.path.rsplit(":", 1)[1]) for p in log_quoted.problems]
    assert ("barking/d.MP4", "barking") in rows_plain and len(log_plain) == 6


def test_bulk_objects_restores_the_collector() -> None:
    import gc

    from fedvida.data.mit import bulk_objects

    @bulk_objects
    def boom() -> None:
        assert not gc.isenabled()
        raise ValueError

    assert gc.isenabled()
    with pytest.raises(ValueError):
        boom()
    assert gc.isenabled()
    gc.disable()
    try:
        bulk_objects(lambda: None)()
        assert not gc.isenabled()  # left as found
    finally:
        gc.enable()
