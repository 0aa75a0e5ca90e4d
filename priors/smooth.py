"""Box Smooth: fuse the previous priors R_{n-1} with the current ones, clustering as WBF does.

Clustering (identical to ``ensemble_boxes.weighted_boxes_fusion`` on two box lists with weights
(m, 1 - m) and one label): coordinates are clipped to [0, 1]; zero-area boxes and negative
scores are dropped; each image's boxes are visited in order of descending weighted score
(score x weight); a box joins the existing cluster whose *current fused box* it overlaps most when
that IoU exceeds ``iou_thr`` (ties: the oldest cluster), otherwise it starts a new cluster. The
fused box is the weighted-score average of the member boxes (eq. 8 of the paper), recomputed
after every join.

Fused score (joindet's rule, not WBF's): the plain mean of the members' scores, halved when the
cluster holds boxes from only one of the two sets. A prior that the model stops finding (only in
the previous set) therefore fades round after round until ``min_score`` or ``max_per_image``
drops it; a new find (only in the current set) must be confirmed once to reach full score.
Clusters whose total weight is zero (momentum 1 and only current boxes, momentum 0 and only
previous boxes, or all-zero scores) have no defined fused box and are dropped.

Vectorised across images: boxes are sorted globally by (image, -weighted score), and the greedy
assignment runs as a loop over the rank k within an image, advancing every image at once on
padded [images, clusters] arrays. The cost is O(max boxes per image) numpy steps, not a Python
loop over images or boxes.
"""

from __future__ import annotations

import numpy as np

from priors.boxset import BoxSet

#: Images x cluster slots per padded block: bounds memory (~ 40 bytes a slot) at COCO scale.
_SLOTS_PER_BLOCK = 1 << 22


