"""Class-agnostic COCO box evaluation with faster-coco-eval's C++ COCOeval (pycocotools' numbers).

pycocotools spends nearly all of a bbox evaluation in ``COCOeval.evaluateImg``, a Python loop over
IoU thresholds x detections x ground-truth boxes per image and area range (minutes for a few
thousand images of 100 class-agnostic boxes). faster-coco-eval runs the same matching and
accumulation in C++ and gives pycocotools' numbers (``tests/pipeline/stages/test_coco_eval.py``
compares all 12 stats with a plain pycocotools ``COCOeval`` run: crowd boxes, area ranges, images
without boxes or without detections, tied scores, more than ``maxDets`` detections).

Class-agnostic: every ground-truth annotation is relabelled to one category (id 1) and COCOeval
runs with ``useCats = 0``. The detections are handed over as a COCO object built straight from
the array (the records ``loadRes`` would make, without its per-row Python loop and polygons).

Coordinates: COCO boxes ``[x, y, w, h]`` in pixels of the original image. Ground truth: a COCO
dict (``area`` defaults to w x h and ``iscrowd`` to 0). Detections: float64 [N, 7] rows
``[image_id, x, y, w, h, score, category]`` (the category is ignored; area is w x h, ids 1..N in
row order, as ``loadRes`` numbers them).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from faster_coco_eval import COCO, COCOeval_faster

#: The one category every box is evaluated as.
_OBJECT = [{"id": 1, "name": "object"}]


def quiet(*_: Any, **__: Any) -> None:
    """faster-coco-eval's print_function: no progress lines."""


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for the duration (restored as it was).

    Feeding COCOeval makes a dict per box plus faster-coco-eval's per-image lists; with the collector
    on, its passes over the growing heap dominate building them (the records of 500,000 boxes:
    2.1-2.7 s CPU with it, 0.6-0.7 s without). Cycles, if any, are collected once it is back on."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class GroundTruth:
    """The annotations of a COCO dict as one category, indexed once for many evaluations."""

    def __init__(self, gt: dict, image_ids: np.ndarray | None = None) -> None:
        """``image_ids``: keep the images and annotations of these ids only (None: all)."""
        images, anns = gt.get("images") or [], gt.get("annotations") or []
        if image_ids is not None:
            keep = set(np.asarray(image_ids, np.int64).tolist())
            images = [im for im in images if int(im["id"]) in keep]
            anns = [a for a in anns if int(a["image_id"]) in keep]
        # Fresh records with only the keys COCOeval reads (the caller's dicts are left untouched).
        records = [
            {
                "id": int(a["id"]),
                "image_id": int(a["image_id"]),
                "category_id": 1,
                "bbox": [float(v) for v in a["bbox"]],
                "area": float(a["area"]) if "area" in a else float(a["bbox"][2] * a["bbox"][3]),
                "iscrowd": int(bool(a.get("iscrowd", 0))),
            }
            for a in anns
        ]
        self.images = [{"id": int(im["id"])} for im in images]
        self.coco = COCO({"images": self.images, "annotations": records, "categories": _OBJECT}, print_function=quiet)

    def detections(self, detections: np.ndarray) -> COCO:
        """``detections`` [N, 7] as the COCO result object ``loadRes`` would build (bbox fields)."""
        d = np.asarray(detections, np.float64).reshape(-1, 7)
        anns = [
            {"id": i, "image_id": m, "category_id": 1, "bbox": b, "score": s, "area": a, "iscrowd": 0}
            for i, m, b, s, a in zip(
                range(1, len(d) + 1),
                d[:, 0].astype(np.int64).tolist(),
                d[:, 1:5].tolist(),
                d[:, 5].tolist(),
                (d[:, 3] * d[:, 4]).tolist(),
            )
        ]
        return COCO({"images": self.images, "annotations": anns, "categories": _OBJECT}, print_function=quiet)


def coco_stats(
    truth: GroundTruth, detections: np.ndarray, image_ids: np.ndarray, max_dets: tuple[int, ...] = (1, 10, 100)
) -> np.ndarray:
    """COCOeval ``stats`` float64 [12] (bbox, useCats=0; -1 where undefined, e.g. no ground-truth
    box in an area range) of ``detections`` [N, 7] on ``image_ids``.

    Images without detections count as misses; no detection at all gives 0 where there is a
    non-crowd ground-truth box (pycocotools refuses an empty result; its rules give the same).
    """
    with _collector_paused():
        ev = COCOeval_faster(truth.coco, truth.detections(detections), "bbox", print_function=quiet)
        ev.params.useCats = 0
        ev.params.catIds = [1]
        ev.params.maxDets = list(max_dets)
        ev.params.imgIds = sorted({int(i) for i in np.asarray(image_ids).tolist()})
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats, np.float64)
