"""Per-round checkpoints of the global model (safetensors), the last k kept, for resume.

``runs/<name>/checkpoints/<method>/round_0007.safetensors`` holds the global shared arrays
(``model/<key>``) and the server optimizer state (``strategy/<key>``, FedAdam's moments), with
the round, method and strategy in the safetensors metadata.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from fedvida.errors import InputError

_NAME = re.compile(r"round_(\d{4,})\.safetensors$")


@dataclass
class Checkpoint:
    """A loaded checkpoint."""

    path: Path
    server_round: int
    method: str
    strategy: str
    model: dict[str, np.ndarray]
    strategy_state: dict[str, np.ndarray]


def checkpoint_dir(run_dir: Path, method: str) -> Path:
    """Folder of one method's checkpoints inside a run folder."""
    return Path(run_dir) / "checkpoints" / method


def save_checkpoint(
    folder: Path,
    server_round: int,
    method: str,
    strategy: str,
    model: dict[str, np.ndarray],
    strategy_state: dict[str, np.ndarray],
    keep: int,
    protect: Iterable[int] = (),
) -> Path:
    """Write ``round_NNNN.safetensors`` atomically, then delete all but the newest ``keep``.

    Rounds in ``protect`` are never deleted (the round a run reports, chosen on validation,
    `fedvida.reporting.runlog.selected_line`: its weights stay with its metrics).
    """
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"model/{k}": np.ascontiguousarray(v) for k, v in model.items()}
    tensors.update({f"strategy/{k}": np.ascontiguousarray(v) for k, v in strategy_state.items()})
    path = folder / f"round_{server_round:04d}.safetensors"
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={
        "round": str(server_round), "method": method, "strategy": strategy,
    })
    os.replace(tmp, path)
    kept = set(protect)
    for old in list_checkpoints(folder)[:-keep]:
        if int(_NAME.search(old.name).group(1)) not in kept:  # type: ignore[union-attr]
            old.unlink(missing_ok=True)
    return path


def list_checkpoints(folder: Path) -> list[Path]:
    """Checkpoint files of a folder, oldest round first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.search(p.name))]
    return [p for _, p in sorted(found)]


def load_checkpoint(path: Path) -> Checkpoint:
    """Read one checkpoint; a corrupt file raises `InputError` naming it."""
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as fh:
            meta = fh.metadata() or {}
        tensors = load_file(str(path))
        server_round = int(meta["round"])
    except Exception as exc:  # safetensors raises several types for a damaged file
        raise InputError(f"{path}: unreadable checkpoint ({exc})") from None
    return Checkpoint(
        path=path,
        server_round=server_round,
        method=meta.get("method", ""),
        strategy=meta.get("strategy", ""),
        model={k[6:]: v for k, v in tensors.items() if k.startswith("model/")},
        strategy_state={k[9:]: v for k, v in tensors.items() if k.startswith("strategy/")},
    )


def latest_checkpoint(folder: Path) -> Checkpoint | None:
    """The newest readable checkpoint of a folder (a damaged newest one falls back to older)."""
    for path in reversed(list_checkpoints(folder)):
        try:
            return load_checkpoint(path)
        except InputError:
            continue
    return None
