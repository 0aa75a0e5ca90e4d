"""Class-agnostic COCO box evaluation: pycocotools' COCOeval fed per-image results computed in numpy.

pycocotools spends nearly all of its bbox evaluation in ``COCOeval.evaluateImg``, a Python loop
over IoU thresholds x detections x ground-truth boxes per image and area range (minutes for a
few thousand images of 100 class-agnostic boxes). ``evaluate_images`` computes the same
per-image records (``evalImgs``: dtIds, gtIds, dtMatches, gtMatches, dtScores, gtIgnore,
dtIgnore) for all images at once, by the same rules:

- IoU of a detection with a box is pycocotools' ``bbIou`` (same float64 operations, so the same
  bits); a crowd box's IoU is intersection / detection area;
- detections of an image are taken by descending score (stable), at most ``maxDets[-1]``;
- ground-truth boxes are ignored when crowd or outside the area range; a detection matches,
  among the boxes still free (crowd boxes always are) with IoU >= min(t, 1 - 1e-10), the
  non-ignored box of largest IoU (the last one on ties), else the ignored one of largest IoU;
- an unmatched detection outside the area range is ignored.

COCOeval's own ``accumulate`` and ``summarize`` then turn the records into AP/AR, so the numbers
are pycocotools' (``tests/pipeline/stages/test_coco_eval.py`` compares the records and the
metrics with a plain ``COCOeval.evaluate`` run).

Inputs are arrays. Ground truth: ``image`` int64 [G] (image ids), ``box`` float64 [G, 4] COCO
``[x, y, w, h]`` in pixels, ``area`` float64 [G] (the annotation's area), ``crowd`` bool [G],
``ann_id`` int64 [G], in annotation order. Detections: float64 [N, 7] rows
``[image_id, x, y, w, h, score, category]`` in pixels (the category is ignored).
"""

from __future__ import annotations

import contextlib
import copy
import io
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Ground-truth boxes x detections x thresholds x area ranges per block of images in the matching
#: loop (float64/bool temporaries of this many elements).
_CELLS_PER_BLOCK = 1 << 21


@dataclass(frozen=True)
class GroundTruth:
    """Ground-truth boxes of many images as arrays (module docstring), sorted by image (stable)."""

    image: np.ndarray
    box: np.ndarray
    area: np.ndarray
    crowd: np.ndarray
    ann_id: np.ndarray

    @classmethod
    def from_coco(cls, gt: dict, image_ids: np.ndarray | None = None) -> GroundTruth:
        """The annotations of a COCO dict (of ``image_ids`` only, when given); area defaults to
        w x h and iscrowd to 0, as the evaluate stage has always read them."""
        anns = gt.get("annotations") or []
        if image_ids is not None:
            keep = set(np.asarray(image_ids, np.int64).tolist())
            anns = [a for a in anns if int(a["image_id"]) in keep]
        image = np.fromiter((int(a["image_id"]) for a in anns), np.int64, len(anns))
        box = np.asarray([a["bbox"] for a in anns], np.float64).reshape(-1, 4)
        area = np.fromiter(
            (float(a["area"]) if "area" in a else float(a["bbox"][2] * a["bbox"][3]) for a in anns),
            np.float64,
            len(anns),
        )
        crowd = np.fromiter((bool(a.get("iscrowd", 0)) for a in anns), bool, len(anns))
        ann_id = np.fromiter((int(a["id"]) for a in anns), np.int64, len(anns))
        order = np.argsort(image, kind="stable")
        return cls(image[order], box[order], area[order], crowd[order], ann_id[order])

    def select(self, image_ids: np.ndarray) -> GroundTruth:
        """The boxes of ``image_ids`` only (order kept)."""
        keep = np.isin(self.image, np.asarray(image_ids, np.int64))
        return GroundTruth(self.image[keep], self.box[keep], self.area[keep], self.crowd[keep], self.ann_id[keep])


def coco_params(image_ids: np.ndarray, max_dets: tuple[int, ...] = (1, 10, 100)) -> Any:
    """pycocotools bbox ``Params`` for class-agnostic evaluation of ``image_ids``."""
    from pycocotools.cocoeval import Params

    p = Params(iouType="bbox")
    p.imgIds = sorted({int(i) for i in image_ids})
    p.catIds = [1]
    p.useCats = 0
    p.maxDets = list(max_dets)
    return p


