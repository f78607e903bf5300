"""Moments-in-Time dataset layout: categories file, split CSVs, clip folders -> `DatasetIndex`.

A real MiT download (v1: 339 classes; v2, `Moments_in_Time_Raw`: 305 classes) and the demo
dataset share one layout::

    <root>/moments_categories.txt        rows "name,index" (or just "name")
    <root>/trainingSet.csv               rows "category/clip.mp4,category,agree,disagree"
    <root>/validationSet.csv
    <root>/training/<category>/<clip>.mp4
    <root>/validation/<category>/<clip>.mp4

The annotation files may also sit in ``<root>/annotations/`` and the split folders in
``<root>/videos/`` (the layout mmaction2 prepares). Bad rows, unknown categories and clips that
are listed but missing on disk are recorded in `DatasetIndex.problems`; they never stop a run.
With ``data.check_files: false`` nothing is looked up on disk: the CSVs are trusted (index only).

Encodings: index files may start with a UTF-8 byte-order mark (spreadsheet exports write one);
it is dropped. Each line is decoded as UTF-8; a line that is not UTF-8 (e.g. a Latin-1 file name)
is decoded as the file system decodes names (`os.fsdecode`, undecodable bytes kept as
surrogates), so that its path names the same bytes on disk and the clip is found.
"""

from __future__ import annotations

import csv
import functools
import gc
import os
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import ParamSpec, TypeVar

import numpy as np

from fedvida.config import ClassSelection, DataConfig
from fedvida.errors import ConfigError, InputError, ProblemLog, printable
from fedvida.resources import mit_v1_categories

_T = TypeVar("_T")

CATEGORIES_FILE = "moments_categories.txt"
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v")
V1_CLASSES = 339
V2_CLASSES = 305


@dataclass(frozen=True, slots=True)
class ClipRef:
    """One clip of the dataset.

    Attributes
    ----------
    relpath
        Path relative to the dataset root, POSIX, e.g. ``"training/barking/demo_0001.mp4"``.
    category
        MiT category name.
    label
        Index into `DatasetIndex.classes`.
    split
        The split folder name (``"training"`` or ``"validation"``).
    """

    relpath: str
    category: str
    label: int
    split: str


@dataclass
class DatasetIndex:
    """The selected classes and clips of one dataset, with every problem met while indexing."""

    root: Path
    version: str
    classes: list[str]
    train: list[ClipRef]
    test: list[ClipRef]
    problems: ProblemLog = field(default_factory=ProblemLog)

    def path(self, clip: ClipRef) -> Path:
        """Absolute-or-cwd-relative path of a clip's file."""
        return self.root / clip.relpath

    def class_counts(self) -> dict[str, tuple[int, int]]:
        """``{class: (training clips, test clips)}`` in label order."""
        tr = Counter(c.category for c in self.train)
        te = Counter(c.category for c in self.test)
        return {name: (tr[name], te[name]) for name in self.classes}


@dataclass(frozen=True)
class Layout:
    """Where the files of a MiT-style dataset are."""

    root: Path
    categories_file: Path | None
    csv: dict[str, Path]          # split -> annotation CSV
    video_dir: dict[str, Path]    # split -> folder holding <category>/<clip>.mp4


BOM = b"\xef\xbb\xbf"

_P = ParamSpec("_P")


def bulk_objects(fn: Callable[_P, _T]) -> Callable[_P, _T]:
    """Run `fn` with the cyclic garbage collector paused (restored after, also on errors).

    Building a MiT-sized index or plan allocates millions of small acyclic objects (rows,
    `ClipRef`s, `PlannedClip`s); each allocation burst triggers collections that walk them all
    again, about half the time of loading 800k rows. Reference counting still frees them.
    """
    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        paused = gc.isenabled()
        gc.disable()
        try:
            return fn(*args, **kwargs)
        finally:
            if paused:
                gc.enable()
    return wrapper


def read_index_lines(path: Path) -> tuple[list[str], list[int]]:
    """The lines of an index file (categories, split CSV) as text, BOM-tolerant.

    Returns
    -------
    lines, fallback
        Each line with its line ending; ``fallback`` the 1-based numbers of lines that were not
        UTF-8 and were decoded as file-name bytes (`os.fsdecode`) instead.

    Raises
    ------
    OSError
        When the file cannot be read.
    """
    data = path.read_bytes()
    if data.startswith(BOM):
        data = data[len(BOM):]
    lines: list[str] = []
    fallback: list[int] = []
    for lineno, raw in enumerate(data.splitlines(keepends=True), start=1):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            lines.append(os.fsdecode(raw))
            fallback.append(lineno)
    return lines, fallback


