"""COCO JSON interoperability: export a version as COCO *results*, import COCO results/annotations.

Conventions: COCO boxes are pixels ``[x, y, w, h]`` of the original image; the store holds
normalised xyxy fractions (docs/architecture.md). Priors are class-agnostic; import ignores
categories. Export comes in two forms:

- *results* (``export_coco_results``): detections with ``category_id`` ``AGNOSTIC_CATEGORY_ID``
  (0), an id that no COCO-style ground truth uses (their ids start at 1), so that the file cannot
  be scored as if the priors predicted a real class: against the raw ground truth pycocotools
  gives AP 0 (with ``useCats`` 1 or 0: both keep only detections of the ground truth's
  categories), never a plausible-looking wrong figure. Evaluate class-agnostically as ``joindet
  eval priors`` does: relabel every ground-truth annotation to category 0 (``agnostic_ground_truth``)
  and run ``COCOeval(gt, gt.loadRes(results), "bbox")``.
- *annotations* (``export_coco_dataset``): a COCO annotations file (images, one category
  ``object`` with id ``OBJECT_CATEGORY_ID`` = 1, the priors as annotations with their score), to
  train any COCO-reading detector (detectron2, mmdetection, torchvision's CocoDetection) on the
  priors as pseudo-labels.

Import rules (every dropped box is counted, never silently lost):

- ``bbox`` must be 4 finite numbers with w >= 0 and h >= 0, and ``score`` (default 1.0) finite;
  otherwise the box is *rejected* (count ``rejected_malformed``).
- A box reaching outside its image is *clipped* to ``[0, width] x [0, height]`` (count ``clipped``);
  one with zero width or height after clipping (as stored: normalised float32) is *rejected*
  (count ``rejected_degenerate``).
- An ``image_id`` that is not among the images (the JSON's ``images`` for an annotations file,
  the run's index for a results file) is an error: the file does not belong to this run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from joindet.priors.boxset import BoxSet
from joindet.priors.store.errors import StoreError
from joindet.storage_schema import IMAGES_SCHEMA, SchemaError, validate_images_table


@dataclass(frozen=True)
class CocoImport:
    """The result of reading a COCO JSON: boxes (normalised xyxy), the image index and counts."""

    boxes: BoxSet
    images: pa.Table
    total: int
    clipped: int
    rejected_malformed: int
    rejected_degenerate: int
    is_annotations: bool

    @property
    def rejected(self) -> int:
        return self.rejected_malformed + self.rejected_degenerate

    def summary(self) -> dict[str, int]:
        return {
            "boxes_in_file": self.total,
            "imported": len(self.boxes),
            "clipped": self.clipped,
            "rejected_malformed": self.rejected_malformed,
            "rejected_degenerate": self.rejected_degenerate,
        }


#: ``category_id`` of exported results: no ground-truth class (COCO-style ids start at 1).
AGNOSTIC_CATEGORY_ID = 0
#: The one category of an exported annotations file (id 0 is background to many trainers).
OBJECT_CATEGORY_ID = 1


def _pixel_xywh(boxset: BoxSet, images_table: pa.Table) -> np.ndarray:
    """float64 [N, 4] pixel ``[x, y, w, h]`` of ``boxset``'s normalised xyxy boxes."""
    _, w, h = _sizes_for(boxset.image_ids, images_table, "images table")
    b = boxset.boxes.astype(np.float64)
    return np.stack([b[:, 0] * w, b[:, 1] * h, (b[:, 2] - b[:, 0]) * w, (b[:, 3] - b[:, 1]) * h], axis=1)


def export_coco_results(boxset: BoxSet, images_table: pa.Table) -> list[dict[str, Any]]:
    """COCO results list: ``{"image_id", "bbox": [x, y, w, h] pixels, "score", "category_id": 0}``.

    ``images_table`` (IMAGES_SCHEMA) gives each image's width/height; every image_id of
    ``boxset`` must be in it. ``category_id`` is ``AGNOSTIC_CATEGORY_ID``: evaluate with
    ``useCats = 0`` (module docstring).
    """
    if not len(boxset):
        return []
    px = _pixel_xywh(boxset, images_table).tolist()
    scores = boxset.scores.astype(np.float64).tolist()
    return [
        {"image_id": i, "bbox": bb, "score": s, "category_id": AGNOSTIC_CATEGORY_ID}
        for i, bb, s in zip(boxset.image_ids.tolist(), px, scores)
    ]


