"""Thin Prefect tasks around the pipeline stages (no logic here beyond the call).

Caching is off (``NO_CACHE``): resume is decided by the run's store (committed versions, staged
shards, checkpoints), never by Prefect's result cache, and a RunDir or a progress object is not
something to hash. ``init_shard_task`` and ``mine_shard_task`` take only plain values so a Dask worker in another
process can run it; the stage caches its loaded model per (process, checkpoint).
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from joindet.pipeline import stages
from joindet.pipeline.progress import NULL_PROGRESS, Progress

_TASK = {"cache_policy": NO_CACHE, "persist_result": False}


@task(name="init_shard", task_run_name="init v0 shard {shard_id}", **_TASK)
def init_shard_task(run_path: str, shard_id: int, progress: Progress | None = None) -> Any:
    return stages.init_shard(run_path, shard_id, progress=progress or NULL_PROGRESS)


@task(name="init_priors", **_TASK)
def init_priors_task(run: Any, progress: Progress = NULL_PROGRESS) -> Any:
    """Commit v0 from its staged shards (``init_shard_task`` computes them)."""
    return stages.commit_init(run, progress=progress)


@task(name="train", **_TASK)
def train_task(run: Any, end_epoch: int, progress: Progress = NULL_PROGRESS) -> Any:
    return stages.train(run, end_epoch, progress=progress)


@task(name="train-torchrun", **_TASK)
def train_torchrun_task(run_path: str, end_epoch: int, nproc_per_node: int) -> None:
    from joindet.flows.torchrun import run_torchrun

    run_torchrun(run_path, end_epoch, nproc_per_node)


@task(name="train-cluster", **_TASK)
def train_cluster_task(run_path: str, end_epoch: int, nnodes: int, nproc_per_node: int) -> None:
    """One torchrun agent per node in the flow's Dask workers (runs in the flow's process)."""
    from joindet.flows.dask_runner import current_client
    from joindet.flows.torchrun import train_on_cluster

    client = current_client()
    if client is None:
        raise RuntimeError("training on the cluster's workers needs the flow to run on a Dask task runner")
    train_on_cluster(client, run_path, end_epoch, nnodes, nproc_per_node)


@task(name="mine_shard", task_run_name="mine v{version} shard {shard_id}", **_TASK)
def mine_shard_task(run_path: str, version: int, shard_id: int, progress: Progress | None = None) -> Any:
    return stages.mine_shard(run_path, version, shard_id, progress=progress or NULL_PROGRESS)


@task(name="smooth", **_TASK)
def smooth_task(run: Any, version: int, progress: Progress = NULL_PROGRESS) -> Any:
    return stages.smooth(run, version, progress=progress)


@task(name="evaluate_priors", **_TASK)
def evaluate_priors_task(run: Any, version: int) -> dict:
    return stages.evaluate_priors(run, versions=[version])


@task(name="evaluate_proposals", **_TASK)
def evaluate_proposals_task(run: Any, epoch: int | None = None) -> dict:
    return stages.evaluate_proposals(run, epoch=epoch)
