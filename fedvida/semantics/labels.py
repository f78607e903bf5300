"""Action label lists for the dictionary: MiT categories files and name normalisation."""

from __future__ import annotations

import re
from pathlib import Path

from fedvida.config import Config
from fedvida.errors import InputError, ProblemLog
from fedvida.resources import mit_v1_categories

CATEGORIES_FILE = "moments_categories.txt"
_SEPARATORS = re.compile(r"[_\-+/]+")
_SPACES = re.compile(r"\s+")


def normalise_action(name: str) -> str:
    """MiT category name -> plain words, e.g. ``adult+female+singing`` -> ``adult female singing``.

    Underscores, dashes, plus signs and slashes become spaces; case is folded (the bundled model
    is uncased anyway).
    """
    return _SPACES.sub(" ", _SEPARATORS.sub(" ", name)).strip().lower()


def read_categories_file(path: Path, problems: ProblemLog | None = None) -> list[str]:
    """Read a categories file: rows ``name,index`` (MiT) or bare ``name``; a header is skipped.

    Rows ordered by their index when every row has one, else in file order. A malformed row
    (empty name, non-integer index) or a repeated name is recorded in `problems` and skipped.

    Raises
    ------
    InputError
        When the file is missing or unreadable or holds no usable row.
    """
    log = problems if problems is not None else ProblemLog()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"categories file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"categories file {path}: unreadable ({exc})") from None
    rows: list[tuple[int | None, str]] = []
    seen: set[str] = set()
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        name = fields[0]
        index: int | None = None
        if len(fields) > 1 and fields[1]:
            try:
                index = int(fields[1])
            except ValueError:
                if not rows and lineno == 1:  # a header such as "name,index"
                    continue
                log.add(path, "bad_row", f"line {lineno}: index '{fields[1]}' is not an integer")
                continue
        if not name or not normalise_action(name):
            log.add(path, "bad_row", f"line {lineno}: empty category name")
            continue
        if name in seen:
            log.add(path, "duplicate", f"line {lineno}: '{name}' repeated")
            continue
        seen.add(name)
        rows.append((index, name))
    if not rows:
        raise InputError(f"categories file {path}: no category rows")
    indices = [i for i, _ in rows]
    if None not in indices:
        rows.sort(key=lambda r: (r[0], r[1]))
    return [name for _, name in rows]


def resolve_actions(
    cfg: Config,
    *,
    all_mit_v1: bool = False,
    categories_file: Path | None = None,
    problems: ProblemLog | None = None,
) -> tuple[list[str], str]:
    """Choose the action labels of a dictionary build, sorted by name.

    Precedence: `all_mit_v1` (the 339 MiT v1 categories shipped with fedvida), then
    `categories_file`, then ``cfg.dictionary.categories_file``, then the categories file of the
    dataset at ``cfg.data.root`` (``moments_categories.txt`` there or in its ``annotations/``
    folder, as in the MiT v2 download; every category it lists, a superset of any class
    selection, so one dictionary serves every subset of the dataset).

    Returns
    -------
    (actions, source)
        Unique action names sorted like ``DatasetIndex.classes``, and a description of the source.
    """
    if all_mit_v1:
        return sorted(set(mit_v1_categories())), "MiT v1 categories (bundled)"
    path = categories_file or cfg.dictionary.categories_file
    if path is None:
        root = cfg.data.root
        candidates = [root / CATEGORIES_FILE, root / "annotations" / CATEGORIES_FILE]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            raise InputError(
                f"categories file not found: {candidates[0]} (create the dataset, e.g. "
                "`fedvida data demo`, set dictionary.categories_file, or pass --all-mit-v1)"
            )
    names = read_categories_file(Path(path), problems)
    return sorted(names), str(path)