def agnostic_ground_truth(gt: dict[str, Any]) -> dict[str, Any]:
    """A copy of COCO annotations ``gt`` with every annotation in one category,
    ``AGNOSTIC_CATEGORY_ID`` ("object"): the ground truth to score exported results against."""
    anns = [dict(a, category_id=AGNOSTIC_CATEGORY_ID) for a in gt.get("annotations", [])]
    cats = [{"id": AGNOSTIC_CATEGORY_ID, "name": "object", "supercategory": "object"}]
    return dict(gt, annotations=anns, categories=cats)


def export_coco_dataset(boxset: BoxSet, images_table: pa.Table, description: str = "") -> dict[str, Any]:
    """COCO *annotations* dict of the priors as pseudo-labels.

    ``images``: every image of ``images_table`` (``file_name`` = its ``file``, relative to the
    dataset root), with or without priors; ``categories``: one, ``{"id": 1, "name": "object"}``;
    ``annotations``: one per box, ``bbox`` pixels ``[x, y, w, h]``, ``area`` w * h, ``iscrowd`` 0,
    ``category_id`` 1, and the prior's ``score`` (ignored by trainers, kept for filtering).
    """
    images = [
        {"id": int(i), "file_name": str(f), "width": int(w), "height": int(h)}
        for i, f, w, h in zip(
            images_table.column("image_id").to_pylist(),
            images_table.column("file").to_pylist(),
            images_table.column("width").to_pylist(),
            images_table.column("height").to_pylist(),
        )
    ]
    px = _pixel_xywh(boxset, images_table).tolist() if len(boxset) else []
    annotations = [
        {
            "id": k + 1,
            "image_id": int(i),
            "category_id": OBJECT_CATEGORY_ID,
            "bbox": bb,
            "area": bb[2] * bb[3],
            "iscrowd": 0,
            "score": float(s),
        }
        for k, (i, bb, s) in enumerate(zip(boxset.image_ids.tolist(), px, boxset.scores.tolist()))
    ]
    return {
        "info": {"description": description or "joindet object priors as pseudo-labels"},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": OBJECT_CATEGORY_ID, "name": "object", "supercategory": "object"}],
    }


def import_coco(json_obj: Any, images_table: pa.Table | None = None) -> tuple[BoxSet, pa.Table]:
    """Boxes and image index from a COCO annotations dict or results list (see ``read_coco``)."""
    imp = read_coco(json_obj, images_table)
    return imp.boxes, imp.images


def read_coco(json_obj: Any, images_table: pa.Table | None = None, source: str = "COCO JSON") -> CocoImport:
    """Read a COCO annotations JSON (a dict with ``images`` and ``annotations``: sizes from its
    images, checked against ``images_table`` when given) or a COCO results JSON (a list of
    detections: sizes from ``images_table``, required). Boxes become normalised xyxy with the
    clipping/rejection rules of the module docstring; all get kind "smoothed"."""
    if isinstance(json_obj, dict):
        if "annotations" not in json_obj or "images" not in json_obj:
            raise StoreError(f"{source}: a COCO annotations JSON needs 'images' and 'annotations' lists")
        own = _images_from_json(json_obj["images"], source)
        if images_table is not None:
            _check_same_sizes(own, validate_images_table(images_table, "the run's images.parquet"), source)
            images = images_table
        else:
            images = own
        records, is_ann = json_obj["annotations"], True
    elif isinstance(json_obj, list):
        if images_table is None:
            raise StoreError(
                f"{source} is a COCO results JSON, which has no image sizes; import it into a run "
                "that has images.parquet, or import the dataset's annotations JSON first"
            )
        images, records, is_ann = images_table, json_obj, False
    else:
        raise StoreError(
            f"{source}: expected a COCO annotations object or a results list, got {type(json_obj).__name__}"
        )
    if not isinstance(records, list):
        raise StoreError(f"{source}: 'annotations' must be a list")
    return _convert(records, images, source, is_ann)


