"""The rich Progress implementation: bars per thread, summaries, quiet mode."""

from __future__ import annotations

import io
import threading

from rich.console import Console

from joindet.flows.progress_bars import RichProgress, format_summary
from joindet.pipeline.progress import Progress


def _console() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=False, width=120), buf


def test_it_satisfies_the_progress_protocol_and_prints_a_summary() -> None:
    console, buf = _console()
    p: Progress = RichProgress(console=console)
    p.start("mine v0002 shard 0", 3)
    for _ in range(3):
        p.advance(1, loss=0.25)
    p.end({"images": 3, "seconds": 0.123456})
    p.log("skipped image 7: truncated file")
    out = buf.getvalue()
    assert "mine v0002 shard 0: images=3 seconds=0.1235" in out
    assert "skipped image 7" in out


def test_quiet_draws_no_summary_but_keeps_them(capsys) -> None:
    console, buf = _console()
    p = RichProgress(console=console, quiet=True)
    p.start("train", 2)
    p.advance(2)
    p.end({"loss": 1.5})
    p.log("note")
    assert buf.getvalue() == ""
    assert p.summaries == [("train", {"loss": 1.5})]
    assert "note" in capsys.readouterr().err


def test_each_thread_advances_its_own_task() -> None:
    console, buf = _console()
    p = RichProgress(console=console)
    errors: list[BaseException] = []

    def shard(i: int) -> None:
        try:
            p.start(f"shard {i}", 5)
            for _ in range(5):
                p.advance()
            p.end({"shard": i})
        except BaseException as exc:  # pragma: no cover - surfaced by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=shard, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(name for name, _ in p.summaries) == [f"shard {i}" for i in range(4)]
    assert p._running == 0


def test_advance_without_start_is_ignored() -> None:
    p = RichProgress(console=_console()[0])
    p.advance(3)
    p.end(None)
    assert p.summaries == [("stage", None)]


def test_format_summary() -> None:
    assert format_summary("smooth", None) == "smooth: done"
    assert format_summary("smooth", {"boxes": 12, "churn": 0.333333}) == "smooth: boxes=12 churn=0.3333"
