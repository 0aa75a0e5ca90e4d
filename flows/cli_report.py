"""``joindet report RUN [-o report.html]``: one self-contained HTML page about a run, PNGs beside it."""

from __future__ import annotations

import warnings
from pathlib import Path

import click

from joindet.flows.cli_errors import clean_errors
from joindet.flows.cli_options import emit_json


@click.command("report")
@click.argument("run_path", metavar="RUN", type=click.Path())
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    default=None,
    help="HTML file to write (default: RUN/report/report.html); PNGs go beside it.",
)
@click.option("--no-eval", is_flag=True, help="Show only metrics already in RUN/metrics (no evaluation).")
@click.option("--no-proposals", is_flag=True, help="Do not evaluate the last checkpoint's proposals.")
@click.option(
    "--images", type=click.IntRange(min=0), default=4, show_default=True, help="Images in the evolution strip."
)
@click.option("--json", "as_json", is_flag=True, help="Print the written paths and the verdict as JSON.")
@clean_errors
def report_cmd(
    run_path: str, output: str | None, no_eval: bool, no_proposals: bool, images: int, as_json: bool
) -> None:
    """Report of RUN: prior versions (boxes, churn, AP/AR), training curves, evolution strip,
    timings, quarantine and config, as one HTML page that opens offline."""
    from joindet.pipeline.report import build_report
    from joindet.pipeline.run_dir import RunDir

    run = RunDir.open(run_path)
    out = Path(output) if output else run.path / "report" / "report.html"
    with warnings.catch_warnings():
        # The random-backbone warning of model loading is already in the run's own output.
        warnings.simplefilter("ignore", UserWarning)
        result = build_report(run, out, evaluate=not no_eval, proposals=not no_proposals, num_images=images)
    if as_json:
        emit_json(
            {
                "html": str(result.html),
                "figures": {k: str(v) for k, v in result.figures.items()},
                "verdict": [{"question": q, "before": b, "after": a, "holds": h} for q, b, a, h in result.verdict],
                "notes": result.notes,
            }
        )
        return
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    for q, b, a, h in result.verdict:
        click.echo(
            f"{q}: {_fmt(b)} -> {_fmt(a)} ({'better' if h else 'not better'})" if h is not None else f"{q}: {_fmt(a)}"
        )
    click.echo(f"report: {result.html} ({len(result.figures)} figures beside it)")


def _fmt(x: object) -> str:
    return f"{x:.4f}" if isinstance(x, float) else str(x)