def box_smooth(
    prev: BoxSet,
    cur: BoxSet,
    momentum: float = 0.45,
    iou_thr: float = 0.55,
    min_score: float = 0.0,
    max_per_image: int | None = None,
) -> BoxSet:
    """R_n = BS(cur, prev): fused priors of every image present in ``prev`` or ``cur``.

    Args:
        prev: previous priors R_{n-1}, normalised xyxy; weight ``momentum``.
        cur: current priors (region + instance), normalised xyxy; weight ``1 - momentum``.
        momentum: m_s in [0, 1]; 1 keeps the previous boxes, 0 takes the current ones.
        iou_thr: a box joins a cluster when its IoU with the fused box is strictly greater.
        min_score: fused boxes scoring below this are dropped.
        max_per_image: keep at most this many boxes per image (highest scores), None for all.

    Returns:
        BoxSet of kind "smoothed", normalised xyxy in [0, 1], each image's boxes by descending
        score.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    if not 0.0 <= iou_thr <= 1.0:
        raise ValueError(f"iou_thr must be in [0, 1], got {iou_thr}")
    if max_per_image is not None and max_per_image < 0:
        raise ValueError(f"max_per_image must be >= 0 or None, got {max_per_image}")
    ids = np.concatenate([prev.image_ids, cur.image_ids])
    boxes = np.clip(np.concatenate([prev.boxes, cur.boxes]).astype(np.float64), 0.0, 1.0)
    scores = np.concatenate([prev.scores, cur.scores]).astype(np.float64)
    from_cur = np.concatenate([np.zeros(len(prev), bool), np.ones(len(cur), bool)])
    weighted = scores * np.where(from_cur, 1.0 - momentum, momentum)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = (area != 0.0) & (scores >= 0.0)
    # One global sort: by image, then descending weighted score (WBF's visiting order).
    order = np.flatnonzero(keep)[np.lexsort((-weighted[keep], ids[keep]))]
    ids, boxes, scores, from_cur, weighted = ids[order], boxes[order], scores[order], from_cur[order], weighted[order]
    uniq, starts, counts = np.unique(ids, return_index=True, return_counts=True)
    parts: list[tuple[np.ndarray, ...]] = []
    lo = 0
    while lo < len(uniq):
        hi = lo + 1
        width = counts[lo]
        # Grow the block while its padded size stays under the slot budget.
        while hi < len(uniq) and (hi + 1 - lo) * max(width, counts[hi]) <= _SLOTS_PER_BLOCK:
            width = max(width, counts[hi])
            hi += 1
        parts.append(
            _cluster_block(uniq[lo:hi], starts[lo:hi], counts[lo:hi], boxes, scores, from_cur, weighted, iou_thr)
        )
        lo = hi
    if not parts:
        return BoxSet.empty()
    out_ids, out_boxes, out_scores = (np.concatenate(c) for c in zip(*parts))
    sel = out_scores >= min_score
    out_ids, out_boxes, out_scores = out_ids[sel], out_boxes[sel], out_scores[sel]
    order = np.lexsort((-out_scores, out_ids))
    out_ids, out_boxes, out_scores = out_ids[order], out_boxes[order], out_scores[order]
    if max_per_image is not None:
        first = np.searchsorted(out_ids, out_ids, side="left")
        sel = np.arange(len(out_ids)) - first < max_per_image
        out_ids, out_boxes, out_scores = out_ids[sel], out_boxes[sel], out_scores[sel]
    return BoxSet.from_arrays(
        out_ids, out_boxes.astype(np.float32), out_scores.astype(np.float32), "smoothed", assume_sorted=True
    )


def _cluster_block(
    image_ids: np.ndarray,
    starts: np.ndarray,
    counts: np.ndarray,
    boxes: np.ndarray,
    scores: np.ndarray,
    from_cur: np.ndarray,
    weighted: np.ndarray,
    iou_thr: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy WBF clustering of a block of images, all images advanced together.

    Rows of image i are starts[i] : starts[i] + counts[i] of the globally sorted arrays (boxes
    float64 [N, 4] xyxy, scores/weighted float64 [N], from_cur bool [N]). Returns the fused
    (image_ids int64 [K], boxes float64 [K, 4], scores float64 [K]) of clusters with weight > 0.
    """
    # Longest images first, so the images still active at rank k are a prefix.
    by_len = np.argsort(-counts, kind="stable")
    image_ids, starts, counts = image_ids[by_len], starts[by_len], counts[by_len]
    n_img, width = len(counts), int(counts[0])
    fused = np.zeros((n_img, width, 4))
    acc = np.zeros((n_img, width, 4))
    wsum = np.zeros((n_img, width))
    ssum = np.zeros((n_img, width))
    members = np.zeros((n_img, width), np.int64)
    has_prev = np.zeros((n_img, width), bool)
    has_cur = np.zeros((n_img, width), bool)
    n_clusters = np.zeros(n_img, np.int64)
    slots = np.arange(width)
    # active[k]: how many images have more than k boxes (a prefix, as counts are descending).
    active = np.searchsorted(-counts, -np.arange(width), side="left")
    for k in range(width):
        a = int(active[k])
        rows = starts[:a] + k
        box, w = boxes[rows], weighted[rows]
        ncl = n_clusters[:a]
        if k:
            cand = fused[:a, :k]
            ix0 = np.maximum(cand[..., 0], box[:, None, 0])
            iy0 = np.maximum(cand[..., 1], box[:, None, 1])
            ix1 = np.minimum(cand[..., 2], box[:, None, 2])
            iy1 = np.minimum(cand[..., 3], box[:, None, 3])
            inter = np.maximum(ix1 - ix0, 0.0) * np.maximum(iy1 - iy0, 0.0)
            area_c = (cand[..., 2] - cand[..., 0]) * (cand[..., 3] - cand[..., 1])
            area_b = (box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1])
            iou = inter / (area_c + area_b[:, None] - inter)
            iou[slots[None, :k] >= ncl[:, None]] = -1.0
            best = iou.argmax(axis=1)
            matched = iou[np.arange(a), best] > iou_thr
            target = np.where(matched, best, ncl)
        else:
            matched = np.zeros(a, bool)
            target = ncl.copy()
        r = np.arange(a)
        acc[r, target] += w[:, None] * box
        wsum[r, target] += w
        ssum[r, target] += scores[rows]
        members[r, target] += 1
        has_prev[r, target] |= ~from_cur[rows]
        has_cur[r, target] |= from_cur[rows]
        tw = wsum[r, target]
        # A cluster with zero weight so far keeps its first box, so later boxes can still match it.
        first = np.where(matched[:, None], fused[r, target], box)
        fused[r, target] = np.where((tw > 0)[:, None], acc[r, target] / np.where(tw > 0, tw, 1.0)[:, None], first)
        n_clusters[:a] += ~matched
    live = (slots[None, :] < n_clusters[:, None]) & (wsum > 0)
    img, slot = np.nonzero(live)
    mean = ssum[img, slot] / members[img, slot]
    both = has_prev[img, slot] & has_cur[img, slot]
    return image_ids[img], fused[img, slot], np.where(both, mean, 0.5 * mean)
