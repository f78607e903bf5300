"""The shard store on its own: two processes writing into one group at once."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import numpy as np

from fedvida.features.store import INDEX, ShardStore

SIG = {"kind": "test"}


def _writer(root: str, who: str, shards: int) -> None:
    store = ShardStore(Path(root), SIG)
    for s in range(shards):
        keys = [f"{who}-{s}-{j}" for j in range(3)]
        store.write_shard(keys, [0, -1, 1], {"x": np.full((2, 4), s, np.float32)},
                          {"captions": ["a", "", "b"]})


def test_two_processes_write_one_store(tmp_path: Path) -> None:
    # Arrange
    root = tmp_path / "store" / "video-abc"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(root), who, 25)) for who in ("p0", "p1")]
    # Act
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    # Assert
    assert [p.exitcode for p in procs] == [0, 0]
    lines = (root / INDEX).read_text().splitlines()
    assert len(lines) == 50  # one whole line per shard: O_APPEND writes never interleave
    store = ShardStore(root, SIG)
    index = store.index()
    assert len(index) == 150 and not list((root / "shards").glob(".tmp-*"))
    row = index["p1-7-2"]
    assert row.row == 1 and float(store.array(row.shard, "x")[1, 0]) == 7.0
    assert index["p0-3-1"].row == -1


def test_keys_since_reads_only_appended_complete_lines(tmp_path: Path) -> None:
    store = ShardStore(tmp_path / "g", SIG)
    store.write_shard(["a"], [0], {"x": np.zeros((1, 2), np.float32)}, {})
    mark = store.index_size()
    assert store.keys_since(mark) == (set(), mark)
    store.write_shard(["b", "c"], [0, 1], {"x": np.zeros((2, 2), np.float32)}, {})
    end = store.index_size()
    with (store.root / INDEX).open("a") as fh:
        fh.write('{"shard": "torn", "ke')  # a line still being written (or torn by a crash)
    assert store.keys_since(mark) == ({"b", "c"}, end)
    assert store.keys_since(10**9) is None  # index shorter than the mark: store replaced
