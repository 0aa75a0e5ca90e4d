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

Vectorised across images: each image's boxes sit in one row of a padded [images, boxes] grid,
sorted within the row by descending weighted score, and the greedy assignment runs as a loop over
the rank k within an image, advancing every image at once: the IoU of every image's k-th box with
that image's current clusters is one [clusters, images] numpy expression, and a join updates
running sums (weighted coordinates, weight) so the fused box is an O(1) update. Images are
ordered by box count so the images still holding a k-th box are a prefix. The cost is
O(max boxes per image) numpy steps per block of images, not a Python loop over images or boxes.
The IoU is screened in float32 with a proven error bound; only images whose decision the bound
cannot certify (max IoU near iou_thr, or a near-tie between clusters) are re-decided in float64,
so the clustering is exactly WBF's float64 one.
"""

from __future__ import annotations

import numpy as np

from joindet.priors.boxset import BoxSet

#: Images x cluster slots per padded block (~ 200 bytes a slot). Small blocks keep the per-step
#: working set in cache and let freed buffers be reused (no fresh page faults); measured fastest
#: at 2^16-2^17 on 10k images x 60 boxes, 30% faster than 2^20.
_SLOTS_PER_BLOCK = 1 << 16


#: m_s of the paper: the weight of the previous priors in Box Smooth.
MOMENTUM = 0.45
#: IoU above which a box joins a cluster (Weighted Boxes Fusion's default, kept by the paper).
IOU_THR = 0.55


def box_smooth(
    prev: BoxSet,
    cur: BoxSet,
    momentum: float = MOMENTUM,
    iou_thr: float = IOU_THR,
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
    sides = [_clean(prev, False), _clean(cur, True)]
    uniq, uniq_cur = _distinct_sorted(sides[0][0]), _distinct_sorted(sides[1][0])
    if not np.array_equal(uniq, uniq_cur):
        uniq = np.union1d(uniq, uniq_cur)
    if not len(uniq):
        return BoxSet.empty()
    # Column of each box in its image's padded row: previous boxes first, then current ones, each
    # in their BoxSet order (the tie order of a stable sort of the concatenation).
    cols, imgs, counts = [], [], np.zeros(len(uniq), np.int64)
    for ids, *_ in sides:
        img = _index_in(uniq, ids)
        n_side = np.bincount(img, minlength=len(uniq))
        first = np.cumsum(n_side) - n_side
        cols.append(np.arange(len(ids)) - first[img] + counts[img])
        imgs.append(img)
        counts += n_side
    img = np.concatenate(imgs)
    col = np.concatenate(cols)
    boxes, scores, from_cur = (np.concatenate([s[k] for s in sides]) for k in range(1, 4))
    # Images ranked by box count (descending), so that in any block the images still holding a
    # k-th box are a prefix and the padded width is the first image's count.
    by_len = np.argsort(-counts, kind="stable")
    pos = np.empty_like(by_len)
    pos[by_len] = np.arange(len(by_len))
    row_pos = pos[img]
    sorted_counts = counts[by_len]
    # Rows grouped by block position: every block gathers its rows with one slice of by_pos.
    by_pos = np.argsort(row_pos, kind="stable")
    row_start = np.concatenate([[0], np.cumsum(sorted_counts)])
    kept = []
    lo = 0
    while lo < len(uniq):
        width = max(int(sorted_counts[lo]), 1)
        # Largest block whose padded size (images x widest image) fits the slot budget.
        hi = min(len(uniq), lo + max(1, _SLOTS_PER_BLOCK // width))
        rows = by_pos[row_start[lo] : row_start[hi]]
        block_img, rank, b, s = _cluster_block(
            hi - lo,
            width,
            row_pos.take(rows) - lo,
            col.take(rows),
            boxes.take(rows, axis=0),
            scores.take(rows),
            from_cur.take(rows),
            momentum,
            iou_thr,
            min_score,
            max_per_image,
        )
        kept.append((by_len[lo:hi].take(block_img), rank, b, s))
        lo = hi
    # Scatter into image-id order; within an image the block already sorted by score.
    per_img = np.zeros(len(uniq), np.int64)
    for img_k, *_ in kept:
        per_img += np.bincount(img_k, minlength=len(uniq))
    first = np.cumsum(per_img) - per_img
    total = int(per_img.sum())
    out_ids = np.empty(total, np.int64)
    out_boxes = np.empty((total, 4), np.float32)
    out_scores = np.empty(total, np.float32)
    for img_k, rank, b, s in kept:
        where = first.take(img_k) + rank
        out_ids[where] = uniq.take(img_k)
        out_boxes[where] = b
        out_scores[where] = s
    return BoxSet.from_arrays(out_ids, out_boxes, out_scores, "smoothed", assume_sorted=True)


def _argsort_rows(key: np.ndarray) -> np.ndarray:
    """Stable argsort of each row of a float [rows, n] array (inf marks padding, whose order is
    irrelevant): the fast unstable sort, redone stably only when a row holds finite ties."""
    order = np.argsort(key, axis=1)
    ranked = np.take_along_axis(key, order, axis=1)
    if ((ranked[:, 1:] == ranked[:, :-1]) & (ranked[:, 1:] < np.inf)).any():
        return np.argsort(key, axis=1, kind="stable")
    return order


def _index_in(uniq: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Position in ``uniq`` (sorted, holding every id) of each id of a non-decreasing int array:
    one binary search per distinct id, not per box."""
    starts = np.flatnonzero(np.concatenate([np.ones(min(len(ids), 1), bool), ids[1:] != ids[:-1]]))
    runs = np.diff(np.append(starts, len(ids)))
    return np.repeat(np.searchsorted(uniq, ids.take(starts)), runs)


