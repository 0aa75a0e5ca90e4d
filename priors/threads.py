"""CPU threads for the per-version array work (Box Smooth chunks, churn blocks).

That work runs in the flow's process between two training blocks while the GPUs wait, and it is
numpy on large arrays, which releases the GIL: threads over independent blocks of images give
the speed-up of the cores the process may use, with results equal to one thread's (each block's
result is computed alone and the results are combined in block order).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: Beyond this many threads the per-block work is bound by memory bandwidth, not cores.
MAX_THREADS = 8


def default_threads() -> int:
    """Cores this process may run on (its CPU affinity, which Slurm and cgroup cpusets restrict),
    at most ``MAX_THREADS``; ``JOINDET_CPU_THREADS`` overrides it."""
    forced = os.environ.get("JOINDET_CPU_THREADS")
    if forced:
        return max(1, int(forced))
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_THREADS))


def thread_map(fn: Callable[[T], R], items: Iterable[T], threads: int | None = None) -> list[R]:
    """``[fn(x) for x in items]`` on ``threads`` threads (None: ``default_threads()``), in order."""
    items = list(items)
    threads = default_threads() if threads is None else threads
    if threads <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=min(threads, len(items))) as pool:
        return list(pool.map(fn, items))
