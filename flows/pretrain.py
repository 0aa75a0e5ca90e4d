"""How the pretrain loop's steps run: in this process (``PlainSteps``) or as a Prefect flow.

What runs, and in which order, is ``pipeline.pretrain.drive_pretrain``'s (it asks the run plan,
``pipeline.schedule``). Here: :class:`PlainSteps` calls the stages in this process (mining shards
on a thread pool); :class:`flows.prefect_steps.PrefectSteps` runs them as Prefect tasks on the
chosen task runner, inside ``pretrain_flow``.
"""

from __future__ import annotations

import sys
from typing import Any

from prefect import flow

from joindet.flows.runners import on_threads
from joindet.pipeline import stages
from joindet.pipeline.pretrain import VersionReport, drive_pretrain
from joindet.pipeline.progress import NULL_PROGRESS, Progress
from joindet.pipeline.run_dir import RunDir


class PlainSteps:
    """The stages called directly in this process; init and mining shards on ``threads`` threads.

    ``nproc_per_node > 1`` trains under torchrun (a child process group), as the Prefect flow does.
    """

    def __init__(self, progress: Progress = NULL_PROGRESS, threads: int = 1, nproc_per_node: int = 1) -> None:
        self.progress = progress
        self.threads = max(1, threads)
        self.nproc_per_node = nproc_per_node

    def init_shards(self, run: RunDir, shard_ids: list[int]) -> list[Any]:
        return on_threads(
            lambda s: stages.init_shard(str(run.path), s, progress=self.progress), shard_ids, self.threads
        )

    def init(self, run: RunDir) -> Any:
        return stages.commit_init(run, progress=self.progress)

    def train(self, run: RunDir, end_epoch: int) -> Any:
        if self.nproc_per_node > 1:
            from joindet.flows.torchrun import run_torchrun

            run_torchrun(run.path, end_epoch, self.nproc_per_node)
            return None
        return stages.train(run, end_epoch, progress=self.progress)

    def mine(self, run: RunDir, version: int, shard_ids: list[int]) -> list[Any]:
        return on_threads(
            lambda s: stages.mine_shard(str(run.path), version, s, progress=self.progress), shard_ids, self.threads
        )

    def smooth(self, run: RunDir, version: int) -> Any:
        return stages.smooth(run, version, progress=self.progress)

    def evaluate(self, run: RunDir, version: int) -> dict:
        return stages.evaluate_priors(run, versions=[version])

    def publish(self, run: RunDir, report: VersionReport) -> None:
        pass


@flow(name="joindet-pretrain", validate_parameters=False)
def pretrain_flow(
    run_path: str,
    nproc_per_node: int = 1,
    quiet: bool = False,
    lock_held: bool = False,
    nnodes: int = 1,
    train_on_workers: bool = False,
) -> dict[str, Any]:
    """Prefect flow: pretrain (or resume) the run at ``run_path``; returns ``PretrainReport.to_dict()``.

    ``lock_held``: the caller (the CLI) already holds the run's writer lock; otherwise the flow
    takes it for its whole duration. The task runner is chosen with ``pretrain_flow.with_options``.
    ``train_on_workers``: training runs as ``nnodes`` torchrun agents of ``nproc_per_node``
    processes in the Dask cluster's workers (``flows.torchrun.train_on_cluster``).
    """
    from joindet.flows.prefect_steps import PrefectSteps, label_flow_run
    from joindet.flows.progress_bars import RichProgress

    run = RunDir.open(run_path)
    link = label_flow_run(run)  # tags and the config's main fields, shown in the UI
    if link and not quiet:
        print(f"Prefect flow run: {link}", file=sys.stderr)
    steps = PrefectSteps(
        progress=RichProgress(quiet=quiet),
        nproc_per_node=nproc_per_node,
        nnodes=nnodes,
        train_on_workers=train_on_workers,
    )
    if lock_held:
        return drive_pretrain(run, steps).to_dict()
    with run.lock():
        return drive_pretrain(run, steps).to_dict()