def _convert(records: list[Any], images: pa.Table, source: str, is_ann: bool) -> CocoImport:
    n = len(records)
    raw = np.full((n, 4), np.nan)
    scores = np.ones(n)
    ids = np.zeros(n, np.int64)
    for i, r in enumerate(records):
        if not isinstance(r, dict) or "image_id" not in r:
            raise StoreError(f"{source}: record {i} is not an object with an 'image_id'")
        try:
            ids[i] = int(r["image_id"])
        except (TypeError, ValueError):
            raise StoreError(f"{source}: record {i} has a non-integer image_id {r['image_id']!r}") from None
        bbox, score = r.get("bbox"), r.get("score", 1.0)
        if isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(_is_number(v) for v in bbox):
            raw[i] = bbox
        if _is_number(score):
            scores[i] = float(score)
        else:
            scores[i] = np.nan
    malformed = ~(np.isfinite(raw).all(axis=1) & np.isfinite(scores) & (raw[:, 2] >= 0) & (raw[:, 3] >= 0))
    _, w, h = _sizes_for(ids, images, source) if n else (ids, np.zeros(0), np.zeros(0))
    x0, y0 = raw[:, 0], raw[:, 1]
    x1, y1 = x0 + raw[:, 2], y0 + raw[:, 3]
    with np.errstate(invalid="ignore", divide="ignore"):
        cx0, cy0 = np.clip(x0, 0, w), np.clip(y0, 0, h)
        cx1, cy1 = np.clip(x1, 0, w), np.clip(y1, 0, h)
        # Degeneracy is judged on the stored values (normalised float32): a box a few ulps thick
        # in pixels would otherwise become zero-area on the way in.
        norm = np.clip(np.stack([cx0 / w, cy0 / h, cx1 / w, cy1 / h], axis=1).astype(np.float32), 0.0, 1.0)
        degenerate = ~malformed & ((norm[:, 2] <= norm[:, 0]) | (norm[:, 3] <= norm[:, 1]))
        clipped = ~malformed & ~degenerate & ((cx0 != x0) | (cy0 != y0) | (cx1 != x1) | (cy1 != y1))
    keep = ~malformed & ~degenerate
    boxes = norm[keep]
    return CocoImport(
        boxes=BoxSet.from_arrays(ids[keep], boxes, scores[keep].astype(np.float32), "smoothed"),
        images=images,
        total=n,
        clipped=int(clipped.sum()),
        rejected_malformed=int(malformed.sum()),
        rejected_degenerate=int(degenerate.sum()),
        is_annotations=is_ann,
    )


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


def _images_from_json(images: Any, source: str) -> pa.Table:
    if not isinstance(images, list):
        raise StoreError(f"{source}: 'images' must be a list")
    try:
        cols = {
            "image_id": [int(im["id"]) for im in images],
            "file": [str(im.get("file_name") or f"{im['id']}.jpg") for im in images],
            "width": [int(im["width"]) for im in images],
            "height": [int(im["height"]) for im in images],
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise StoreError(
            f"{source}: every entry of 'images' needs id, width and height ({exc!r} missing or invalid)"
        ) from None
    try:
        return validate_images_table(pa.table(cols), f"{source} 'images'").cast(IMAGES_SCHEMA)
    except SchemaError as exc:
        raise StoreError(str(exc)) from None


def _check_same_sizes(own: pa.Table, run: pa.Table, source: str) -> None:
    run_ids = run.column("image_id").to_numpy()
    order = np.argsort(run_ids)
    own_ids = own.column("image_id").to_numpy()
    pos = np.searchsorted(run_ids, own_ids, sorter=order)
    pos = order[np.clip(pos, 0, len(run_ids) - 1)] if len(run_ids) else pos
    known = (run_ids[pos] == own_ids) if len(run_ids) else np.zeros(len(own_ids), bool)
    for name in ("width", "height"):
        a, b = own.column(name).to_numpy()[known], run.column(name).to_numpy()[pos[known]]
        if (a != b).any():
            i = int(np.flatnonzero(a != b)[0])
            raise StoreError(
                f"{source}: image {int(own_ids[known][i])} has {name} {int(a[i])} but the run's "
                f"images.parquet says {int(b[i])}; this JSON belongs to another dataset"
            )


def _sizes_for(ids: np.ndarray, images: pa.Table, source: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, width float64 [n], height float64 [n]) for each id; error naming an unknown id."""
    known = images.column("image_id").to_numpy()
    order = np.argsort(known, kind="stable")
    sorted_ids = known[order]
    pos = np.searchsorted(sorted_ids, ids)
    pos_c = np.clip(pos, 0, max(len(sorted_ids) - 1, 0))
    ok = (pos < len(sorted_ids)) & (sorted_ids[pos_c] == ids) if len(sorted_ids) else np.zeros(len(ids), bool)
    if not ok.all():
        bad = int(ids[np.flatnonzero(~ok)[0]])
        raise StoreError(
            f"{source}: image_id {bad} is not in the run's image index; the file does not belong to this run"
        )
    rows = order[pos_c]
    w = images.column("width").to_numpy().astype(np.float64)[rows]
    h = images.column("height").to_numpy().astype(np.float64)[rows]
    return ids, w, h
