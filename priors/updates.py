"""Prior update strategies R_n = U(R_{n-1}, current priors), the baselines of the paper's Table 5.

- ``box_smooth`` (default): WBF-style fusion with momentum, see ``priors.smooth``.
- ``direct``: R_n = the current priors.
- ``nms``: the previous priors whose IoU with every current prior of their image is below
  ``iou_thr``, plus all current priors.
- ``fixed``: R_n = R_0 (DETReg keeps its selective-search boxes all along).

Every strategy returns kind "smoothed" with coordinates clipped to [0, 1]; every strategy but
``fixed`` then applies ``min_score`` and ``max_per_image`` (highest scores kept) the same way.
``fixed`` returns R_0 whole: v0's smoothed boxes got their source's floor and cap when they were
committed (pipeline/stages/init_priors.py), e.g. exactly ``priors.random_crops`` random crops.
"""

from __future__ import annotations

import numpy as np

from joindet.priors.boxset import BoxSet
from joindet.priors.smooth import IOU_THR, MOMENTUM, box_smooth

STRATEGIES = ("box_smooth", "direct", "nms", "fixed")

#: Images x prev x cur IoU entries evaluated at once by the nms strategy (memory bound).
_PAIRS_PER_BLOCK = 1 << 23


def update_priors(
    prev: BoxSet,
    cur: BoxSet,
    strategy: str = "box_smooth",
    *,
    r0: BoxSet | None = None,
    momentum: float = MOMENTUM,
    iou_thr: float = IOU_THR,
    min_score: float = 0.0,
    max_per_image: int | None = None,
) -> BoxSet:
    """Next priors from previous priors ``prev`` and current priors ``cur`` (normalised xyxy).

    ``r0`` (the initial priors R_0) is required by the "fixed" strategy only.
    """
    if strategy == "box_smooth":
        return box_smooth(prev, cur, momentum, iou_thr, min_score, max_per_image)
    if strategy == "direct":
        out = cur
    elif strategy == "nms":
        out = BoxSet.concat([prev.select(_not_overlapping(prev, cur, iou_thr)), cur])
    elif strategy == "fixed":
        if r0 is None:
            raise ValueError("update strategy 'fixed' needs r0 (the v0000 priors); pass r0=store.read(0)")
        return _finish(r0, -np.inf, None)
    else:
        raise ValueError(f"unknown prior update strategy {strategy!r}; set priors.update to one of {list(STRATEGIES)}")
    return _finish(out, min_score, max_per_image)


def _finish(boxes: BoxSet, min_score: float, max_per_image: int | None) -> BoxSet:
    """Clip to [0, 1], drop scores below min_score, keep the best max_per_image per image."""
    keep = boxes.scores >= min_score
    ids, b, s = boxes.image_ids[keep], np.clip(boxes.boxes[keep], 0.0, 1.0), boxes.scores[keep]
    order = np.lexsort((-s, ids))
    ids, b, s = ids[order], b[order], s[order]
    if max_per_image is not None:
        rank = np.arange(len(ids)) - np.searchsorted(ids, ids, side="left")
        ids, b, s = ids[rank < max_per_image], b[rank < max_per_image], s[rank < max_per_image]
    return BoxSet.from_arrays(ids, b, s, "smoothed", assume_sorted=True)


def _not_overlapping(prev: BoxSet, cur: BoxSet, iou_thr: float) -> np.ndarray:
    """bool [len(prev)]: True where a previous box's IoU with every current box of its image < iou_thr.

    Vectorised over images: both sets are padded per image into [I, P, 4] and [I, C, 4] blocks.
    """
    keep = np.ones(len(prev), bool)
    if not len(prev) or not len(cur):
        return keep
    images = np.intersect1d(prev.unique_image_ids(), cur.unique_image_ids())
    if not len(images):
        return keep
    po = np.searchsorted(prev.image_ids, images, side="left")
    pn = np.searchsorted(prev.image_ids, images, side="right") - po
    co = np.searchsorted(cur.image_ids, images, side="left")
    cn = np.searchsorted(cur.image_ids, images, side="right") - co
    per_image = int(pn.max()) * int(cn.max())
    step = max(1, _PAIRS_PER_BLOCK // max(per_image, 1))
    for lo in range(0, len(images), step):
        sl = slice(lo, lo + step)
        pb, pmask, prow = _pad(prev.boxes, po[sl], pn[sl])
        cb, cmask, _ = _pad(cur.boxes, co[sl], cn[sl])
        ix = np.minimum(pb[:, :, None, 2], cb[:, None, :, 2]) - np.maximum(pb[:, :, None, 0], cb[:, None, :, 0])
        iy = np.minimum(pb[:, :, None, 3], cb[:, None, :, 3]) - np.maximum(pb[:, :, None, 1], cb[:, None, :, 1])
        inter = np.maximum(ix, 0.0) * np.maximum(iy, 0.0)
        area_p = (pb[..., 2] - pb[..., 0]) * (pb[..., 3] - pb[..., 1])
        area_c = (cb[..., 2] - cb[..., 0]) * (cb[..., 3] - cb[..., 1])
        union = area_p[:, :, None] + area_c[:, None, :] - inter
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
        iou = np.where(cmask[:, None, :], iou, 0.0)
        hit = (iou >= iou_thr).any(axis=2) & pmask
        keep[prow[hit]] = False
    return keep


def _pad(boxes: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gather rows starts[i] : starts[i] + counts[i] into [I, max(counts), 4] (zeros as padding).

    Returns (padded float64 boxes, bool mask of real slots, int64 source row of each slot).
    """
    width = int(counts.max()) if len(counts) else 0
    slot = np.arange(width)[None, :]
    mask = slot < counts[:, None]
    rows = np.where(mask, starts[:, None] + slot, 0)
    padded = np.where(mask[..., None], boxes[rows].astype(np.float64), 0.0)
    return padded, mask, rows
