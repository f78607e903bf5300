"""Report kinds of a sweep: one registry, one module per kind.

A sweep file's ``report.kind`` names an entry of `REPORT_KINDS`. A kind may add fields to the
``summary.json`` document (`ReportKind.summarize`), a section to ``report.md``
(`ReportKind.section`) and plots (`ReportKind.plots`); what every sweep shows (the oracle gap,
the per-cell table, the metric per cell) is in `fedvida.reporting.sweep_report` and
`fedvida.reporting.sweep_plots`. Adding a kind = one module with a ``KIND`` and one line here.
Importing this package loads no plotting library (the plots import matplotlib when drawn).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fedvida.sweep import Sweep

Doc = dict[str, Any]  # the summary.json document (`fedvida.reporting.sweep_report.collect`)


@dataclass(frozen=True)
class ReportKind:
    """What one report kind adds to every sweep's report.

    Attributes
    ----------
    name
        The value of ``report.kind`` in a sweep file.
    summarize
        ``summarize(sweep) -> fields`` merged into the summary document (None: nothing).
    section
        ``section(doc) -> markdown lines`` placed before the plots in report.md (None: nothing).
    plots
        ``plots(doc, out_dir) -> {title: PNG path or None}`` (None: no plot of its own).
    """

    name: str
    summarize: Callable[[Sweep], Doc] | None = None
    section: Callable[[Doc], list[str]] | None = None
    plots: Callable[[Doc, Path], dict[str, Path | None]] | None = None


def _registry() -> dict[str, ReportKind]:
    from fedvida.reporting.sweep_kinds import communication, missing_audio, privacy

    kinds = [ReportKind("generic"), privacy.KIND, communication.KIND, missing_audio.KIND]
    return {k.name: k for k in kinds}


REPORT_KINDS: dict[str, ReportKind] = _registry()


def report_kind(name: str) -> ReportKind:
    """The registered kind ``name``.

    Raises
    ------
    ConfigError
        For a name that is not registered (naming the known ones).
    """
    if name not in REPORT_KINDS:
        from fedvida.errors import ConfigError

        raise ConfigError(f"report.kind: unknown '{name}' (known: {', '.join(REPORT_KINDS)})")
    return REPORT_KINDS[name]
