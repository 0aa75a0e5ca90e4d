"""``joindet stage run {init,mine,smooth,train,evaluate} RUN``: one stage alone.

For a stage that failed or must be redone. Each holds the run's writer lock while it writes;
``--force`` on a committed version moves the old one aside (never deletes it). The stages that
shard (init, mine) take the runner options of ``flow run pretrain`` (``cli_options.runner_options``):
their missing shards run on a thread pool here or on a Dask cluster, then init commits v0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from joindet.flows.cli_errors import clean_errors
from joindet.flows.cli_options import (
    emit_json,
    output_options,
    prefect_environment,
    runner_choice,
    runner_options,
    stderr,
    stdout_kept_for_json,
)
from joindet.flows.cli_types import run_argument, version_option
from joindet.flows.progress_bars import RichProgress, format_summary
from joindet.flows.runners import RunnerChoice

STAGES = ("init", "mine", "smooth", "train", "evaluate")


#: Stages whose work is cut in shards that a runner places (threads here, Dask workers).
SHARDED = ("init", "mine")


def shard_runner(run: Any, version: int, choice: RunnerChoice, progress: Any) -> Callable[[list[int]], list] | None:
    """How ``stages.init_priors`` (``version`` 0) or ``stages.mine`` runs the missing shards on
    ``choice``: a Prefect flow mapping the shard task over a Dask task runner, a thread pool of
    ``--threads``, or None (one thread: the stage runs them one after the other)."""
    from joindet.flows.runners import on_threads
    from joindet.pipeline import stages

    if choice.uses_dask:
        return lambda shard_ids: shards_on_dask(str(run.path), version, shard_ids, choice)
    if choice.thread_count() <= 1:
        return None
    if version == 0:
        return lambda ids: on_threads(
            lambda s: stages.init_shard(str(run.path), s, progress), ids, choice.thread_count()
        )
    return lambda ids: on_threads(
        lambda s: stages.mine_shard(str(run.path), version, s, progress), ids, choice.thread_count()
    )


def shards_on_dask(run_path: str, version: int, shard_ids: list[int], choice: RunnerChoice) -> list:
    """Compute shards of ``version`` (0: init) as Prefect tasks on the Dask cluster of ``choice``;
    the workers report to this command's Prefect API. Returns their ``ShardResult`` s in order."""
    from prefect import flow, unmapped

    from joindet.flows.runners import api_for_workers, build_task_runner
    from joindet.flows.tasks import init_shard_task, mine_shard_task

    name = "joindet-init" if version == 0 else "joindet-mine"

    @flow(name=name, task_runner=build_task_runner(choice), validate_parameters=False)
    def shards_flow(run_path: str, version: int, shard_ids: list[int]) -> list:
        if version == 0:
            futures = init_shard_task.map(unmapped(run_path), shard_ids)
        else:
            futures = mine_shard_task.map(unmapped(run_path), unmapped(version), shard_ids)
        return [f.result() for f in futures]

    prefect_environment()
    with api_for_workers(choice):
        return shards_flow(run_path, version, shard_ids)


def set_aside_for_remining(run: Any, version: int, shard_ids: list[int] | None, progress: Any) -> None:
    """``mine --force``: check the checkpoint mining needs, then move the committed version (if
    any) and its staged shards to ``priors/_replaced`` so that every shard is mined again
    (``joindet priors restore`` puts a version back)."""
    from joindet.pipeline.checkpoints import check_checkpoint

    if shard_ids:
        raise click.UsageError("mine --force re-mines every shard of the version; drop --shard")
    if version > 0:
        check_checkpoint(run.checkpoint_path(version - 1))
    if run.store.has_version(version):
        progress.log(f"moved the committed version {version} aside to {run.store.move_aside(version)}")
    moved = run.store.move_staging_aside(version)
    if moved is not None:
        progress.log(f"moved the staged shards of version {version} aside to {moved}")