def _csv_name(split: str) -> str:
    return f"{split}Set.csv"


def find_layout(root: Path, splits: tuple[str, ...]) -> Layout:
    """Locate the categories file, the split CSVs and the split folders under `root`.

    Raises
    ------
    InputError
        When the root directory or a split CSV does not exist (naming the path).
    """
    if not root.is_dir():
        raise InputError(f"dataset root not found: {root} (set data.root)")
    ann_dirs = [root, root / "annotations"]
    cats = next((d / CATEGORIES_FILE for d in ann_dirs if (d / CATEGORIES_FILE).is_file()), None)
    csvs: dict[str, Path] = {}
    dirs: dict[str, Path] = {}
    for split in splits:
        found = next((d / _csv_name(split) for d in ann_dirs if (d / _csv_name(split)).is_file()),
                     None)
        if found is None:
            raise InputError(f"split CSV not found: {root / _csv_name(split)}")
        csvs[split] = found
        alt = root / "videos" / split
        dirs[split] = alt if not (root / split).is_dir() and alt.is_dir() else root / split
    return Layout(root, cats, csvs, dirs)


def read_categories(path: Path, problems: ProblemLog) -> list[str]:
    """Read ``moments_categories.txt``: rows ``name,index`` (MiT) or bare ``name``.

    Rows are ordered by their index when every row has one, else kept in file order; a header
    row is skipped. A malformed row (empty name, non-integer index) or a repeated name is recorded
    in `problems` and skipped (the first occurrence wins).

    Raises
    ------
    InputError
        When the file is missing or unreadable.
    """
    try:
        lines, fallback = read_index_lines(path)
    except FileNotFoundError:
        raise InputError(f"categories file not found: {path}") from None
    except OSError as exc:
        raise InputError(f"categories file {path}: unreadable ({exc})") from None
    for lineno in fallback:
        problems.add(path, "not_utf8", f"line {lineno}: not UTF-8, read as file-name bytes")
    rows: list[tuple[int | None, str]] = []
    seen: set[str] = set()
    for lineno, line in enumerate((ln.rstrip("\r\n") for ln in lines), start=1):
        if not line.strip():
            continue
        cells = [c.strip() for c in line.split(",")]
        name, index = cells[0], None
        if len(cells) > 1 and cells[1]:
            try:
                index = int(cells[1])
            except ValueError:
                if not rows and lineno == 1:  # a header such as "name,index"
                    continue
                problems.add(path, "bad_row", f"line {lineno}: index {cells[1]!r}")
                continue
        if not name.strip(" _-+/"):
            problems.add(path, "bad_row", f"line {lineno}: empty category name")
            continue
        if name in seen:
            problems.add(path, "duplicate", f"line {lineno}: {name!r} repeated")
            continue
        seen.add(name)
        rows.append((index, name))
    if all(i is not None for i, _ in rows):
        rows.sort(key=lambda r: (r[0], r[1]))
    return [name for _, name in rows]


def _clean_relpath(raw: str, split: str) -> str | None:
    """``category/clip.mp4`` (POSIX, inside the split folder) or None when unusable."""
    if "\\" not in raw and raw == raw.strip():  # fast path: already clean (a real MiT row)
        parts = raw.split("/")
        if (len(parts) >= 2 and parts[0] != split and "" not in parts and "." not in parts
                and ".." not in parts):
            return raw if parts[-1].lower().endswith(VIDEO_EXTENSIONS) else None
    absolute = raw.lstrip().startswith(("/", "\\"))
    parts = [p for p in raw.strip().replace("\\", "/").split("/") if p not in ("", ".")]
    if parts and parts[0] == split:
        parts = parts[1:]
    if absolute or len(parts) < 2 or ".." in parts:
        return None
    if not parts[-1].lower().endswith(VIDEO_EXTENSIONS):
        return None
    return "/".join(parts)


