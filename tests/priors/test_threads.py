"""CPU thread count of the per-version array work, and the ordered thread map."""

from __future__ import annotations

import os
import threading

import pytest

from joindet.priors.threads import MAX_THREADS, default_threads, thread_map


def test_default_threads_follow_the_affinity_capped_and_the_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOINDET_CPU_THREADS", raising=False)
    if hasattr(os, "sched_getaffinity"):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
        assert default_threads() == MAX_THREADS
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3})
        assert default_threads() == 1
    monkeypatch.setenv("JOINDET_CPU_THREADS", "3")
    assert default_threads() == 3


def test_thread_map_keeps_the_order_and_uses_threads() -> None:
    names: set[str] = set()
    barrier = threading.Barrier(3, timeout=10)

    def square(x: int) -> int:
        names.add(threading.current_thread().name)
        if x < 3:
            barrier.wait()  # the first three items run at the same time, or this times out
        return x * x

    assert thread_map(square, range(7), threads=3) == [x * x for x in range(7)]
    assert len(names) == 3
    assert thread_map(square, [5], threads=4) == [25]
