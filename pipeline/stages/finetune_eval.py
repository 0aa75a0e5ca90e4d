"""Labelled data for finetuning: COCO ground truth as BoxSet + labels, and category-aware COCO AP.

Category convention (detector/presets.py): the model predicts ``num_classes = C + 1`` logits,
index 0 background; label ``k`` in 1..C is the k-th category id of the ground truth in ascending
order (``category_ids[k - 1]``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from faster_coco_eval import COCO, COCOeval_faster

from joindet.detector.postprocess import detections
from joindet.pipeline.stages.coco_eval import quiet
from joindet.pipeline.stages.image_batches import ImageBatches
from joindet.priors import BoxSet

#: COCOeval.stats in order (bbox, maxDets 1/10/100).
COCO_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR@1", "AR@10", "AR@100", "ARs", "ARm", "ARl")


class NoGroundTruthError(ValueError):
    """Finetuning or evaluation was asked of a dataset without box annotations."""


def category_ids(gt: dict[str, Any]) -> list[int]:
    """Sorted category ids of a COCO dict; label k (1-based) means ``category_ids[k - 1]``."""
    ids = sorted({int(c["id"]) for c in gt.get("categories", [])})
    if not ids:
        raise NoGroundTruthError("the ground truth has no categories; finetuning needs a labelled dataset")
    return ids


def ground_truth_boxes(gt: dict[str, Any], cat_ids: list[int]) -> tuple[BoxSet, np.ndarray]:
    """(BoxSet of normalised xyxy boxes of the original images, labels int64 [N] in 1..C).

    Crowd annotations and boxes with no area are left out (they are not training targets);
    coordinates are clipped to the image.
    """
    sizes = {int(im["id"]): (float(im["width"]), float(im["height"])) for im in gt.get("images", [])}
    label_of = {c: k + 1 for k, c in enumerate(cat_ids)}
    rows: list[tuple[int, float, float, float, float, int]] = []
    for ann in gt.get("annotations", []):
        if ann.get("iscrowd", 0) or int(ann["category_id"]) not in label_of:
            continue
        image_id = int(ann["image_id"])
        w, h = sizes[image_id]
        x, y, bw, bh = (float(v) for v in ann["bbox"])
        x0, y0 = min(max(x / w, 0.0), 1.0), min(max(y / h, 0.0), 1.0)
        x1, y1 = min(max((x + bw) / w, 0.0), 1.0), min(max((y + bh) / h, 0.0), 1.0)
        if x1 > x0 and y1 > y0:
            rows.append((image_id, x0, y0, x1, y1, label_of[int(ann["category_id"])]))
    rows.sort(key=lambda r: r[0])  # stable: labels stay aligned with BoxSet rows
    arr = np.asarray([r[:5] for r in rows], np.float64).reshape(-1, 5)
    labels = np.asarray([r[5] for r in rows], np.int64)
    return BoxSet.from_arrays(arr[:, 0].astype(np.int64), arr[:, 1:], assume_sorted=True), labels


@torch.no_grad()
def detect(
    model: torch.nn.Module,
    dataset: Any,
    image_ids: np.ndarray,
    size: int,
    max_size: int,
    batch_size: int,
    device: torch.device,
    top_k: int = 100,
) -> list[dict[str, Any]]:
    """COCO results ``[{"image_id", "category_id" (label index, 1..C), "bbox" [x, y, w, h] pixels, "score"}]``.

    Images are resized deterministically (shorter side ``size``); predicted boxes, fractions of
    the valid image, are fractions of the original too, so they scale by the index's width/height.
    Each image keeps its ``top_k`` best (query, class) pairs (``detector.postprocess.detections``).
    """
    model.eval()
    sizes = {
        int(i): (int(w), int(h))
        for i, w, h in zip(*(dataset.index().column(c).to_pylist() for c in ("image_id", "width", "height")))
    }
    out: list[dict[str, Any]] = []
    for batch in ImageBatches(dataset, np.asarray(image_ids, np.int64), size, max_size, batch_size):
        preds = detections(model(batch.images.to(device), batch.pad_mask.to(device)), top_k=top_k)
        for image_id, p in zip(batch.image_ids.tolist(), preds):
            w, h = sizes[image_id]
            b = p["boxes"].cpu().numpy() * np.array([w, h, w, h], np.float32)
            for (x0, y0, x1, y1), s, lab in zip(b.tolist(), p["scores"].tolist(), p["labels"].tolist()):
                out.append(
                    {
                        "image_id": image_id,
                        "category_id": int(lab),
                        "bbox": [x0, y0, x1 - x0, y1 - y0],
                        "score": float(s),
                    }
                )
    return out


def coco_bbox_metrics(
    gt: dict[str, Any], results: list[dict[str, Any]], cat_ids: list[int], image_ids: np.ndarray | None = None
) -> dict[str, float | None]:
    """Category-aware COCOeval (bbox; faster-coco-eval's C++ COCOeval, pycocotools' numbers) of
    ``results`` whose ``category_id`` is a label index 1..C and ``bbox`` [x, y, w, h] pixels.

    Returns COCO_METRICS (None where COCO reports -1, e.g. no object of that size); all zeros when
    there is no detection at all.
    """
    mapped = [
        dict(r, category_id=cat_ids[r["category_id"] - 1]) for r in results if 1 <= r["category_id"] <= len(cat_ids)
    ]
    if not mapped:
        return dict.fromkeys(COCO_METRICS, 0.0)
    coco_gt = COCO({k: gt[k] for k in ("images", "annotations", "categories")}, print_function=quiet)
    ev = COCOeval_faster(coco_gt, coco_gt.loadRes(mapped), "bbox", print_function=quiet)
    ev.params.imgIds = sorted(coco_gt.getImgIds()) if image_ids is None else [int(i) for i in image_ids]
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return {m: (float(v) if v >= 0 else None) for m, v in zip(COCO_METRICS, ev.stats)}


__all__ = ["COCO_METRICS", "NoGroundTruthError", "category_ids", "coco_bbox_metrics", "detect", "ground_truth_boxes"]
