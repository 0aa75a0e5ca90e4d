"""``joindet eval proposals|priors RUN``: class-agnostic AP / AR of the detector or of the priors."""

from __future__ import annotations

import click

from joindet.flows.cli_errors import clean_errors
from joindet.flows.cli_options import emit_json
from joindet.flows.cli_types import VERSION
from joindet.flows.reports import numeric_leaves


def metric_lines(metrics: dict) -> list[str]:
    return [f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}" for k, v in numeric_leaves(metrics).items()]


@click.group("eval")
def eval_group() -> None:
    """Evaluate priors or detector proposals against ground truth (AP, AP50, AP75, AR@1/10/100)."""


@eval_group.command("proposals")
@click.argument("run_path", metavar="RUN", type=click.Path())
@click.option("--epoch", type=click.IntRange(min=0), default=None, help="Checkpoint epoch (default: the last one).")
@click.option("--split", default=None, help="Dataset split with ground truth (default: data.eval_split).")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
@clean_errors
def proposals_cmd(run_path: str, epoch: int | None, split: str | None, as_json: bool) -> None:
    """Class-agnostic proposals of a checkpoint of RUN, scored against ground truth."""
    from joindet.pipeline import stages
    from joindet.pipeline.run_dir import RunDir

    metrics = stages.evaluate_proposals(RunDir.open(run_path), epoch=epoch, split=split)
    emit_json(metrics) if as_json else click.echo("\n".join(metric_lines(metrics)))


@eval_group.command("priors")
@click.argument("run_path", metavar="RUN", type=click.Path())
@click.option(
    "--version", "versions", type=VERSION, multiple=True, help="Versions, 4 or v0004 (repeatable; default: all)."
)
@click.option(
    "--kind",
    "kinds",
    type=click.Choice(["region", "instance", "smoothed"]),
    multiple=True,
    help="Kinds of boxes (repeatable; default: smoothed).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
@clean_errors
def priors_cmd(run_path: str, versions: tuple[int, ...], kinds: tuple[str, ...], as_json: bool) -> None:
    """The committed prior versions of RUN, scored against the dataset's ground truth."""
    from joindet.pipeline import stages
    from joindet.pipeline.run_dir import RunDir

    metrics = stages.evaluate_priors(
        RunDir.open(run_path), versions=list(versions) or None, kinds=tuple(kinds) or ("smoothed",)
    )
    emit_json(metrics) if as_json else click.echo("\n".join(metric_lines(metrics)))
