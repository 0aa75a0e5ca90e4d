"""Progress reporting from stages to whoever draws it (the CLI's bars, a log, nothing).

Stages call ``progress.start(...)``, ``progress.advance(...)`` and ``progress.end(...)`` on the
object they are given; ``NULL_PROGRESS`` ignores everything. The CLI supplies an implementation
that draws rich progress bars; tests may supply a recorder.
"""

from __future__ import annotations

from typing import Any, Protocol


class Progress(Protocol):
    def start(self, task: str, total: int | None, unit: str = "img") -> None:
        """A unit of work named ``task`` begins; ``total`` items are expected (None: unknown)."""

    def advance(self, n: int = 1, **metrics: Any) -> None:
        """``n`` more items are done; ``metrics`` (loss=..., lr=...) may be shown beside the bar."""

    def end(self, summary: dict[str, Any] | None = None) -> None:
        """The current task is finished; ``summary`` holds its headline figures."""

    def log(self, message: str) -> None:
        """A one-line message for the user (a warning, a skipped image)."""


class NullProgress:
    """Progress that reports nothing."""

    def start(self, task: str, total: int | None, unit: str = "img") -> None:
        pass

    def advance(self, n: int = 1, **metrics: Any) -> None:
        pass

    def end(self, summary: dict[str, Any] | None = None) -> None:
        pass

    def log(self, message: str) -> None:
        pass


class RecordingProgress(NullProgress):
    """Keeps every event in ``events`` (for tests and for logs written beside a stage)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def start(self, task: str, total: int | None, unit: str = "img") -> None:
        self.events.append(("start", (task, total)))

    def advance(self, n: int = 1, **metrics: Any) -> None:
        self.events.append(("advance", (n, metrics)))

    def end(self, summary: dict[str, Any] | None = None) -> None:
        self.events.append(("end", summary))

    def log(self, message: str) -> None:
        self.events.append(("log", message))


NULL_PROGRESS = NullProgress()
