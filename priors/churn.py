"""Churn between two sets of priors: which boxes survived, appeared or disappeared.

Per image, boxes of ``prev`` and ``cur`` are matched one-to-one by the Hungarian algorithm
(``scipy.optimize.linear_sum_assignment``, maximising total IoU); a pair counts as matched when
its IoU >= ``iou_thr`` (0.5). Unmatched ``cur`` boxes are *added*, unmatched ``prev`` boxes
*removed*. Boxes are normalised xyxy (BoxSet convention); IoU is scale-free, so the image size is
not needed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from joindet.priors.boxset import BoxSet


@dataclass(frozen=True)
class Churn:
    """Totals and per-image counts (arrays aligned with ``image_ids``, sorted ascending)."""

    matched: int
    added: int
    removed: int
    mean_iou: float  # mean IoU of matched pairs; NaN when nothing matched
    image_ids: np.ndarray  # int64 [M], every image with a box in prev or cur
    matched_per_image: np.ndarray  # int64 [M]
    added_per_image: np.ndarray  # int64 [M]
    removed_per_image: np.ndarray  # int64 [M]

    def summary(self) -> dict[str, float | int | None]:
        """JSON-friendly totals (mean_iou None when nothing matched)."""
        return {
            "matched": self.matched,
            "added": self.added,
            "removed": self.removed,
            "mean_iou": None if np.isnan(self.mean_iou) else round(float(self.mean_iou), 6),
        }

    def most_changed(self, k: int = 10) -> list[dict[str, int]]:
        """The ``k`` images with most added + removed boxes (ties: smaller image_id first)."""
        changed = self.added_per_image + self.removed_per_image
        order = np.lexsort((self.image_ids, -changed))[:k]
        return [
            {
                "image_id": int(self.image_ids[i]),
                "matched": int(self.matched_per_image[i]),
                "added": int(self.added_per_image[i]),
                "removed": int(self.removed_per_image[i]),
            }
            for i in order
            if changed[i] > 0
        ]


def pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of float [n, 4] and [m, 4] xyxy boxes -> float64 [n, m] (0 where the union is 0)."""
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def match_boxes(prev: np.ndarray, cur: np.ndarray, iou_thr: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-to-one matches between two boxes arrays of one image.

    Returns (prev_idx int64 [k], cur_idx int64 [k], iou float64 [k]) for pairs with IoU >= iou_thr.
    """
    if len(prev) == 0 or len(cur) == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0)
    iou = pairwise_iou(prev, cur)
    rows, cols = linear_sum_assignment(np.where(iou >= iou_thr, iou, 0.0), maximize=True)
    keep = iou[rows, cols] >= iou_thr
    return rows[keep].astype(np.int64), cols[keep].astype(np.int64), iou[rows[keep], cols[keep]]


def churn(prev: BoxSet, cur: BoxSet, iou_thr: float = 0.5) -> Churn:
    """Matched / added / removed boxes of ``cur`` against ``prev`` (all kinds taken together)."""
    ids = np.union1d(np.unique(prev.image_ids), np.unique(cur.image_ids)).astype(np.int64)
    po, co = prev.offsets(ids), cur.offsets(ids)
    n_prev, n_cur = np.diff(po), np.diff(co)
    matched = np.zeros(len(ids), np.int64)
    iou_sum = 0.0
    for i in np.flatnonzero((n_prev > 0) & (n_cur > 0)):
        _, _, iou = match_boxes(prev.boxes[po[i] : po[i + 1]], cur.boxes[co[i] : co[i + 1]], iou_thr)
        matched[i] = len(iou)
        iou_sum += float(iou.sum())
    total = int(matched.sum())
    return Churn(
        matched=total,
        added=int((n_cur - matched).sum()),
        removed=int((n_prev - matched).sum()),
        mean_iou=iou_sum / total if total else float("nan"),
        image_ids=ids,
        matched_per_image=matched,
        added_per_image=n_cur - matched,
        removed_per_image=n_prev - matched,
    )
