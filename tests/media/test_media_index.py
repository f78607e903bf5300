"""Torture set, dataset index files: byte-order marks and file names that are not UTF-8."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from media_helpers import tone
from media_torture import write_av

from fedvida.config import DataConfig
from fedvida.data.mit import load_dataset
from fedvida.data.video import probe_video
from fedvida.errors import ProblemLog

BOM = b"\xef\xbb\xbf"


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("src") / "clip.mp4"
    write_av(path, seconds=1.0, audio=tone(440, 1, 48000))
    return path


def _tree(root: Path, clip: Path, rows: dict[str, list[bytes]], categories: bytes) -> None:
    (root / "moments_categories.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "moments_categories.txt").write_bytes(categories)
    for split, lines in rows.items():
        (root / f"{split}Set.csv").write_bytes(b"".join(lines))
        for line in lines:
            rel = line.lstrip(BOM).split(b",")[0]
            dst = Path(os.fsdecode(os.fsencode(root / split) + b"/" + rel))
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(clip, dst)


def test_byte_order_marks_keep_the_first_class(tmp_path: Path, clip: Path) -> None:
    # what a spreadsheet export writes: a UTF-8 BOM before the first row of every file
    rows = {
        "training": [BOM + b"barking/a.mp4,barking,3,0\r\n", b"barking/b.mp4,barking,3,0\r\n",
                     b"typing/c.mp4,typing,3,0\r\n", b"typing/d.mp4,typing,3,0\r\n"],
        "validation": [BOM + b"barking/e.mp4,barking,3,0\r\n", b"typing/f.mp4,typing,3,0\r\n"],
    }
    _tree(tmp_path, clip, rows, BOM + b"barking,0\r\ntyping,1\r\n")
    index = load_dataset(DataConfig(root=tmp_path))
    assert index.classes == ["barking", "typing"]
    assert index.class_counts() == {"barking": (2, 1), "typing": (2, 1)}
    assert not len(index.problems), index.problems.summary()


def test_latin1_file_name_listed_in_latin1_is_found(tmp_path: Path, clip: Path) -> None:
    rows = {
        "training": [b"barking/caf\xe9.mp4,barking,3,0\n", b"barking/plain.mp4,barking,3,0\n"],
        "validation": [b"barking/v.mp4,barking,3,0\n"],
    }
    _tree(tmp_path, clip, rows, b"barking,0\n")
    # one more row naming a Latin-1 file that is not there: its problem line stays printable
    with (tmp_path / "trainingSet.csv").open("ab") as fh:
        fh.write(b"barking/gone\xe8.mp4,barking,3,0\n")
    index = load_dataset(DataConfig(root=tmp_path))
    names = sorted(c.relpath for c in index.train)
    assert names == ["training/barking/caf\udce9.mp4", "training/barking/plain.mp4"]
    latin = index.path(index.train[0])
    assert os.fsencode(latin).endswith(b"caf\xe9.mp4") and latin.is_file()
    assert probe_video(latin).duration == pytest.approx(1.0, abs=0.05)
    (problem,) = index.problems.problems
    assert problem.reason == "missing" and problem.path == "training/barking/gone\\xe8.mp4"
    assert "not UTF-8" in problem.detail
    log = ProblemLog()
    log.extend(index.problems)
    log.write_jsonl(tmp_path / "p.jsonl")
    assert json.loads((tmp_path / "p.jsonl").read_text())["reason"] == "missing"