def run_stage(
    run: Any,
    stage: str,
    version: int | None,
    epoch: int | None,
    shard_ids: list[int] | None,
    force: bool,
    choice: RunnerChoice,
    nproc_per_node: int,
    progress: Any,
) -> dict[str, Any]:
    """Run one stage on ``run`` under its writer lock; returns ``{"stage", "skipped", "summary"}``."""
    from joindet.pipeline import stages
    from joindet.pipeline.schedule import RunPlan

    plan = RunPlan(run)
    with run.lock():
        run.check_checkpoints_agree()  # before any stage works
        if stage == "init":
            runner = shard_runner(run, 0, choice, progress)
            return stages.init_priors(run, progress=progress, force=force, run_shards=runner).to_dict()
        if stage in ("mine", "smooth"):
            version = version if version is not None else plan.next_version()
            if version is None:
                raise click.UsageError(
                    f"every version of {run.path}'s schedule is committed; give --version N (with --force to redo smooth)"
                )
            if stage == "smooth":
                return stages.smooth(run, version, progress=progress, force=force).to_dict()
            if force:
                set_aside_for_remining(run, version, shard_ids, progress)
            runner = shard_runner(run, version, choice, progress)
            return stages.mine(run, version, shard_ids=shard_ids, progress=progress, run_shards=runner).to_dict()
        if stage == "train":
            end = epoch if epoch is not None else plan.next_train_end()
            if nproc_per_node > 1:
                from joindet.flows.torchrun import run_torchrun

                run_torchrun(run.path, end, nproc_per_node)
                return {
                    "stage": "train",
                    "skipped": False,
                    "summary": {"end_epoch": end, "last_checkpoint": run.last_checkpoint()},
                }
            return stages.train(run, end, progress=progress).to_dict()
        if stage == "evaluate":
            if epoch is not None:
                return {"stage": "evaluate", "skipped": False, "summary": stages.evaluate_proposals(run, epoch=epoch)}
            versions = [version] if version is not None else None
            return {"stage": "evaluate", "skipped": False, "summary": stages.evaluate_priors(run, versions=versions)}
    raise click.UsageError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")


def stage_runner(stage: str, overrides: tuple[str, ...], no_prefect: bool, runner: dict[str, Any]) -> RunnerChoice:
    """The runner of ``stage run``'s options, refused where it would be ignored: a cluster or a
    thread count for a stage that does not shard, ``--nnodes`` (training on a cluster is the
    flow's), ``--set`` of anything but the ``cluster.*`` job settings."""
    choice, rest = runner_choice(overrides, no_prefect, **runner)
    if rest:
        raise click.UsageError(
            f"stage run takes --set cluster.KEY=VALUE only (the Slurm/PBS job settings), not {rest[0]!r}; "
            "change the run's configuration with `joindet flow resume RUN --set ...`"
        )
    if stage not in SHARDED and (choice.uses_dask or runner.get("threads") is not None):
        raise click.UsageError(
            f"--cluster/--workers/--dask-address/--threads place the shards of init and mine; {stage} runs in this "
            "process (train: --nproc-per-node)"
        )
    if (runner.get("nnodes") or 1) > 1:
        raise click.UsageError(
            "--nnodes trains over a cluster's nodes within `joindet flow run pretrain` / `flow resume`; "
            "stage run train runs torchrun on this node (--nproc-per-node)"
        )
    return choice


@click.group("stage")
def stage_group() -> None:
    """Single stages, for a stage that failed or must be redone."""


@stage_group.command("run")
@click.argument("stage", type=click.Choice(STAGES))
@run_argument
@version_option("Prior version, 4 or v0004 (mine, smooth, evaluate); default: the next one of the schedule.")
@click.option(
    "--epoch",
    type=click.IntRange(min=0),
    default=None,
    help="train: end epoch (exclusive; default: end of the current block); evaluate: checkpoint epoch.",
)
@click.option(
    "--shard", "shards", type=click.IntRange(min=0), multiple=True, help="mine: only these shards (repeatable)."
)
@click.option(
    "--force",
    is_flag=True,
    help="Redo a committed version (init, smooth) or re-mine every shard (mine); what is replaced is moved aside.",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="cluster.KEY=VALUE",
    help="slurm/pbs: one dask-jobqueue setting of the jobs (queue, account, walltime, memory; repeatable).",
)
@runner_options
@output_options
@clean_errors
def stage_run_cmd(
    stage: str,
    run_path: str,
    version: int | None,
    epoch: int | None,
    shards: tuple[int, ...],
    force: bool,
    overrides: tuple[str, ...],
    no_prefect: bool,
    quiet: bool,
    as_json: bool,
    **runner: Any,
) -> None:
    """Run STAGE alone on RUN: init, mine, smooth, train or evaluate.

    init and mine run their missing shards where the runner options say (as ``flow run
    pretrain``: a thread pool here by default, or a Dask cluster); train takes --nproc-per-node.
    """
    from joindet.pipeline.run_dir import RunDir

    choice = stage_runner(stage, overrides, no_prefect, runner)
    run = RunDir.open(run_path)
    if stage in SHARDED and not quiet:
        stderr(f"{stage}: shards on {choice.describe()}")
    progress = RichProgress(quiet=quiet or as_json)
    with stdout_kept_for_json(as_json):
        result = run_stage(
            run, stage, version, epoch, list(shards) or None, force, choice, choice.nproc_per_node, progress
        )
    if as_json:
        emit_json(result)
        return
    state = "skipped (already done)" if result.get("skipped") else "done"
    click.echo(f"{stage}: {state}")
    if result.get("summary"):
        click.echo(format_summary(stage, result["summary"]))
    if not quiet:
        stderr(f"next: joindet runs status {run.path}")
