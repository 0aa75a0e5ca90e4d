"""The pretrain flow's steps as Prefect tasks: states, task runs and artifacts show in the UI.

Mining maps ``mine_shard_task`` over the flow's task runner (threads, or Dask processes that
receive only the run path, version and shard id). Training runs in the flow's process, under
torchrun as its child, or as torchrun agents inside the Dask workers (``train_on_workers``). Progress bars follow the shards only on the
thread runner, where the progress object lives in the same process.
"""

from __future__ import annotations

import re
from typing import Any

from prefect import unmapped
from prefect.artifacts import create_table_artifact
from prefect.context import FlowRunContext
from prefect.task_runners import ThreadPoolTaskRunner

from joindet.flows import tasks
from joindet.flows.reports import version_table
from joindet.pipeline.pretrain import VersionReport
from joindet.pipeline.progress import NULL_PROGRESS, Progress
from joindet.pipeline.run_dir import RunDir


def artifact_key(run: RunDir, version: int) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes: ``<run-name>-v0002``."""
    name = re.sub(r"[^a-z0-9-]+", "-", run.path.name.lower()).strip("-") or "run"
    return f"{name}-v{version:04d}"


class PrefectSteps:
    """Each stage a Prefect task of the current flow run."""

    def __init__(
        self,
        progress: Progress = NULL_PROGRESS,
        nproc_per_node: int = 1,
        nnodes: int = 1,
        train_on_workers: bool = False,
    ) -> None:
        self.progress = progress
        self.nproc_per_node = nproc_per_node
        self.nnodes = nnodes
        self.train_on_workers = train_on_workers

    def init(self, run: RunDir) -> Any:
        return tasks.init_priors_task(run, progress=self.progress)

    def train(self, run: RunDir, end_epoch: int) -> Any:
        if self.train_on_workers:
            return tasks.train_cluster_task(str(run.path), end_epoch, self.nnodes, self.nproc_per_node)
        if self.nproc_per_node > 1:
            return tasks.train_torchrun_task(str(run.path), end_epoch, self.nproc_per_node)
        return tasks.train_task(run, end_epoch, progress=self.progress)

    def mine(self, run: RunDir, version: int, shard_ids: list[int]) -> list[Any]:
        ctx = FlowRunContext.get()
        in_process = ctx is None or isinstance(ctx.task_runner, ThreadPoolTaskRunner)
        progress = self.progress if in_process else None
        futures = tasks.mine_shard_task.map(unmapped(str(run.path)), unmapped(version), shard_ids, unmapped(progress))
        return [f.result() for f in futures]

    def smooth(self, run: RunDir, version: int) -> Any:
        return tasks.smooth_task(run, version, progress=self.progress)

    def evaluate(self, run: RunDir, version: int) -> dict:
        return tasks.evaluate_priors_task(run, version)

    def publish(self, run: RunDir, report: VersionReport) -> None:
        table = version_table(report.version, report.statistics, report.metrics)
        if not table:
            return
        create_table_artifact(
            table=table,
            key=artifact_key(run, report.version),
            description=f"Prior version v{report.version:04d} of {run.path}: statistics and, with ground truth, AR/AP.",
        )
