"""``joindet flow run pretrain|finetune`` and ``joindet flow resume RUN``."""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any

import click

from joindet.flows.cli_errors import clean_errors
from joindet.flows.cli_options import (
    emit_json,
    output_options,
    prefect_environment,
    quiet_prefect,
    runner_choice,
    runner_options,
    set_option,
    stderr,
    stdout_kept_for_json,
)
from joindet.flows.cli_types import data_overrides, dataset_options
from joindet.flows.reports import format_report, numeric_leaves
from joindet.flows.runners import RunnerChoice, resolved_shards, worker_count


def default_run_dir(dataset: str, preset: str, now: _dt.datetime | None = None) -> Path:
    """``runs/<dataset>-<preset>-<YYYYmmdd-HHMMSS>`` under the current directory."""
    stamp = (now or _dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{dataset}-{preset}-{stamp}"


def execute_pretrain(run: Any, choice: RunnerChoice, quiet: bool = False, use_prefect: bool = True) -> dict[str, Any]:
    """Take the run's writer lock (refused clearly when another writer holds it), then pretrain
    on the runner ``choice`` describes. Returns ``PretrainReport.to_dict()``."""
    quiet_prefect(quiet)
    from joindet.flows.pretrain import PlainSteps, pretrain_flow
    from joindet.flows.progress_bars import RichProgress
    from joindet.flows.torchrun import record_scale, scale_summary
    from joindet.pipeline.pretrain import drive_pretrain
    from joindet.pipeline.schedule import RunPlan, check_resumable

    with run.lock():
        check_resumable(run)  # before any stage works: damaged versions, foreign checkpoints
        scale = scale_summary(
            run.config.train.batch_size, choice.train_nodes, choice.nproc_per_node, float(run.config.model.lr)
        )
        record_scale(run.path, scale)
        if not quiet:
            stderr(
                f"training: world size {scale['world_size']} ({scale['nnodes']} node(s) x {scale['nproc_per_node']} "
                f"process(es)), batch {scale['batch_per_process']} per process = global batch {scale['global_batch']}, "
                f"lr {scale['lr']:g} kept as configured whatever the global batch"
            )
        # A finished run (its store and checkpoints say so) is reported without starting Prefect,
        # whose temporary server costs more than the answer; the plain steps all skip.
        if not use_prefect or RunPlan(run).status().complete:
            steps = PlainSteps(
                RichProgress(quiet=quiet), threads=choice.thread_count(), nproc_per_node=choice.nproc_per_node
            )
            return drive_pretrain(run, steps).to_dict()
        prefect_environment()
        from joindet.flows.runners import api_for_workers, build_task_runner

        configured = pretrain_flow.with_options(task_runner=build_task_runner(choice))
        with api_for_workers(choice):
            return configured(
                run_path=str(run.path),
                nproc_per_node=choice.nproc_per_node,
                nnodes=choice.train_nodes,
                train_on_workers=choice.train_on_workers,
                quiet=quiet,
                lock_held=True,
            )


def _finish(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(report)
    else:
        click.echo("\n".join(format_report(report)))


@click.group("flow")
def flow_group() -> None:
    """Whole pipelines: pretrain (init, train, mine, smooth, evaluate) and finetune; resume."""


@flow_group.group("run")
def flow_run() -> None:
    """Start (or continue) a flow."""


@flow_run.command("pretrain")
@dataset_options
@click.option("--preset", default="tiny", show_default=True, help="Run preset: tiny, paper, paper-single-scale.")
@click.option(
    "--run-dir", default=None, type=click.Path(), help="Run directory (default: runs/<dataset>-<preset>-<timestamp>)."
)
@click.option(
    "--shards",
    type=click.IntRange(min=1),
    default=None,
    help="Shards of init and of each mined version (mine.shards); default: the preset's, at least one per worker.",
)
@click.option("--force", is_flag=True, help="Replace the configuration of an existing run directory (where safe).")
@set_option
@runner_options
@output_options
@clean_errors
def pretrain_cmd(
    dataset: str,
    data_root: str | None,
    annotations: str | None,
    preset: str,
    run_dir: str | None,
    shards: int | None,
    force: bool,
    overrides: tuple[str, ...],
    no_prefect: bool,
    quiet: bool,
    as_json: bool,
    **runner: Any,
) -> None:
    """Pretrain a detector without labels; re-running the same command resumes it."""
    from joindet.pipeline.config import make_config
    from joindet.pipeline.run_dir import RunDir

    choice, overrides = runner_choice(overrides, no_prefect, **runner)
    extra = data_overrides(data_root, annotations)
    extra += [f"mine.shards={shards}"] if shards else []
    cfg = make_config(preset, dataset, list(overrides) + extra)
    explicit = any(item.partition("=")[0].strip() == "mine.shards" for item in list(overrides) + extra)
    # saved resolved in run.json: at least one shard per worker unless the user chose the count
    cfg.mine.shards = resolved_shards(cfg.mine.shards, explicit, None if explicit else worker_count(choice))
    if cfg.data.root:
        # Workers on other machines open the data root too: never a path relative to this shell.
        cfg.data.root = os.path.abspath(cfg.data.root)
    path = (Path(run_dir) if run_dir else default_run_dir(dataset, preset)).absolute()
    from joindet.pipeline.ssl.stage import plan_backbone_pretrain

    plan_backbone_pretrain(cfg, path)  # model.backbone_pretrain: the weights file the run trains first
    if not quiet:
        stderr(f"run directory: {path}  (init and mining on {choice.describe()}, {cfg.mine.shards} shards)")
    with RunDir.writer_lock(path):  # held from before run.json is touched to the end of the flow
        run = RunDir.create(path, cfg, force=force)
        with stdout_kept_for_json(as_json):
            report = execute_pretrain(run, choice, quiet, not no_prefect)
    _finish(report, as_json)


@flow_group.command("resume")
@click.argument("run_path", metavar="RUN", type=click.Path())
@click.option(
    "--force", is_flag=True, help="Accept a changed configuration (never a changed dataset once priors exist)."
)
@set_option
@runner_options
@output_options
@clean_errors
def resume_cmd(
    run_path: str,
    force: bool,
    overrides: tuple[str, ...],
    no_prefect: bool,
    quiet: bool,
    as_json: bool,
    **runner: Any,
) -> None:
    """Continue RUN (a pretrain or a finetune run) with its own resolved config: finished stages
    are skipped by checking the store and the checkpoints."""
    from joindet.pipeline.config import RunConfig, apply_overrides
    from joindet.pipeline.run_dir import RunDir

    choice, overrides = runner_choice(overrides, no_prefect, **runner)
    existing = RunDir.open(Path(run_path).absolute())
    cfg = RunConfig.from_dict(existing.config.to_dict())
    apply_overrides(cfg, list(overrides))
    record = existing.path / "finetune.json"
    if record.is_file():  # a finetune run: continue it from its own last checkpoint and init
        init = json.loads(record.read_text(encoding="utf-8")).get("init_checkpoint")
        _run_finetune(existing.path, init, cfg, no_prefect, quiet, as_json)
        return
    # Re-creating with the run's own config re-opens its dataset: a changed dataset (fingerprint)
    # or a changed config is refused unless --force says it is safe.
    with RunDir.writer_lock(existing.path):  # held from before run.json is touched to the end of the flow
        run = RunDir.create(existing.path, cfg, force=force)
        with stdout_kept_for_json(as_json):
            report = execute_pretrain(run, choice, quiet, not no_prefect)
    _finish(report, as_json)


@flow_run.command("finetune")
@click.option(
    "--init",
    "init_checkpoint",
    default=None,
    type=click.Path(exists=True, dir_okay=False),
    help="Pretrained checkpoint (RUN/checkpoints/epoch-NNNN.pt); omit for the backbone-only baseline.",
)
@dataset_options
@click.option("--preset", default="tiny", show_default=True, help="Run preset: tiny, paper, paper-single-scale.")
@click.option(
    "--fraction",
    type=click.FloatRange(min=0, max=1, min_open=True),
    default=None,
    help="Share of the labelled train split to use (finetune.fraction), e.g. 0.01.",
)
@click.option("--seed", type=int, default=None, help="Seed of the labelled subset (finetune.seed).")
@click.option(
    "--run-dir",
    default=None,
    type=click.Path(),
    help="Run directory (default: runs/finetune-<dataset>-<preset>-<timestamp>).",
)
@click.option("--out-dir", default=None, type=click.Path(), hidden=True)  # the old name of --run-dir
@set_option
@click.option("--no-prefect", is_flag=True, help="Run in this process without Prefect.")
@output_options
@clean_errors
def finetune_cmd(
    init_checkpoint: str | None,
    dataset: str,
    data_root: str | None,
    annotations: str | None,
    preset: str,
    fraction: float | None,
    seed: int | None,
    run_dir: str | None,
    out_dir: str | None,
    overrides: tuple[str, ...],
    no_prefect: bool,
    quiet: bool,
    as_json: bool,
) -> None:
    """Finetune a pretrained checkpoint on labelled data and report COCO AP; re-running resumes."""
    from joindet.pipeline.config import make_config

    extra = data_overrides(data_root, annotations)
    extra += [f"finetune.fraction={fraction}"] if fraction is not None else []
    extra += [f"finetune.seed={seed}"] if seed is not None else []
    cfg = make_config(preset, dataset, list(overrides) + extra)
    run_dir = run_dir or out_dir
    path = (Path(run_dir) if run_dir else default_run_dir(f"finetune-{dataset}", preset)).absolute()
    if not quiet:
        stderr(f"finetune directory: {path}")
    _run_finetune(path, init_checkpoint, cfg, no_prefect, quiet, as_json)


def _run_finetune(path: Path, init: str | None, cfg: Any, no_prefect: bool, quiet: bool, as_json: bool) -> None:
    """Finetune into ``path`` (created or resumed) and print its metrics and what to look at next."""
    if no_prefect:
        from joindet.flows.finetune import run_finetune
        from joindet.flows.progress_bars import RichProgress

        result = run_finetune(path, init, cfg, RichProgress(quiet=quiet))
    else:
        quiet_prefect(quiet)
        from joindet.flows.finetune import finetune_flow

        result = finetune_flow(out_dir=str(path), init_checkpoint=init, config=cfg.to_dict(), quiet=quiet)
    if as_json:
        emit_json(result)
        return
    from joindet.flows.progress_bars import format_summary

    click.echo(
        format_summary(
            "finetune", numeric_leaves(result.get("summary", {}).get("metrics", {})) or result.get("summary")
        )
    )
    click.echo(f"Next:\n  joindet runs status {path}\n  ls {path}/metrics")
