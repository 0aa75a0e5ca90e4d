"""Task runners for mining shards: local threads (default), a local Dask cluster, an existing one.

Every runner executes the same ``mine_shard(run_path, version, shard_id)`` calls, and shards are
written to the run directory by whoever computes them, so results do not depend on the runner.
A Dask cluster therefore needs the run directory on storage that every worker can read and write.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prefect.task_runners import TaskRunner


class RunnerError(ValueError):
    """Task-runner options that cannot be combined or used."""


@dataclass(frozen=True)
class RunnerChoice:
    """What the user asked for: ``workers`` local Dask processes, or an existing ``dask_address``.

    ``threads`` caps the thread pool of the default runner (None: one thread per CPU core).
    """

    workers: int | None = None
    dask_address: str | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.workers is not None and self.dask_address is not None:
            raise RunnerError(
                "--workers starts a local Dask cluster and --dask-address joins an existing one; give only one of them."
            )
        if self.workers is not None and self.workers < 1:
            raise RunnerError(f"--workers {self.workers}: give at least 1 worker process.")
        if self.dask_address is not None and "://" not in self.dask_address:
            raise RunnerError(
                f"--dask-address {self.dask_address!r} is not an address; use the scheduler's tcp://HOST:PORT."
            )

    @property
    def uses_dask(self) -> bool:
        return self.workers is not None or self.dask_address is not None

    def describe(self) -> str:
        if self.dask_address is not None:
            return f"Dask cluster at {self.dask_address}"
        if self.workers is not None:
            return f"local Dask cluster of {self.workers} process{'es' if self.workers > 1 else ''}"
        return f"local threads ({self.thread_count()})"

    def thread_count(self) -> int:
        return self.threads or max(1, os.cpu_count() or 1)


def build_task_runner(choice: RunnerChoice) -> TaskRunner:
    """The Prefect task runner for ``choice`` (prefect-dask imported only when Dask is asked for)."""
    from prefect.task_runners import ThreadPoolTaskRunner

    if not choice.uses_dask:
        return ThreadPoolTaskRunner(max_workers=choice.thread_count())
    from prefect_dask import DaskTaskRunner

    if choice.dask_address is not None:
        return DaskTaskRunner(address=choice.dask_address)
    # One single-threaded process per worker: torch inside each worker already uses the cores,
    # and separate processes are what a multi-machine cluster looks like.
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": choice.workers,
            "threads_per_worker": 1,
            "processes": True,
            "dashboard_address": None,
        }
    )
