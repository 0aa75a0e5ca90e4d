"""A rich implementation of ``pipeline.progress.Progress``: bars with items/s and ETA.

Stages report ``start``/``advance``/``end``/``log``; this draws one bar per running task (several
mining shards may run at once in threads, so the current task is tracked per thread) and prints a
one-line summary of each finished task. ``quiet=True`` draws nothing but log lines go to stderr.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import (
    Progress as RichBars,
)
from rich.text import Text


class RateColumn(ProgressColumn):
    """Items per second of a task, with its unit (``12.3 img/s``)."""

    def render(self, task: Task) -> Text:
        unit = task.fields.get("unit", "it")
        speed = task.finished_speed or task.speed
        return Text("-" if speed is None else f"{speed:.1f} {unit}/s", style="progress.data.speed")


def format_summary(task: str, summary: dict[str, Any] | None) -> str:
    """``task: key=value key=value`` with floats rounded to 4 significant digits."""
    if not summary:
        return f"{task}: done"
    parts = []
    for key, value in summary.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        parts.append(f"{key}={value}")
    return f"{task}: " + " ".join(parts)


class RichProgress:
    """Progress drawn with rich on ``console`` (stderr by default, so ``--json`` stdout stays clean)."""

    def __init__(self, console: Console | None = None, quiet: bool = False) -> None:
        self.console = console or Console(stderr=True)
        self.quiet = quiet
        self._bars = RichBars(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            RateColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[metrics]}"),
            console=self.console,
            transient=True,
        )
        self._lock = threading.Lock()
        self._local = threading.local()
        self._running = 0
        self.summaries: list[tuple[str, dict[str, Any] | None]] = []

    def _current(self) -> tuple[str, Any] | None:
        return getattr(self._local, "task", None)

    def start(self, task: str, total: int | None, unit: str = "img") -> None:
        with self._lock:
            task_id = None
            if not self.quiet:
                if self._running == 0:
                    self._bars.start()
                task_id = self._bars.add_task(task, total=total, unit=unit, metrics="")
                self._running += 1
            self._local.task = (task, task_id)

    def advance(self, n: int = 1, **metrics: Any) -> None:
        current = self._current()
        if current is None or current[1] is None:
            return
        shown = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
        with self._lock:
            if metrics:
                self._bars.update(current[1], advance=n, metrics=shown)
            else:
                self._bars.update(current[1], advance=n)

    def end(self, summary: dict[str, Any] | None = None) -> None:
        current = self._current()
        self._local.task = None
        name = current[0] if current else "stage"
        with self._lock:
            self.summaries.append((name, summary))
            if current is not None and current[1] is not None:
                self._bars.remove_task(current[1])
                self._running -= 1
                if self._running == 0:
                    self._bars.stop()
            if not self.quiet:
                self.console.print(format_summary(name, summary), highlight=False)

    def log(self, message: str) -> None:
        with self._lock:
            if self.quiet:
                print(message, file=sys.stderr)
            else:
                self.console.print(message, highlight=False, markup=False)
