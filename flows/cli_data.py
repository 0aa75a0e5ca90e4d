"""``joindet data ...``: generate the synthetic scenes dataset, check a dataset's images."""

from __future__ import annotations

from pathlib import Path

import click

from joindet.flows.cli_errors import clean_errors
from joindet.flows.cli_types import dataset_options


@click.group("data")
def data() -> None:
    """Datasets: generate the built-in synthetic scenes dataset, check a dataset."""


@data.command("synth")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--images", default=96, show_default=True, type=click.IntRange(min=1), help="Training images.")
@click.option(
    "--val-images", default=None, type=click.IntRange(min=0), help="Validation images [default: a third of --images]."
)
@click.option("--size", default=160, show_default=True, type=click.IntRange(min=16), help="Image side in pixels.")
@click.option("--seed", default=0, show_default=True, type=int, help="Same seed, same dataset.")
@click.option("--format", "image_format", default="jpg", show_default=True, type=click.Choice(["jpg", "png"]))
@clean_errors
def synth(out: Path, images: int, val_images: int | None, size: int, seed: int, image_format: str) -> None:
    """Write synthetic scenes with COCO ground truth into OUT (a new folder).

    OUT/train, OUT/val and OUT/annotations/instances_{train,val}.json; use it with
    --dataset synthetic --data-root OUT (or --dataset coco-json).
    """
    from joindet.pipeline.data import generate_synthetic

    generate_synthetic(out, images, size, seed, val_images=val_images, image_format=image_format)
    n_val = max(1, images // 3) if val_images is None else val_images
    click.echo(f"wrote {images} train and {n_val} val images ({size}x{size}, seed {seed}) to {out}")


@data.command("check")
@dataset_options
@click.option("--split", default="train", show_default=True)
@click.option("--class-list", type=click.Path(path_type=Path), default=None, help="Class folders to keep (imagenet).")
@click.option("--limit", type=click.IntRange(min=0), default=None, help="Decode only the first N images.")
@clean_errors
def check(
    dataset: str, data_root: str | None, annotations: str | None, split: str, class_list: Path | None, limit: int | None
) -> None:
    """Open a dataset, decode its images, and list those that would be quarantined.

    Exits 1 when any image cannot be decoded (a run would skip it), 0 when every one decodes.
    """
    from joindet.pipeline.data import ImageLoadError, open_dataset

    ds = open_dataset(dataset, root=data_root, split=split, annotations=annotations, class_list=class_list)
    ids = ds.image_ids()
    if limit is not None:
        ids = ids[:limit]
    bad: list[ImageLoadError] = []
    for image_id in ids:
        try:
            ds.load(int(image_id))
        except ImageLoadError as exc:
            bad.append(exc)
    gt = ds.coco_ground_truth()
    boxes = "no boxes" if gt is None else f"{len(gt['annotations'])} boxes, {len(ds.categories())} categories"
    click.echo(f"{ds.name} ({split}) at {ds.root}: {len(ds)} images, {boxes}, fingerprint {ds.fingerprint()[:12]}")
    click.echo(f"decoded {len(ids) - len(bad)} of {len(ids)} images; {len(bad)} would be skipped (quarantined)")
    if gt is not None and ds.dropped_boxes():
        click.echo(f"dropped {ds.dropped_boxes()} ground-truth boxes with zero or negative width or height")
    for exc in bad[:20]:
        click.echo(f"  {exc.image_id}  {exc.file}: {exc.reason}")
    if len(bad) > 20:
        click.echo(f"  ... and {len(bad) - 20} more")
    if bad:
        raise click.ClickException(f"{len(bad)} of {len(ids)} images of {ds.name} ({split}) cannot be decoded")
