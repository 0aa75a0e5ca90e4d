"""``joindet priors ...``: inspect, compare, export, import, verify and clean the prior store.

Every command turns store errors (missing run, missing version, corrupt file) into one line on
stderr and exit code 1 (``clean_errors``); ``verify`` exits 1 when it finds problems.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.table import Table

from joindet import priors  # lazy (PEP 562): the store loads pyarrow when a command uses it
from joindet.flows.cli_errors import clean_errors
from joindet.flows.cli_light import light
from joindet.flows.cli_types import KINDS, VERSION, version_option
from joindet.priors.store.errors import RunNotFoundError, StoreError, VersionNotFoundError

if TYPE_CHECKING:
    from joindet.priors import PriorStore
    from joindet.storage_schema import Manifest

_RUN = click.argument("run_path", metavar="RUN", type=click.Path())
_KIND_COLOURS = {"region": "cyan", "instance": "magenta", "smoothed": "green"}


def console() -> Console:
    """Rich console; wide when piped so tables are not cut to 80 columns."""
    return Console() if sys.stdout.isatty() else Console(width=200)


def open_store(run_path: str) -> PriorStore:
    """The store of an existing run directory (``RunNotFoundError`` for a missing path or a folder
    that holds none of a run's files)."""
    store = priors.PriorStore(run_path)
    store.require_run()
    if not any(Path(run_path, name).exists() for name in ("run.json", "images.parquet", "priors")):
        raise RunNotFoundError(f"{run_path} is not a run directory (no run.json, images.parquet or priors/ in it)")
    return store


def pick_version(store: PriorStore, version: int | None) -> int:
    """``version`` or the latest committed one; a clear error when the run has none."""
    if version is not None:
        return version
    latest = store.latest()
    if latest is None:
        raise VersionNotFoundError(f"run {store.run_dir} has no committed prior version yet")
    return latest


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def manifest_row(m: Manifest) -> dict[str, Any]:
    """The figures of one version shown by ``ls`` (also its --json output)."""
    s = m.stats.get("smoothed", {})
    return {
        "version": m.version,
        "parent": m.parent,
        "created": m.created,
        "kinds": {k: m.files[k].rows for k in m.kinds},
        "num_images": m.num_images,
        "num_boxes": m.num_boxes,
        "boxes_per_image_mean": s.get("boxes_per_image_mean"),
        "boxes_per_image_median": s.get("boxes_per_image_median"),
        "mean_box_area": s.get("mean_box_area"),
        "churn": m.stats.get("churn"),
        "checkpoint_digest": m.checkpoint_digest,
        "config_digest": m.config_digest,
        "bytes": sum(f.bytes for f in m.files.values()),
    }


@click.group("priors")
def priors_group() -> None:
    """Inspect and manage the versioned prior store of a run."""


@priors_group.command("ls")
@_RUN
@click.option("--json", "as_json", is_flag=True, help="Print one JSON list (machine-readable).")
@clean_errors
@light
def ls_cmd(run_path: str, as_json: bool) -> None:
    """Committed versions of RUN with counts and statistics."""
    store = open_store(run_path)
    rows: list[dict[str, Any]] = []
    for v in store.versions():
        try:
            rows.append(manifest_row(store.manifest(v)))
        except StoreError as exc:  # one damaged version is one error row, the others still list
            rows.append({"version": v, "error": str(exc)})
    if as_json:
        click.echo(json.dumps(rows, indent=2, sort_keys=True))
        return
    if not rows:
        click.echo(f"{run_path}: no committed prior versions")
        return
    table = Table(title=f"prior versions of {run_path}")
    for col in (
        "version",
        "parent",
        "kinds (boxes)",
        "images",
        "boxes/img mean",
        "median",
        "mean area",
        "churn matched/added/removed",
        "mean IoU",
        "created",
    ):
        table.add_column(col, justify="left" if col in ("kinds (boxes)", "created") else "right")
    for r in rows:
        if "error" in r:
            table.add_row(f"v{r['version']:04d}", "-", f"[red]DAMAGED: {r['error']}[/]", *["-"] * 7)
            continue
        c = r["churn"] or {}
        table.add_row(
            f"v{r['version']:04d}",
            _fmt(r["parent"]),
            ", ".join(f"{k} {n}" for k, n in r["kinds"].items()),
            str(r["num_images"]),
            _fmt(r["boxes_per_image_mean"], 2),
            _fmt(r["boxes_per_image_median"], 1),
            _fmt(r["mean_box_area"], 4),
            f"{c['matched']}/{c['added']}/{c['removed']}" if c else "-",
            _fmt(c.get("mean_iou")),
            r["created"],
        )
    console().print(table)


@priors_group.command("show")
@_RUN
@version_option()
@click.option("--image", "image_id", type=int, default=None, help="Show the boxes of this image_id.")
@click.option("--kind", type=click.Choice(KINDS), default=None, help="Only this kind (default: all stored).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@clean_errors
@light
def show_cmd(run_path: str, version: int | None, image_id: int | None, kind: str | None, as_json: bool) -> None:
    """A version's manifest and statistics, or one image's boxes (--image)."""
    store = open_store(run_path)
    v = pick_version(store, version)
    m = store.manifest(v)
    kinds = [kind] if kind else m.kinds
    if kind and kind not in m.files:
        raise VersionNotFoundError(f"prior version {v} of run {run_path} has no {kind!r} boxes (kinds: {m.kinds})")
    if image_id is None:
        if as_json:
            click.echo(json.dumps(m.to_dict(), indent=2, sort_keys=True))
            return
        out = console()
        out.print(
            f"[bold]v{v:04d}[/] parent {_fmt(m.parent)}, created {m.created}, {m.num_images} images, "
            f"checkpoint {m.checkpoint_digest or '-'}, config {m.config_digest or '-'}"
        )
        table = Table(title="files and statistics")
        for col in (
            "kind",
            "file",
            "rows",
            "bytes",
            "images with boxes",
            "boxes/img mean",
            "median",
            "mean area",
            "mean score",
        ):
            table.add_column(col)
        for k in kinds:
            f, s = m.files[k], m.stats.get(k, {})
            table.add_row(
                k,
                f.path,
                str(f.rows),
                str(f.bytes),
                _fmt(s.get("images_with_boxes")),
                _fmt(s.get("boxes_per_image_mean"), 2),
                _fmt(s.get("boxes_per_image_median"), 1),
                _fmt(s.get("mean_box_area"), 4),
                _fmt(s.get("mean_score")),
            )
        out.print(table)
        extra = {k: val for k, val in m.stats.items() if k not in KINDS}
        if extra:
            out.print("other statistics: " + json.dumps(extra, sort_keys=True))
        return
    rows = []
    for k in kinds:
        bs = store.read(v, k).for_image(image_id)
        rows += [
            {"kind": k, "xyxy": [round(float(x), 5) for x in b], "score": round(float(s), 5)}
            for b, s in zip(bs.boxes, bs.scores)
        ]
    if as_json:
        click.echo(json.dumps({"version": v, "image_id": image_id, "boxes": rows}, indent=2))
        return
    table = Table(title=f"v{v:04d} image {image_id}: {len(rows)} boxes (normalised xyxy)")
    for col in ("kind", "x0", "y0", "x1", "y1", "score"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            f"[{_KIND_COLOURS[r['kind']]}]{r['kind']}[/]", *(f"{x:.4f}" for x in r["xyxy"]), f"{r['score']:.3f}"
        )
    console().print(table)


@priors_group.command("diff")
@_RUN
@click.argument("a", type=VERSION)
@click.argument("b", type=VERSION)
@click.option("--kind", type=click.Choice(KINDS), default="smoothed", show_default=True)
@click.option(
    "--iou",
    "iou_thr",
    type=click.FloatRange(0, 1),
    default=0.5,
    show_default=True,
    help="IoU at or above which two boxes match.",
)
@click.option("--top", type=click.IntRange(min=0), default=10, show_default=True, help="Images that changed most.")
@click.option("--json", "as_json", is_flag=True)
@clean_errors
@light
def diff_cmd(run_path: str, a: int, b: int, kind: str, iou_thr: float, top: int, as_json: bool) -> None:
    """Churn from version A to version B: matched / added / removed boxes, mean IoU of matched."""
    store = open_store(run_path)
    ch = priors.churn(store.read(a, kind), store.read(b, kind), iou_thr)
    result = {"a": a, "b": b, "kind": kind, "iou_thr": iou_thr, **ch.summary(), "most_changed": ch.most_changed(top)}
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    out = console()
    out.print(
        f"v{a:04d} -> v{b:04d} ({kind}, IoU >= {iou_thr}): matched {ch.matched}, added {ch.added}, "
        f"removed {ch.removed}, mean IoU of matched {_fmt(result['mean_iou'])}"
    )
    if result["most_changed"]:
        table = Table(title="images that changed most")
        for col in ("image_id", "matched", "added", "removed"):
            table.add_column(col, justify="right")
        for r in result["most_changed"]:
            table.add_row(*(str(r[c]) for c in ("image_id", "matched", "added", "removed")))
        out.print(table)


@priors_group.command("export")
@_RUN
@version_option()
@click.option("--kind", type=click.Choice(KINDS), default="smoothed", show_default=True)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, allow_dash=True),
    required=True,
    help="JSON file to write ('-' for stdout).",
)
@click.option(
    "--as-dataset",
    is_flag=True,
    help="Write a COCO annotations file (images, one 'object' category, the priors as annotations) "
    "to train any COCO reader on the priors as pseudo-labels.",
)
@clean_errors
def export_cmd(run_path: str, version: int | None, kind: str, output: str, as_dataset: bool) -> None:
    """Write a version as COCO results JSON, or with --as-dataset as a COCO annotations file.

    \b
    Results: [{image_id, bbox [x, y, w, h] pixels, score, category_id 0}]. Category 0 is no class
    of a COCO-style ground truth, so score them class-agnostically: relabel every ground-truth
    annotation to category 0 (joindet.priors.coco_io.agnostic_ground_truth), then COCOeval.
    """
    from joindet.priors.coco_io import export_coco_dataset, export_coco_results

    store = open_store(run_path)
    version = pick_version(store, version)
    boxes, images = store.read(version, kind), priors.read_images_table(run_path)
    if as_dataset:
        doc: Any = export_coco_dataset(boxes, images, description=f"priors v{version:04d} ({kind}) of {run_path}")
        what = f"{len(doc['annotations'])} boxes on {len(doc['images'])} images as COCO annotations"
    else:
        doc = export_coco_results(boxes, images)
        what = f"{len(doc)} boxes as COCO results"
    if output == "-":
        json.dump(doc, sys.stdout)
        return
    Path(output).write_text(json.dumps(doc), encoding="utf-8")
    click.echo(f"wrote {what} of v{version:04d} ({kind}) to {output}", err=True)