def read_split_csv(path: Path, split: str, problems: ProblemLog) -> list[tuple[str, str]]:
    """Read one split CSV as ``(path inside the split folder, category)`` pairs.

    Extra columns are ignored and a header row is skipped; malformed rows and duplicates are
    recorded in `problems` as ``bad_row`` / ``duplicate`` with ``file:line``. A leading BOM is
    dropped; a line that is not UTF-8 is read as file-name bytes (module docstring) and, when its
    clip is then missing on disk, the ``missing`` problem says so.
    """
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    names: dict[str, str] = {}  # one string per category name, shared by its rows
    lines, _ = read_index_lines(path)
    rows: Iterable[list[str]]
    if any('"' in line for line in lines):  # quoted fields (maybe over lines): the csv module
        rows = csv.reader(lines)
    else:  # what csv.reader gives for unquoted lines, several times faster
        rows = (line.rstrip("\r\n").split(",") for line in lines)
    for lineno, row in enumerate(rows, start=1):
        if not row or not "".join(row).strip():
            continue
        rel = _clean_relpath(row[0], split) if row[0].strip() else None
        category = row[1].strip() if len(row) >= 2 else ""
        category = names.setdefault(category, category)
        if rel is None or not category:
            where = f"{path}:{lineno}"
            header = lineno == 1 and not row[0].strip().lower().endswith(VIDEO_EXTENSIONS)
            if not header:
                problems.add(where, "bad_row", ",".join(row)[:120])
            continue
        if rel in seen:
            problems.add(f"{path}:{lineno}", "duplicate", rel)
            continue
        seen.add(rel)
        out.append((rel, category))
    return out


def detect_version(root: Path, categories: list[str]) -> str:
    """Guess the MiT version: 305 classes or a ``*_Raw`` root is v2, 339 classes v1.

    Partial category files (subsets, the demo) are v1 when every name is a v1 category.
    """
    if len(categories) == V2_CLASSES:
        return "v2"
    if len(categories) == V1_CLASSES:
        return "v1"
    if any(p.lower().endswith("_raw") for p in root.resolve().parts):
        return "v2"
    v1 = set(mit_v1_categories())
    return "v1" if all(c in v1 for c in categories) else "v2"


def select_classes(available: list[str], present: set[str], sel: ClassSelection) -> list[str]:
    """Apply `data.classes` and return the selected class names sorted by name.

    `available` is the categories file's list; `present` the classes with a training folder.
    ``all`` and ``random`` draw only from present classes; ``list`` names must be available.

    Raises
    ------
    ConfigError
        Naming ``data.classes.names`` (unknown class) or ``data.classes.n`` (too many asked).
    """
    if sel.mode == "list":
        unknown = [n for n in sel.names if n not in set(available)]
        if unknown:
            raise ConfigError(
                f"data.classes.names: unknown class(es) {', '.join(map(repr, unknown[:5]))}"
                f" (not in {CATEGORIES_FILE})"
            )
        return sorted(set(sel.names))
    pool = sorted(c for c in available if c in present)
    if sel.mode == "all":
        return pool
    if sel.n > len(pool):
        raise ConfigError(f"data.classes.n: asked for {sel.n} classes, the dataset has {len(pool)}")
    rng = np.random.default_rng(sel.seed)
    picked = rng.choice(len(pool), size=sel.n, replace=False)
    return sorted(pool[int(i)] for i in picked)


def _cap(items: list[str], cap: int | None, seed: int, category: str) -> list[str]:
    """A seeded per-class sample of at most `cap` items (nested: a larger cap keeps a smaller)."""
    items = sorted(items)
    if cap is None or len(items) <= cap:
        return items
    rng = np.random.default_rng([seed, zlib.crc32(category.encode("utf-8", "surrogateescape"))])
    order = rng.permutation(len(items))[:cap]
    return sorted(items[int(i)] for i in order)


class _DirCache:
    """Lists each clip folder once, so checking 100k clips costs one scandir per class.

    Folders are keyed by their path under `base` as a string (``"barking"``,
    ``"barking/sub"``): no `Path` object per clip.
    """

    def __init__(self, base: Path) -> None:
        self._base = base
        self._entries: dict[str, set[str] | None] = {}

    def listing(self, folder: str) -> set[str] | None:
        """Names in ``base/folder``, None when it is not a readable directory."""
        if folder not in self._entries:
            try:
                self._entries[folder] = {e.name for e in os.scandir(self._base / folder)}
            except OSError:
                self._entries[folder] = None
        return self._entries[folder]

    def exists(self, rel: str) -> bool:
        """Whether ``base/rel`` is listed in its folder."""
        folder, _, name = rel.rpartition("/")
        names = self.listing(folder)
        return names is not None and name in names


