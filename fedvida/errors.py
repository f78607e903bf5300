"""Errors with one-line messages, and a recorder for bad inputs that must not stop a run."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path


class FedvidaError(Exception):
    """An error the CLI reports as one line (no traceback) and exits non-zero."""


class ConfigError(FedvidaError):
    """An invalid config file, field or override."""


class InputError(FedvidaError):
    """A bad input file (corrupt, truncated, missing, wrong format); names the file."""


def printable(text: str) -> str:
    r"""``text`` with the lone surrogates of undecodable file-name bytes (`os.fsdecode`) shown as
    ``\xNN``, so that it can be printed and written as UTF-8.

    Examples
    --------
    >>> printable("caf\udce9.mp4")
    'caf\\xe9.mp4'
    """
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


@dataclass(slots=True)
class Problem:
    """One recorded bad input: which file, which kind of problem, and a one-line detail."""

    path: str
    reason: str
    detail: str = ""

    def line(self) -> str:
        return f"{self.path}: {self.reason}" + (f" ({self.detail})" if self.detail else "")


@dataclass
class ProblemLog:
    """Collects bad inputs so that a run reports them and goes on.

    Examples
    --------
    >>> log = ProblemLog()
    >>> log.add("a.mp4", "missing", "listed in trainingSet.csv")
    >>> log.summary()
    '1 problem(s): missing=1; e.g. a.mp4: missing (listed in trainingSet.csv)'
    """

    problems: list[Problem] = field(default_factory=list)

    def add(self, path: str | Path, reason: str, detail: str = "") -> None:
        """Record a problem; undecodable file-name bytes are shown as ``\\xNN`` escapes."""
        self.problems.append(Problem(printable(str(path)), reason,
                                     printable(detail.splitlines()[0]) if detail else ""))

    def extend(self, other: ProblemLog) -> None:
        self.problems.extend(other.problems)

    def __len__(self) -> int:
        return len(self.problems)

    def counts(self) -> dict[str, int]:
        return dict(Counter(p.reason for p in self.problems))

    def summary(self, examples: int = 3) -> str:
        if not self.problems:
            return "no problems"
        counts = ", ".join(f"{k}={v}" for k, v in sorted(self.counts().items()))
        first = "; ".join(p.line() for p in self.problems[:examples])
        return f"{len(self.problems)} problem(s): {counts}; e.g. {first}"

    def write_jsonl(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w") as fh:
            for p in self.problems:
                fh.write(json.dumps(asdict(p)) + "\n")
