"""``joindet runs status RUN``: the schedule with done / staged / pending / damaged, and the next
command; ``joindet runs verify RUN``: every file of the run checked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from joindet.flows.cli_errors import clean_errors
from joindet.flows.cli_light import light
from joindet.flows.cli_options import emit_json

_STYLE = {"done": "green", "staged": "yellow", "pending": "dim", "failed": "red", "damaged": "red"}


def with_failure(status: dict[str, Any], failure: dict[str, Any] | None) -> dict[str, Any]:
    """Mark the step the last flow run failed in (unless the store shows it done since)."""
    status["last_failure"] = failure
    if failure:
        for e in status["entries"]:
            if e["name"] == failure["step"] and e["state"] != "done":
                e["state"] = "failed"
                e["detail"] = (e.get("detail", "") + " " + failure["error"]).strip()
    return status


def status_table(status: dict[str, Any]) -> Table:
    """A rich table of ``RunStatus.to_dict()``: one row per schedule entry."""
    table = Table(title=f"run {status['path']}", show_lines=False)
    table.add_column("step")
    table.add_column("state")
    table.add_column("detail")
    for e in status["entries"]:
        table.add_row(e["name"], f"[{_STYLE.get(e['state'], 'white')}]{e['state']}[/]", e.get("detail", ""))
    return table


def status_footer(status: dict[str, Any]) -> list[str]:
    latest = status["latest_version"]
    ckpt = status["last_checkpoint"]
    lines = (
        []
        if status.get("kind") == "finetune"
        else [f"latest version: {'none' if latest is None else f'v{latest:04d}'}"]
    )
    lines.append(f"last checkpoint: {'none' if ckpt is None else f'epoch {ckpt}'}")
    if status.get("quarantined"):
        lines.append(f"quarantined images: {status['quarantined']}")
    if status.get("last_failure"):
        f = status["last_failure"]
        lines.append(f"last flow run failed at {f['step']} ({f['when']}): {f['error']}")
    lines.append(f"next: {status['next_command'] or 'nothing, the run is complete'}")
    return lines


def finetune_status(run_path: str) -> dict[str, Any]:
    """``runs status`` of a finetune run (a run directory with ``finetune.json``): epochs trained
    of the schedule's, the final evaluation, and the next command; same keys as a pretrain status."""
    from joindet.pipeline.checkpoints import verified_epochs
    from joindet.pipeline.finetune_plan import finetune_schedule
    from joindet.pipeline.run_dir import RunDir

    run = RunDir.open(run_path)
    total, drop = finetune_schedule(run.config)
    kept = [e for e in verified_epochs(run.path / "checkpoints") if e < total]
    trained_epochs = max(kept) + 1 if kept else 0  # finetuning keeps only some checkpoints
    metrics = run.path / "metrics" / f"finetune-epoch-{total - 1:04d}.json"
    trained = trained_epochs >= total
    entries = [
        {
            "name": f"finetune epochs 0-{total - 1}",
            "state": "done" if trained else "pending",
            "detail": f"{trained_epochs} of {total} epochs (lr drop at {drop})",
        },
        {
            "name": "evaluate (category-aware COCO AP)",
            "state": "done" if metrics.is_file() else "pending",
            "detail": metrics.name if metrics.is_file() else "",
        },
    ]
    complete = trained and metrics.is_file()
    return {
        "path": str(run.path),
        "kind": "finetune",
        "entries": entries,
        "latest_version": None,
        "last_checkpoint": max(kept) if kept else None,
        "complete": complete,
        "next_command": None if complete else f"joindet flow resume {run.path}",
    }


@click.group("runs")
def runs_group() -> None:
    """Inspect run directories."""


@runs_group.command("status")
@click.argument("run_path", metavar="RUN", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@clean_errors
@light
def status_cmd(run_path: str, as_json: bool) -> None:
    """Where RUN stands: each schedule step done / staged (k of n shards) / pending."""
    from joindet.pipeline.flow_state import read_failure
    from joindet.pipeline.run_dir import RunDir
    from joindet.pipeline.schedule import RunPlan

    if Path(run_path, "finetune.json").is_file():
        status = with_failure(finetune_status(run_path), read_failure(run_path))
    else:
        status = with_failure(RunPlan(RunDir.open(run_path)).status().to_dict(), read_failure(run_path))
    if as_json:
        emit_json(status)
        return
    console = Console()
    console.print(status_table(status))
    for line in status_footer(status):
        console.print(line, highlight=False)


@runs_group.command("verify")
@click.argument("run_path", metavar="RUN", type=click.Path())
@clean_errors
def verify_cmd(run_path: str) -> None:
    """Check every file of RUN: run.json, images.parquet, quarantine, every version, every checkpoint.

    Exits 0 when everything verifies; else prints one BAD line per problem (naming the file) and
    exits 1.
    """
    from joindet.pipeline.run_checks import verify_run

    problems = verify_run(run_path)
    if problems:
        for p in problems:
            click.echo(f"BAD: {p}", err=True)
        raise click.exceptions.Exit(1)
    click.echo(f"OK: {run_path}: run.json, images, quarantine, every prior version and checkpoint verify")
