"""``joindet stage run {init,mine,smooth,train,evaluate} RUN``: one stage alone.

For a stage that failed or must be redone. Each holds the run's writer lock while it writes;
``--force`` on a committed version moves the old one aside (never deletes it).
"""

from __future__ import annotations

from typing import Any

import click

from joindet.flows.cli_errors import clean_errors
from joindet.flows.cli_options import emit_json, output_options, prefect_environment, stderr
from joindet.flows.cli_types import run_argument, version_option
from joindet.flows.progress_bars import RichProgress, format_summary
from joindet.flows.runners import RunnerChoice

STAGES = ("init", "mine", "smooth", "train", "evaluate")


def mine_with_dask(run: Any, version: int, shard_ids: list[int] | None, choice: RunnerChoice) -> dict[str, Any]:
    """Mine the missing shards of ``version`` through a Prefect flow on a Dask task runner."""
    from prefect import flow, unmapped

    from joindet.flows.runners import build_task_runner
    from joindet.flows.tasks import mine_shard_task
    from joindet.pipeline.schedule import RunPlan, quarantine_failures

    plan = RunPlan(run)
    todo = plan.missing_shards(version, shard_ids)
    reused = sorted(plan.done_shards(version))

    @flow(name="joindet-mine", task_runner=build_task_runner(choice), validate_parameters=False)
    def mine_flow(run_path: str, version: int, shard_ids: list[int]) -> list[dict[str, Any]]:
        futures = mine_shard_task.map(unmapped(run_path), unmapped(version), shard_ids)
        return [f.result().to_dict() for f in futures]

    prefect_environment()
    results = mine_flow(str(run.path), version, todo) if todo else []
    failed = [tuple(row) for r in results for row in r.get("failed", [])]
    quarantine_failures(run, failed)
    return {"version": version, "mined": todo, "reused": reused, "failed": len(failed)}


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
            return stages.init_priors(run, progress=progress, force=force).to_dict()
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
            if choice.uses_dask:
                return {"stage": "mine", "skipped": False, "summary": mine_with_dask(run, version, shard_ids, choice)}
            return stages.mine(run, version, shard_ids=shard_ids, progress=progress).to_dict()
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
@click.option("--workers", type=click.IntRange(min=1), default=None, help="mine: local Dask cluster of N processes.")
@click.option("--dask-address", default=None, metavar="tcp://HOST:PORT", help="mine: an existing Dask cluster.")
@click.option(
    "--nproc-per-node", type=click.IntRange(min=1), default=1, show_default=True, help="train: torchrun processes."
)
@output_options
@clean_errors
def stage_run_cmd(
    stage: str,
    run_path: str,
    version: int | None,
    epoch: int | None,
    shards: tuple[int, ...],
    force: bool,
    workers: int | None,
    dask_address: str | None,
    nproc_per_node: int,
    quiet: bool,
    as_json: bool,
) -> None:
    """Run STAGE alone on RUN: init, mine, smooth, train or evaluate."""
    from joindet.pipeline.run_dir import RunDir

    choice = RunnerChoice(workers=workers, dask_address=dask_address)
    run = RunDir.open(run_path)
    progress = RichProgress(quiet=quiet or as_json)
    result = run_stage(run, stage, version, epoch, list(shards) or None, force, choice, nproc_per_node, progress)
    if as_json:
        emit_json(result)
        return
    state = "skipped (already done)" if result.get("skipped") else "done"
    click.echo(f"{stage}: {state}")
    if result.get("summary"):
        click.echo(format_summary(stage, result["summary"]))
    if not quiet:
        stderr(f"next: joindet runs status {run.path}")