def evaluate_images(gt: GroundTruth, detections: np.ndarray, params: Any) -> list[dict | None]:
    """pycocotools' ``evalImgs`` (area-range major, then image, in ``params.imgIds`` order; None
    for an image without ground truth or detections) of ``detections`` [N, 7]."""
    img_ids = np.asarray(params.imgIds, np.int64)
    n_img, area_rng = len(img_ids), np.asarray(params.areaRng, np.float64)
    thr = np.minimum(np.asarray(params.iouThrs, np.float64), 1 - 1e-10)
    max_det = int(params.maxDets[-1])
    gpos = _positions(img_ids, gt.image)
    g_keep = gpos >= 0
    g_img, g_box, g_area, g_crowd, g_id = (
        gpos[g_keep],
        gt.box[g_keep],
        gt.area[g_keep],
        gt.crowd[g_keep],
        gt.ann_id[g_keep],
    )
    det = np.asarray(detections, np.float64).reshape(-1, 7)
    d_ids = np.arange(1, len(det) + 1, dtype=np.int64)  # loadRes numbers detections from 1
    dpos = _positions(img_ids, det[:, 0].astype(np.int64))
    d_keep = dpos >= 0
    det, d_ids, dpos = det[d_keep], d_ids[d_keep], dpos[d_keep]
    # Per image: descending score, stable (mergesort on -score), at most max_det.
    order = np.lexsort((-det[:, 5], dpos))
    det, d_ids, dpos = det[order], d_ids[order], dpos[order]
    rank = np.arange(len(dpos)) - np.searchsorted(dpos, dpos)
    top = rank < max_det
    det, d_ids, dpos, rank = det[top], d_ids[top], dpos[top], rank[top]
    n_gt = np.bincount(g_img, minlength=n_img)
    n_dt = np.bincount(dpos, minlength=n_img)
    g_first = np.cumsum(n_gt) - n_gt
    d_first = np.cumsum(n_dt) - n_dt
    d_area = det[:, 3] * det[:, 4]
    records: list[list[dict | None]] = [[None] * n_img for _ in area_rng]
    # Blocks of images by descending ground-truth count, sized so that the [image, area, threshold,
    # max(boxes, detections)] arrays hold about _CELLS_PER_BLOCK cells.
    order_img = np.argsort(-n_gt, kind="stable")
    d_w = max(int(n_dt.max()) if n_img else 1, 1)
    lo = 0
    while lo < n_img:
        g_w = max(int(n_gt[order_img[lo]]), 1)
        hi = min(n_img, lo + max(1, _CELLS_PER_BLOCK // (max(g_w, d_w) * len(thr) * len(area_rng))))
        block = order_img[lo:hi]
        _match_block(
            block,
            (g_first[block], n_gt[block], g_box, g_area, g_crowd, g_id),
            (d_first[block], n_dt[block], det, d_ids, d_area),
            thr,
            area_rng,
            img_ids,
            max_det,
            records,
        )
        lo = hi
    return [r for per_area in records for r in per_area]


def summarize(eval_imgs: list[dict | None], params: Any) -> np.ndarray:
    """COCOeval.accumulate + summarize of ``eval_imgs`` -> ``stats`` float [12] (-1: undefined)."""
    from pycocotools.cocoeval import COCOeval

    ev = COCOeval(iouType="bbox")
    ev.params = params
    ev._paramsEval = copy.deepcopy(params)
    ev.evalImgs = eval_imgs
    with contextlib.redirect_stdout(io.StringIO()):
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats, np.float64)


def _positions(sorted_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Index of each id in ``sorted_ids`` (-1 when absent)."""
    pos = np.searchsorted(sorted_ids, ids)
    pos = np.minimum(pos, max(len(sorted_ids) - 1, 0))
    found = (sorted_ids[pos] == ids) if len(sorted_ids) else np.zeros(len(ids), bool)
    return np.where(found, pos, -1)


def _padded(first: np.ndarray, count: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Row index [B, width] of each image's rows first[b] + [0, count[b]) (0 as padding) and validity."""
    slot = np.arange(width)
    valid = slot[None, :] < count[:, None]
    return np.where(valid, first[:, None] + slot[None, :], 0), valid


def _bb_iou(d: np.ndarray, g: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """pycocotools ``bbIou`` of detections [B, D, 4] with boxes [B, G, 4] xywh -> [B, D, G]."""
    d, g = d[:, :, None, :], g[:, None, :, :]
    w = np.minimum(d[..., 2] + d[..., 0], g[..., 2] + g[..., 0]) - np.maximum(d[..., 0], g[..., 0])
    h = np.minimum(d[..., 3] + d[..., 1], g[..., 3] + g[..., 1]) - np.maximum(d[..., 1], g[..., 1])
    inter = w * h
    da, ga = d[..., 2] * d[..., 3], g[..., 2] * g[..., 3]
    union = np.where(crowd[:, None, :], da, da + ga - inter)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / union
    return np.where((w > 0) & (h > 0), iou, 0.0)


def _match_block(
    block: np.ndarray,
    gts: tuple[np.ndarray, ...],
    dts: tuple[np.ndarray, ...],
    thr: np.ndarray,
    area_rng: np.ndarray,
    img_ids: np.ndarray,
    max_det: int,
    records: list[list[dict | None]],
) -> None:
    """Greedy matching of a block of images, every (image, area range, threshold) at once, one
    detection rank per step; writes each image's records into ``records[area][image]``."""
    g_first, g_count, g_box, g_area, g_crowd, g_id = gts
    d_first, d_count, det, d_ids, d_area = dts
    width_g, width_d = max(int(g_count.max()), 1), max(int(d_count.max()), 1)
    g_rows, g_valid = _padded(g_first, g_count, width_g)
    d_rows, d_valid = _padded(d_first, d_count, width_d)
    n_b, n_a, n_t = len(block), len(area_rng), len(thr)
    crowd = g_crowd[g_rows] & g_valid if len(g_crowd) else np.zeros(g_rows.shape, bool)
    garea = g_area[g_rows] if len(g_area) else np.zeros(g_rows.shape)
    # ignore[b, a, g]: crowd or outside the area range (padding: never eligible, see `free`).
    ignore = (
        crowd[:, None, :] | (garea[:, None, :] < area_rng[None, :, 0:1]) | (garea[:, None, :] > area_rng[None, :, 1:2])
    )
    gid = np.where(g_valid, g_id[g_rows] if len(g_id) else 0, 0)
    iou = (
        _bb_iou(det[d_rows, 1:5], g_box[g_rows], crowd)
        if len(g_box) and len(det)
        else np.zeros((n_b, width_d, width_g))
    )
    free = np.broadcast_to(g_valid[:, None, None, :], (n_b, n_a, n_t, width_g)).copy()
    dtm = np.zeros((n_b, n_a, n_t, width_d))
    dt_ig = np.zeros((n_b, n_a, n_t, width_d), bool)
    gtm = np.zeros((n_b, n_a, n_t, width_g))
    ign = ignore[:, :, None, :]
    did = np.where(d_valid, d_ids[d_rows] if len(d_ids) else 0, 0)
    bb, aa, tt = np.indices((n_b, n_a, n_t), sparse=False)
    for k in range(width_d if g_valid.any() else 0):
        ok = (iou[:, k, None, None, :] >= thr[None, None, :, None]) & (free | crowd[:, None, None, :])
        ok &= d_valid[:, k, None, None, None]
        pick = np.full((n_b, n_a, n_t), -1)
        for group in (ok & ~ign, ok & ign):  # non-ignored boxes first, then ignored ones
            val = np.where(group, iou[:, k, None, None, :], -1.0)
            last_max = width_g - 1 - np.argmax(val[..., ::-1], axis=-1)
            pick = np.where((pick < 0) & group.any(-1), last_max, pick)
        hit = pick >= 0
        m = np.where(hit, pick, 0)
        dtm[..., k] = np.where(hit, gid[bb, m], 0)
        dt_ig[..., k] = hit & ign[bb, aa, 0, m]
        b, a, t, mm = bb[hit], aa[hit], tt[hit], m[hit]
        gtm[b, a, t, mm] = did[b, k]
        free[b, a, t, mm] &= crowd[b, mm]
    d_out = (d_area[d_rows][:, None, :] < area_rng[None, :, 0:1]) | (
        d_area[d_rows][:, None, :] > area_rng[None, :, 1:2]
    )
    dt_ig |= (dtm == 0) & d_out[:, :, None, :]
    for b, img in enumerate(block):
        ng, nd = int(g_count[b]), int(d_count[b])
        if ng == 0 and nd == 0:
            continue
        scores = det[d_rows[b, :nd], 5].tolist()
        d_list = did[b, :nd].tolist()
        for a in range(n_a):
            gt_order = np.argsort(ignore[b, a, :ng], kind="mergesort")
            records[a][img] = {
                "image_id": int(img_ids[img]),
                "category_id": -1,
                "aRng": area_rng[a].tolist(),
                "maxDet": max_det,
                "dtIds": d_list,
                "gtIds": gid[b, gt_order].tolist(),
                "dtMatches": dtm[b, a, :, :nd],
                "gtMatches": gtm[b, a][:, gt_order],
                "dtScores": scores,
                "gtIgnore": ignore[b, a, gt_order].astype(np.int64),
                "dtIgnore": dt_ig[b, a, :, :nd],
            }