def _distinct_sorted(ids: np.ndarray) -> np.ndarray:
    """Distinct values of a non-decreasing int array in O(N) (np.unique would sort again)."""
    return ids[np.concatenate([np.ones(min(len(ids), 1), bool), ids[1:] != ids[:-1]])]


def _clean(boxes: BoxSet, is_cur: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """WBF's input cleaning of one side: (ids [N], boxes float32 [N, 4] clipped to [0, 1], scores
    float32 [N], from_cur bool [N]) without zero-area boxes and negative scores.

    Boxes stay float32 (clipping to 0 and 1 commutes with the exact cast to float64) to halve the
    bytes moved before the per-block float64 work.
    """
    b = np.clip(boxes.boxes, 0.0, 1.0)
    # WBF's float64 area is 0 exactly when a float32 side is 0 (the product cannot underflow).
    keep = (b[:, 2] != b[:, 0]) & (b[:, 3] != b[:, 1]) & (boxes.scores >= 0.0)
    if keep.all():
        return boxes.image_ids, b, boxes.scores, np.full(len(b), is_cur)
    keep = np.flatnonzero(keep)
    return boxes.image_ids[keep], b[keep], boxes.scores[keep], np.full(len(keep), is_cur)


def _cluster_block(
    n_img: int,
    width: int,
    img: np.ndarray,
    col: np.ndarray,
    boxes: np.ndarray,
    scores: np.ndarray,
    from_cur: np.ndarray,
    momentum: float,
    iou_thr: float,
    min_score: float,
    max_per_image: int | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Greedy WBF clustering of a block of images, all images advanced together.

    Box j sits in image img[j] (0 <= img < n_img; images by non-increasing box count) at padded
    column col[j] < width (boxes float32 [N, 4] xyxy, scores float32 [N], from_cur bool [N]);
    its weighted score is score x (1 - momentum if from_cur else momentum), in float64. Returns
    the kept fused clusters (image int64 [K], rank within its image by descending score int64 [K],
    boxes float32 [K, 4], scores float64 [K]).
    """
    scores = scores.astype(np.float64)
    weighted = scores * np.where(from_cur, 1.0 - momentum, momentum)
    key = np.full((n_img, width), np.inf)
    key[img, col] = -weighted
    # Visiting order within each image: descending weighted score, ties in column order.
    order = _argsort_rows(key)
    src = np.full((n_img, width), -1, np.int64)
    src[img, col] = np.arange(len(img))
    src = np.take_along_axis(src, order, axis=1).T.copy()  # [rank, image] -> box row, -1 if none
    present = src >= 0
    # Rank-major inputs [5, rank, image]: x0, y0, x1, y1, area, so that the k-th box of every image
    # is a contiguous row. Absent slots (src -1) gather garbage that is never read: at rank k the
    # images holding a k-th box are a prefix.
    # np.take: numpy's fancy indexing of rows is several times slower than take on large arrays.
    pb = boxes.take(src.ravel(), axis=0).reshape(width, n_img, 4).astype(np.float64)
    pw = weighted.take(src)
    # Increments of the running sums [rank, image, 8]: weighted coordinates, the weight, and the
    # member statistics of the fused score (score, 1, from_cur).
    pinc = np.empty((width, n_img, 8))
    np.multiply(pb, pw[..., None], out=pinc[..., :4])
    pinc[..., 4] = pw
    pinc[..., 5] = scores.take(src)
    pinc[..., 6] = 1.0
    pinc[..., 7] = from_cur.take(src)
    # Cluster-major float32 fused boxes [5, slot, image]: x0, y0, x1, y1, area, read by the
    # screening IoU (contiguous rows of images). Unused slots hold a zero-area box outside
    # [0, 1]: IoU 0, never a match, so no masking is needed.
    fused32 = np.full((5, width, n_img), 3.0, np.float32)
    fused32[4] = 0.0
    flat32 = fused32.reshape(5, -1)
    # float64 running sums, slot-major (slot = cluster x n_img + image) so that a join reads and
    # writes one 64-byte row: weighted x0, y0, x1, y1, the weight, the members' scores, the
    # members and the current members. The float64 fused box is sums / weight, recomputed only
    # for the rare float64 re-check; a cluster of zero weight so far keeps its first box instead
    # (kept in `first`, which also holds the unused slots' 3.0 box).
    sums = np.zeros((width * n_img, 8))
    may_zero = not (pw > 0).all()
    # Without zero weights every used slot has weight > 0 and `first` is only the unused 3.0 box.
    first = np.full((width * n_img, 4), 3.0) if may_zero else None
    # Screening inputs for every rank at once: float32 coordinate/area planes [5, rank, image] and
    # the certified band half-width eps [rank, image] (see _screen).
    bw, bh = pb[..., 2] - pb[..., 0], pb[..., 3] - pb[..., 1]
    barea = bw * bh
    planes32 = np.empty((5, width, n_img), np.float32)
    planes32[:4] = pb.transpose(2, 0, 1)
    planes32[4] = barea
    # Tiny boxes (float32 underflow of the union) get an infinite band: always re-checked.
    eps = (6 * (bw + bh) + 8) / np.maximum(barea, 1e-12)
    eps += 1.0
    eps *= 4 * _U32
    eps[barea <= 1e-12] = np.inf
    band = np.empty((3, width, n_img), np.float32)
    np.subtract(iou_thr, eps, out=band[0])
    np.add(iou_thr, eps, out=band[1])
    np.multiply(eps, 2.0, out=band[2])
    n_clusters = np.zeros(n_img, np.int64)
    buf = np.empty((3, n_img * width), np.float32)
    # active[k]: how many images have more than k boxes (a prefix, as counts are descending).
    active = present.sum(1)
    images = np.arange(n_img)
    weights = np.stack([np.ones(width, np.float32), np.arange(width, dtype=np.float32)])
    for k in range(width):
        a = int(active[k])
        box = pb[k, :a]
        ncl = n_clusters[:a]
        c = int(ncl.max()) if k else 0
        if c:
            matched, best, certain = _screen(fused32, planes32[:, k, :a], band[:, k, :a], c, buf, weights[:, :c])
            if not certain.all():
                unsure = np.flatnonzero(~certain)
                slots = (np.arange(c)[:, None] * n_img + unsure).ravel()
                matched[unsure], best[unsure] = _exact_match(
                    _fused64(sums.take(slots, axis=0), None if first is None else first.take(slots, axis=0)).reshape(
                        5, c, len(unsure)
                    ),
                    box[unsure],
                    iou_thr,
                )
            tgt = np.where(matched, best, ncl)
        else:
            matched = np.zeros(a, bool)
            tgt = ncl.copy()
        at = tgt * n_img + images[:a]
        acc = sums.take(at, axis=0)
        acc += pinc[k, :a]
        sums[at] = acc
        new = np.empty((5, a))
        tw = acc[:, 4]
        if may_zero:
            fresh = ~matched
            first[at[fresh]] = box[fresh]
            zero = tw <= 0
            # A cluster with zero weight so far keeps its first box, so later boxes can match it.
            new[:4] = first.take(at, axis=0).T
            np.divide(acc[:, :4].T, tw, out=new[:4], where=~zero)
        else:
            np.divide(acc[:, :4].T, tw, out=new[:4])
        new[4] = (new[2] - new[0]) * (new[3] - new[1])
        flat32[:, at] = new
        n_clusters[:a] += ~matched
    wsum, ssum, members, n_cur = sums[:, 4:8].T.copy()
    live = (members > 0) & (wsum > 0)
    mean = ssum / np.maximum(members, 1)
    both = (n_cur > 0) & (n_cur < members)
    score = np.where(both, mean, 0.5 * mean)
    live &= score >= min_score
    # Per image (row of the transposed grid): slots by descending score, dead ones last.
    key = np.where(live, -score, np.inf).reshape(width, n_img).T
    order = _argsort_rows(key)
    n_keep = live.reshape(width, n_img).sum(0)
    if max_per_image is not None:
        n_keep = np.minimum(n_keep, max_per_image)
    out_i, rank = np.nonzero(np.arange(width)[None, :] < n_keep[:, None])
    flat = order[out_i, rank] * n_img + out_i
    # The float32 planes hold the fused boxes rounded as the output stores them anyway.
    out_boxes = flat32[:4].take(flat, axis=1).T
    return out_i, rank, out_boxes, score[flat]


#: float32 unit roundoff; _screen's error bound is a multiple of it.
_U32 = 2.0**-24


def _screen(
    fused32: np.ndarray,
    box32: np.ndarray,
    band: np.ndarray,
    c: int,
    buf: np.ndarray,
    weights: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The match of each image's current box, decided in float32 where float64 would agree.

    fused32: float32 [5, slots, images] fused x0, y0, x1, y1, area (only slots < c and images < a
    are read); box32: float32 [5, a] the images' box x0, y0, x1, y1, area; band: float32 [3, a]
    iou_thr - eps, iou_thr + eps, 2 eps. Every float32 coordinate is within u = 2^-24 of the float64
    one, so |IoU32 - IoU64| <= ~u (6 (w + h) + 8) / box area (the union is at least the box's
    area); eps is 4x that. Returns (matched bool [a], best int64 [a], certain bool [a]); best is
    meaningful only where matched and certain. Not certain: the max IoU is within eps of iou_thr,
    or another cluster is within 2 eps of the max (a possible argmax swap); the caller re-checks
    those images in float64.
    """
    a = box32.shape[1]
    bx0, by0, bx1, by1, barea = box32
    lo, hi, eps2 = band
    t1, t2, t3 = (buf[j, : a * c].reshape(c, a) for j in range(3))
    fx0, fy0, fx1, fy1, farea = (plane[:c, :a] for plane in fused32)
    np.maximum(fx0, bx0, out=t1)
    np.minimum(fx1, bx1, out=t2)
    np.subtract(t2, t1, out=t2)
    np.maximum(t2, 0.0, out=t2)
    np.maximum(fy0, by0, out=t1)
    np.minimum(fy1, by1, out=t3)
    np.subtract(t3, t1, out=t3)
    np.maximum(t3, 0.0, out=t3)
    inter = np.multiply(t2, t3, out=t2)
    union = np.add(farea, barea, out=t3)
    np.subtract(union, inter, out=union)
    iou = np.divide(inter, union, out=inter)
    top = iou.max(axis=0)
    # Candidates for the argmax as 0/1 floats; one small matmul gives their count and index sum.
    np.greater_equal(iou, top - eps2, out=t1)
    count, index = weights @ t1
    # An IoU above 1 can only come from a float32 union rounded to ~0: never certain.
    matched = (top > hi) & (top <= 1.0)
    certain = (top < lo) | (matched & (count == 1))
    return matched, index.astype(np.int64), certain


def _fused64(sums: np.ndarray, first: np.ndarray | None) -> np.ndarray:
    """float64 fused boxes [5, n] (x0, y0, x1, y1, area) of slots with running sums [n, 8]: the
    weighted mean, or the slot's first box [n, 4] while its weight is zero (as the loop does;
    None: the unused slots' 3.0 box)."""
    fused = np.empty((5, len(sums)))
    fused[:4] = 3.0 if first is None else first.T
    np.divide(sums[:, :4].T, sums[:, 4], out=fused[:4], where=sums[:, 4] > 0)
    fused[4] = (fused[2] - fused[0]) * (fused[3] - fused[1])
    return fused


def _exact_match(fused: np.ndarray, box: np.ndarray, iou_thr: float) -> tuple[np.ndarray, np.ndarray]:
    """WBF's float64 match: fused float64 [5, c, n] (x0, y0, x1, y1, area), box float64 [n, 4].

    Returns (matched bool [n], best cluster int64 [n]), ties to the lowest cluster index.
    """
    bx0, by0, bx1, by1 = box.T
    barea = (bx1 - bx0) * (by1 - by0)
    fx0, fy0, fx1, fy1, farea = fused
    iw = np.maximum(np.minimum(fx1, bx1) - np.maximum(fx0, bx0), 0.0)
    ih = np.maximum(np.minimum(fy1, by1) - np.maximum(fy0, by0), 0.0)
    inter = iw * ih
    iou = inter / (farea + barea - inter)
    best = iou.argmax(axis=0)
    return iou[best, np.arange(len(box))] > iou_thr, best
