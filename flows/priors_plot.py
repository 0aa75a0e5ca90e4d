"""Drawing a version's priors (``joindet priors plot``): a grid of images, each with its boxes by
kind (own colour and line style each, scores written at the box), the ground truth when the
run's dataset has it, and the eigen attention map as a translucent overlay with a colour bar.
The panel drawing is pipeline/report/panels.py's, shared with the report's evolution strip."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np

from joindet.priors import PriorStore, read_images_table
from joindet.priors.store.attention_maps import AttentionStore
from joindet.priors.store.errors import StoreError, VersionNotFoundError

#: Panel side in inches at ``_DPI`` (4.5 x 100 = 450 px: a 160 px image is shown enlarged).
_PANEL_IN = 4.5
_DPI = 100


def image_root(run_dir: str | Path, data_root: str | None) -> Path:
    """``data_root``, else run.json's ``config.data.root``, else its resolved ``dataset.root``."""
    if data_root:
        return Path(data_root)
    meta = Path(run_dir) / "run.json"
    try:
        info = json.loads(meta.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StoreError(f"{meta} is missing, so the image root is unknown; pass --data-root") from None
    except json.JSONDecodeError as exc:
        raise StoreError(f"{meta} is not valid JSON ({exc}); pass --data-root") from None
    root = (info.get("config", {}).get("data", {}) or {}).get("root") or (info.get("dataset") or {}).get("root")
    if not root:
        raise StoreError(f"{meta} names no data root (config.data.root); pass --data-root")
    return Path(root)


def run_ground_truth(run_dir: str | Path) -> dict[int, np.ndarray] | None:
    """Pixel xywh ground-truth boxes (float [k, 4]) per image id of the run's dataset split, or
    None when the run records no dataset or the dataset has no boxes."""
    if not (Path(run_dir) / "run.json").is_file():
        return None
    from joindet.pipeline.run_dir import RunDir

    try:
        gt = RunDir.open(run_dir).dataset().coco_ground_truth()
    except (OSError, ValueError):  # dataset moved or unreadable: plot the priors without it
        return None
    if not gt or not gt.get("annotations"):
        return None
    boxes: dict[int, list[list[float]]] = {}
    for a in gt["annotations"]:
        boxes.setdefault(int(a["image_id"]), []).append([float(x) for x in a["bbox"]])
    return {i: np.asarray(b, np.float64).reshape(-1, 4) for i, b in boxes.items()}


def plot_image_priors(
    store: PriorStore,
    version: int,
    image_id: int,
    output: Path,
    data_root: str | None = None,
    kinds: list[str] | None = None,
) -> Path:
    """One image: :func:`plot_priors_grid` of ``[image_id]`` (ground truth read from the run)."""
    return plot_priors_grid(store, version, [image_id], output, data_root, kinds, run_ground_truth(store.run_dir))


def plot_priors_grid(
    store: PriorStore,
    version: int,
    image_ids: list[int],
    output: Path,
    data_root: str | None = None,
    kinds: list[str] | None = None,
    ground_truth: dict[int, np.ndarray] | None = None,
    max_boxes: int | None = None,
) -> Path:
    """Write a PNG grid (up to 3 columns) of ``image_ids`` with the boxes of ``kinds`` (default:
    every stored kind) of ``version``, their ground truth (``ground_truth``: pixel xywh per image
    id; None: not drawn) and the stored eigen attention map. ``max_boxes``: the best per kind and
    image (None: every box)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from joindet.pipeline.report.panels import (
        KIND_STYLES,
        attention_colorbar,
        draw_attention,
        draw_ground_truth,
        draw_priors,
        legend_handles,
    )

    m = store.manifest(version)
    kinds = list(kinds or m.kinds)
    for kind in kinds:
        if kind not in m.files:
            raise VersionNotFoundError(f"prior version {version} has no {kind!r} boxes (kinds: {m.kinds})")
    # thickest style first, so that a box equal to another kind's box stays visible on top of it
    kinds.sort(key=lambda k: list(KIND_STYLES).index(k) if k in KIND_STYLES else len(KIND_STYLES))
    images = read_images_table(store.run_dir)
    ids = images.column("image_id").to_numpy()
    root = image_root(store.run_dir, data_root)
    boxes = {kind: store.read(version, kind) for kind in kinds}
    attention = AttentionStore(store.run_dir)
    maps = attention.maps(version) if version in attention.versions() else None
    # 2 x 2 for four images (not 3 + 1 with two blank panels), else rows of up to 3.
    ncols = 2 if len(image_ids) == 4 else min(3, len(image_ids))
    nrows = math.ceil(len(image_ids) / ncols)
    # Constrained layout: the colour bar, titles and legend take their room beside the panels
    # instead of shrinking them and leaving blank bands between the rows.
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(_PANEL_IN * ncols + 0.8, (_PANEL_IN + 0.4) * nrows + 0.6),
        squeeze=False,
        layout="constrained",
    )
    for ax in axes.flat[len(image_ids) :]:
        ax.axis("off")
    mappable = None
    for ax, image_id in zip(axes.flat, image_ids):
        rows = np.flatnonzero(ids == image_id)
        if not len(rows):
            raise StoreError(f"image_id {image_id} is not in {store.run_dir}/images.parquet")
        row = int(rows[0])
        file = images.column("file")[row].as_py()
        w, h = int(images.column("width")[row].as_py()), int(images.column("height")[row].as_py())
        bgr = cv2.imread(str(root / file), cv2.IMREAD_COLOR)
        if bgr is None:
            raise StoreError(f"cannot read image {root / file}; check --data-root")
        ax.imshow(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), extent=(0, w, h, 0))
        try:
            amap = maps.read(int(image_id)) if maps is not None else None
        except (StoreError, KeyError):  # no map written for this image
            amap = None
        if amap is not None:
            mappable = draw_attention(ax, amap, w, h)
        counts = []
        for kind in kinds:
            bs = boxes[kind].for_image(image_id)
            shown = draw_priors(ax, kind, bs.boxes, bs.scores, w, h, max_boxes=max_boxes)
            counts.append(f"{kind} {shown}" + (f" of {len(bs)}" if shown < len(bs) else ""))
        gt = None if ground_truth is None else ground_truth.get(int(image_id), np.zeros((0, 4)))
        if gt is not None:
            counts.append(f"GT {draw_ground_truth(ax, gt)}")
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"image {image_id}\n" + ", ".join(counts), fontsize=9)
    maps = "eigen attention overlay" if mappable is not None else "no attention map stored"
    fig.suptitle(f"priors v{version:04d} of {store.run_dir} ({maps})", fontsize=10)
    fig.legend(
        handles=legend_handles(kinds, ground_truth is not None),
        loc="outside lower center",
        ncol=len(kinds) + 1,
        fontsize=9,
    )
    if mappable is not None:
        attention_colorbar(fig, axes, mappable)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=_DPI, bbox_inches="tight")
    plt.close(fig)
    return output
