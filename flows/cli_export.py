"""``joindet export model RUN --format hf|deformable-detr -o DIR``: a pretrained checkpoint for
Hugging Face transformers or the reference Deformable DETR (``pipeline/export_model.py``)."""

from __future__ import annotations

import click

from joindet.detector.hf_layout import FORMATS
from joindet.flows.cli_errors import clean_errors
from joindet.flows.cli_options import emit_json, stdout_kept_for_json


@click.group("export")
def export_group() -> None:
    """Export a run's detector for other code bases."""


@export_group.command("model")
@click.argument("run_path", metavar="RUN", type=click.Path())
@click.option("--epoch", type=int, default=None, help="Checkpoint epoch to export (default: the newest).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    required=True,
    help="hf: a transformers DeformableDetrForObjectDetection directory (from_pretrained(DIR)); "
    "deformable-detr: DIR/checkpoint.pth in the reference repository's key layout (main.py --pretrain).",
)
@click.option("-o", "--out", "out_dir", type=click.Path(), required=True, help="Output directory (created).")
@click.option(
    "--num-labels",
    type=int,
    default=None,
    help="hf only: classes of the exported class head; other than the pretrained 2 (background, object) "
    "re-initialises it for finetuning.",
)
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
@clean_errors
def export_model_cmd(
    run_path: str, epoch: int | None, fmt: str, out_dir: str, num_labels: int | None, as_json: bool
) -> None:
    """Write RUN's checkpoint (EPOCH or the newest) as a model another code base loads.

    \b
    Left out: the embedding head f_emb (no counterpart). Presets whose architecture the target
    cannot express are refused with the differences named.
    \b
      joindet export model RUN --format hf -o DIR [--num-labels K]
      python -c "from transformers import DeformableDetrForObjectDetection as M; M.from_pretrained('DIR')"
    """
    from joindet.pipeline.export_model import export_run

    with stdout_kept_for_json(as_json):
        result = export_run(run_path, out_dir, fmt, epoch=epoch, num_labels=num_labels)
    if as_json:
        emit_json(result.to_dict())
        return
    click.echo(f"exported epoch {result.epoch} as {fmt} to {result.out_dir}: {', '.join(result.files)}")
    if result.left_out:
        click.echo(f"left out (no counterpart): {', '.join(result.left_out)}")
    if result.reinitialised:
        click.echo(f"re-initialised for {num_labels} labels: {', '.join(result.reinitialised)}")
