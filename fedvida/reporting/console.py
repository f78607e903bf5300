"""Terminal output: tables and progress bars (rich), one console for the whole CLI."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

# Piped output (logs, CI) gets 120 columns instead of rich's 80 unless COLUMNS says otherwise.
_PIPED_WIDTH = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 120
console = Console(highlight=False, width=_PIPED_WIDTH)


def print_table(
    title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], caption: str | None = None
) -> None:
    """Print a table; numbers are right-aligned, floats shown with 3 significant decimals."""
    table = Table(title=title, caption=caption, title_justify="left")
    for i, col in enumerate(columns):
        numeric = bool(rows) and isinstance(rows[0][i], int | float)
        table.add_column(col, justify="right" if numeric else "left")
    for row in rows:
        table.add_row(*(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row))
    console.print(table)


class RateColumn(ProgressColumn):
    """Items per second, e.g. ``2.31 clips/s``."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-" if speed is None else f"{speed:.2f} {self.unit}/s")


def rate_progress(unit: str = "clips") -> Progress:
    """A progress bar showing done/total, rate in `unit`/s, elapsed time and the ETA."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(unit),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
