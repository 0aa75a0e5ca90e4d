"""``joindet backbone pretrain``: self-supervised backbone weights from a dataset's own images."""

from __future__ import annotations

import os

import click

from joindet.flows.cli_errors import clean_errors
from joindet.flows.cli_options import emit_json, output_options, stderr
from joindet.flows.cli_types import dataset_options

#: the choices of --method; pipeline.ssl.methods.METHODS owns them (it imports lightly, so the
#: command line keeps its own copy and a test checks that the two agree).
METHOD_CHOICES = ("simclr", "dino")
ARCH_CHOICES = ("resnet18", "resnet34", "resnet50")


@click.group("backbone")
def backbone_group() -> None:
    """Backbone weights without labels or downloads (for --set model.backbone_weights=FILE)."""


@backbone_group.command("pretrain")
@dataset_options
@click.option("--arch", type=click.Choice(ARCH_CHOICES), default="resnet18", show_default=True, help="ResNet depth.")
@click.option(
    "--method", type=click.Choice(METHOD_CHOICES), default="simclr", show_default=True, help="Self-supervised method."
)
@click.option("--epochs", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--size", type=click.IntRange(min=32), default=96, show_default=True, help="Crop side in pixels.")
@click.option("--batch-size", type=click.IntRange(min=2), default=32, show_default=True)
@click.option("--lr", type=float, default=None, help="AdamW learning rate (default: the method's).")
@click.option("--max-images", type=click.IntRange(min=2), default=None, help="Use the first N images only.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when present), cpu, cuda, cuda:1, ...")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True, help="Image loader processes.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Weights file to write.")
@click.option("--force", is_flag=True, help="Start over when OUTPUT or its state file hold another training.")
@output_options
@clean_errors
def pretrain_cmd(
    dataset: str,
    data_root: str | None,
    annotations: str | None,
    arch: str,
    method: str,
    epochs: int,
    size: int,
    batch_size: int,
    lr: float | None,
    max_images: int | None,
    seed: int,
    device: str,
    workers: int,
    output: str,
    force: bool,
    quiet: bool,
    as_json: bool,
) -> None:
    """Train the backbone self-supervised on the dataset's images; write OUTPUT.

    Re-running the same command resumes after the last finished epoch (state in OUTPUT.state.pt)
    or, when OUTPUT is complete, does nothing. Use the weights with
    `--set model.backbone_weights=OUTPUT` (and `--set priors.init_features=backbone` for R_0).
    """
    from joindet.flows.progress_bars import RichProgress
    from joindet.pipeline.data import open_dataset
    from joindet.pipeline.ssl.train import SSLSettings, pretrain_backbone

    ds = open_dataset(
        dataset,
        root=os.path.abspath(data_root) if data_root else None,
        annotations=os.path.abspath(annotations) if annotations else None,
    )
    settings = SSLSettings(
        method=method,
        arch=arch,
        epochs=epochs,
        size=size,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        max_images=max_images,
        device=device,
        workers=workers,
    )
    if not quiet:
        stderr(f"backbone pretrain: {method} {arch}, {epochs} epochs at {size} px on {len(ds)} {dataset} images")
    result = pretrain_backbone(ds, output, settings, RichProgress(quiet=quiet), force=force)
    summary = result.summary()
    if as_json:
        emit_json(summary)
        return
    if result.skipped:
        state = "already complete"
    else:
        state = f"resumed after epoch {result.resumed_from}" if result.resumed_from else "trained"
    click.echo(
        f"wrote {summary['weights']} ({state}; loss {summary['loss_first']} -> {summary['loss_last']} "
        f"over {summary['epochs']} epochs, {summary['seconds']} s)\n"
        f"use it: --set model.backbone_weights={os.path.abspath(output)} --set priors.init_features=backbone"
    )
