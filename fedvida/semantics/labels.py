"""Action label lists for the dictionary: MiT categories files and name normalisation."""

from __future__ import annotations

import re
from pathlib import Path

from fedvida.config import Config
from fedvida.data.mit import read_categories
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
    """Read a categories file with the dataset loader's reader; an empty one is an error.

    Raises
    ------
    InputError
        When the file is missing or unreadable or holds no usable row.
    """
    names = read_categories(path, problems if problems is not None else ProblemLog())
    if not names:
        raise InputError(f"categories file {path}: no category rows")
    return names


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