@priors_group.command("import")
@_RUN
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@version_option("Version to create, 4 or v0004.", required=True)
@click.option("--parent", type=int, default=None, help="Record this version as parent (churn is computed against it).")
@click.option("--force", is_flag=True, help="Move an existing version aside (priors/_replaced/) and import.")
@clean_errors
def import_cmd(run_path: str, file: str, version: int, parent: int | None, force: bool) -> None:
    """Import a COCO annotations JSON (creates RUN if missing) or results JSON as version V ("smoothed").

    Boxes reaching outside their image are clipped to it; boxes with zero area after clipping or
    malformed ones are rejected; the counts are printed.
    """
    from joindet.priors.coco_io import read_coco

    try:
        doc = json.loads(Path(file).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StoreError(f"{file} is not valid JSON ({exc})") from None
    store = priors.PriorStore(run_path)
    has_index = store.exists() and Path(run_path, "images.parquet").exists()
    if not has_index and not isinstance(doc, dict) and not store.exists():
        raise RunNotFoundError(
            f"run directory {run_path} does not exist; a COCO results JSON has no image sizes, so import "
            "the dataset's annotations JSON first (it creates the run)"
        )
    imp = read_coco(doc, priors.read_images_table(run_path) if has_index else None, source=file)
    # a run that does not exist yet has nothing to lock; commit takes the lock once it does
    with store.lock() if store.exists() else contextlib.nullcontext():
        if force and store.has_version(version):
            moved = store.move_aside(version)
            click.echo(f"moved the existing v{version:04d} to {moved}", err=True)
        if not has_index:
            priors.write_images_table(run_path, imp.images)
        m = store.commit(
            version,
            {"smoothed": imp.boxes},
            parent=parent,
            extra_stats={"imported_from": Path(file).name, "import": imp.summary()},
        )
    s = imp.summary()
    click.echo(
        f"imported {s['imported']} of {s['boxes_in_file']} boxes from {file} as v{m.version:04d} "
        f"({m.num_images} images); clipped to the image: {s['clipped']}, rejected: "
        f"{s['rejected_degenerate']} empty after clipping, {s['rejected_malformed']} malformed"
    )


@priors_group.command("verify")
@_RUN
@clean_errors
@light
def verify_cmd(run_path: str) -> None:
    """Check every file of every version against its manifest (sha256, size, rows, schema)."""
    store = open_store(run_path)
    problems = store.verify()
    if problems:
        for p in problems:
            click.echo(f"BAD: {p}", err=True)
        raise click.exceptions.Exit(1)
    n_files = sum(len(store.manifest(v).files) for v in store.versions())
    click.echo(f"OK: {len(store.versions())} versions, {n_files} files match their manifests")


@priors_group.command("gc")
@_RUN
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
@click.option("--yes", is_flag=True, help="Remove without asking.")
@clean_errors
def gc_cmd(run_path: str, dry_run: bool, yes: bool) -> None:
    """Remove staging, uncommitted versions and files no manifest references (keeps _replaced/).

    Lists what it would remove and asks first (``--yes`` to skip the question, ``--dry-run`` to
    only list).
    """
    store = open_store(run_path)
    doomed = store.gc(dry_run=True)
    for p in doomed:
        click.echo(f"{'would remove' if dry_run or not yes else 'removing'} {p}")
    if not doomed:
        click.echo("nothing to remove")
        return
    if dry_run:
        click.echo(f"{len(doomed)} paths would be removed (dry run; nothing removed)")
        return
    if not yes and not _confirmed(f"remove these {len(doomed)} paths?"):
        click.echo("nothing removed")
        raise click.exceptions.Exit(1)
    removed = store.gc()
    click.echo(f"{len(removed)} paths removed")


def _confirmed(question: str) -> bool:
    try:
        return click.confirm(question, default=False)
    except click.exceptions.Abort:  # no terminal / end of input: the answer is no
        return False


@priors_group.command("restore")
@_RUN
@version_option("The version to put back, 4 or v0004.", required=True)
@click.option(
    "--from", "name", default=None, help="Which moved-aside copy (name under priors/_replaced; default newest)."
)
@click.option("--list", "list_only", is_flag=True, help="Only list the moved-aside copies.")
@clean_errors
def restore_cmd(run_path: str, version: int, name: str | None, list_only: bool) -> None:
    """Put back a version that --force moved aside to priors/_replaced (after checking its files)."""
    store = open_store(run_path)
    copies = [n for v, n in store.replaced() if v == version]
    if list_only:
        for n in copies:
            click.echo(n)
        if not copies:
            click.echo(f"no moved-aside copy of version {version}")
        return
    restored = store.restore(version, name)
    click.echo(f"restored version {version} from priors/_replaced/{restored}")


@priors_group.command("plot")
@_RUN
@version_option()
@click.option("--image", "image_list", type=int, multiple=True, help="An image_id to draw (repeatable).")
@click.option("--image-ids", default=None, metavar="ID,ID,...", help="Image ids to draw, comma-separated.")
@click.option(
    "--images",
    "num_images",
    type=click.IntRange(min=1),
    default=None,
    help="Draw the first N images of the run's index [default: 4 when no id is given].",
)
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True, help="PNG to write.")
@click.option(
    "--data-root",
    type=click.Path(file_okay=False),
    default=None,
    help="Image root (default: the run's config data.root).",
)
@click.option("--kind", "kinds", type=click.Choice(KINDS), multiple=True, help="Kinds to draw (default: all).")
@click.option(
    "--max-boxes",
    type=click.IntRange(min=1),
    default=None,
    help="Draw only the N highest-scoring boxes per kind and image (default: every box; the panel "
    "titles then say 'N of M').",
)
@click.option("--no-gt", is_flag=True, help="Do not draw the dataset's ground truth.")
@clean_errors
def plot_cmd(
    run_path: str,
    version: int | None,
    image_list: tuple[int, ...],
    image_ids: str | None,
    num_images: int | None,
    output: str,
    data_root: str | None,
    kinds: tuple[str, ...],
    max_boxes: int | None,
    no_gt: bool,
) -> None:
    """Draw a grid of images with their boxes by kind (each its own line style, scores written),
    the ground truth when the run's dataset has it, and the eigen attention map where stored."""
    from joindet.flows.priors_plot import plot_priors_grid, run_ground_truth

    store = open_store(run_path)
    v = pick_version(store, version)
    ids = list(image_list)
    if image_ids:
        try:
            ids += [int(x) for x in image_ids.split(",") if x.strip()]
        except ValueError:
            raise click.BadParameter(
                f"{image_ids!r} is not a comma-separated list of ids", param_hint="--image-ids"
            ) from None
    if num_images is not None or not ids:
        ids += [int(i) for i in priors.read_images_table(run_path).column("image_id").to_pylist()[: num_images or 4]]
    gt = None if no_gt else run_ground_truth(run_path)
    path = plot_priors_grid(
        store, v, list(dict.fromkeys(ids)), Path(output), data_root, list(kinds) or None, gt, max_boxes
    )
    drawn = "every box" if max_boxes is None else f"the best {max_boxes} boxes per kind"
    gt_note = "" if gt is None else ", with ground truth"
    click.echo(f"wrote {path} ({len(dict.fromkeys(ids))} images of v{v:04d}, {drawn}{gt_note})")