def _index_split(
    layout: Layout,
    split: str,
    rows: list[tuple[str, str]],
    labels: dict[str, int],
    cap: int | None,
    seed: int,
    problems: ProblemLog,
    check_files: bool = True,
) -> list[ClipRef]:
    """Turn one split's CSV rows into `ClipRef`s of the selected classes present on disk
    (every listed clip when `check_files` is false)."""
    vdir = layout.video_dir[split]
    prefix = PurePosixPath(os.path.relpath(vdir, layout.root)).as_posix()
    listed: dict[str, list[str]] = {c: [] for c in labels}
    for rel, category in rows:
        if category in listed:
            listed[category].append(rel)
    dirs = _DirCache(vdir)
    clips: list[ClipRef] = []
    for category in sorted(listed):
        if not check_files:
            for rel in _cap(listed[category], cap, seed, category):
                clips.append(ClipRef(f"{prefix}/{rel}", category, labels[category], split))
            continue
        by_dir: dict[str, list[str]] = {}
        for rel in listed[category]:
            by_dir.setdefault(rel.split("/", 1)[0], []).append(rel)
        present = []
        for top, rels in sorted(by_dir.items()):
            if dirs.listing(top) is None:  # one line for a whole absent folder
                problems.add(f"{prefix}/{top}", "missing_dir", f"{len(rels)} listed clip(s)")
                continue
            for rel in rels:
                if dirs.exists(rel):
                    present.append(rel)
                else:
                    where = f"listed in {layout.csv[split].name}"
                    if printable(rel) != rel:
                        where += " (its name is not UTF-8)"
                    problems.add(f"{prefix}/{rel}", "missing", where)
        for rel in _cap(present, cap, seed, category):
            clips.append(ClipRef(f"{prefix}/{rel}", category, labels[category], split))
    return clips


@bulk_objects
def load_dataset(cfg: DataConfig) -> DatasetIndex:
    """Index a MiT-layout dataset: select classes, cap clips per class, check files exist
    (unless ``cfg.check_files`` is false: then a class with training rows is present and every
    listed clip is kept).

    Parameters
    ----------
    cfg
        The `data` config section.

    Returns
    -------
    DatasetIndex
        Selected classes (sorted; label i is ``classes[i]``), training and test clips sorted by
        path, and the problems met (bad rows, unknown categories, missing files).

    Raises
    ------
    InputError
        The root directory or a split CSV is missing.
    ConfigError
        An explicitly listed class does not exist, or more random classes than exist are asked.
    """
    root = Path(cfg.root)
    splits = (cfg.train_split, cfg.test_split)
    layout = find_layout(root, splits)
    problems = ProblemLog()
    rows = {s: read_split_csv(layout.csv[s], s, problems) for s in splits}
    if layout.categories_file is not None:
        categories = read_categories(layout.categories_file, problems)
    else:
        categories = sorted({c for s in splits for _, c in rows[s]})
        problems.add(root / CATEGORIES_FILE, "missing", "categories taken from the split CSVs")
    known = set(categories)
    for split in splits:
        unknown = Counter(c for _, c in rows[split] if c not in known)
        for category, count in sorted(unknown.items()):
            problems.add(layout.csv[split], "unknown_category", f"{category!r} in {count} row(s)")
    version = cfg.version if cfg.version != "auto" else detect_version(root, categories)
    train_dir = layout.video_dir[cfg.train_split]
    if cfg.check_files:
        present = {c for c in categories if (train_dir / c).is_dir()}
    else:  # index only: a class is present when the training CSV lists a clip of it
        present = {c for _, c in rows[cfg.train_split]} & known
    classes = select_classes(categories, present, cfg.classes)
    if cfg.classes.mode != "list":
        listed = Counter(c for _, c in rows[cfg.train_split])
        for name in sorted(known - present):
            if listed[name]:
                detail = f"class skipped, {listed[name]} clip(s) listed"
                problems.add(train_dir / name, "missing_dir", detail)
    labels = {name: i for i, name in enumerate(classes)}
    train = _index_split(layout, cfg.train_split, rows[cfg.train_split], labels,
                         cfg.max_clips_per_class, cfg.cap_seed, problems, cfg.check_files)
    test = _index_split(layout, cfg.test_split, rows[cfg.test_split], labels,
                        cfg.max_test_clips_per_class, cfg.cap_seed, problems, cfg.check_files)
    per_class = Counter(c.category for c in train)
    where = "on disk" if cfg.check_files else "listed"
    for name in classes:
        if not per_class[name]:
            problems.add(train_dir / name, "empty_class", f"no training clips {where}")
    return DatasetIndex(root, version, classes, train, test, problems)
