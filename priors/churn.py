"""Churn between two sets of priors: which boxes survived, appeared or disappeared.

Per image, boxes of ``prev`` and ``cur`` are matched one-to-one by the Hungarian algorithm
(``scipy.optimize.linear_sum_assignment``, maximising total IoU); a pair counts as matched when
its IoU >= ``iou_thr`` (0.5). Unmatched ``cur`` boxes are *added*, unmatched ``prev`` boxes
*removed*. Boxes are normalised xyxy (BoxSet convention); IoU is scale-free, so the image size is
not needed.

Vectorised across images (``churn``): the pairs that can reach ``iou_thr`` are screened for
blocks of images at once in float32 (a padded [prev, cur, images] grid, with a margin that
covers float32 rounding), and their IoU is then computed exactly as ``pairwise_iou`` does, in
float64. The pairs with IoU >= ``iou_thr`` (edges) split into connected components, which the
optimal assignment treats independently. A component that is a star (one box and neighbours
that touch nothing else, a single pair included) matches exactly one pair, its best IoU, with no
solver; only the other components go through ``linear_sum_assignment``, one call per image on
just those boxes. Counts and the summed IoU equal the per-image Hungarian matching
(``match_boxes``) of the whole image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from joindet.priors.boxset import BoxSet
from joindet.priors.threads import thread_map


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
    # scipy.optimize takes ~0.7 s to import: loaded on first use, not by ``joindet priors ls``.
    from scipy.optimize import linear_sum_assignment

    iou = pairwise_iou(prev, cur)
    rows, cols = linear_sum_assignment(np.where(iou >= iou_thr, iou, 0.0), maximize=True)
    keep = iou[rows, cols] >= iou_thr
    return rows[keep].astype(np.int64), cols[keep].astype(np.int64), iou[rows[keep], cols[keep]]


#: Padded [prev, cur, images] pairs screened per block (4 MB of float32 per plane): about 100
#: images of 100 x 100 boxes, enough images on the inner axis for the vector loops.
_PAIRS_PER_BLOCK = 1 << 20
#: Relative margin of the float32 screen: a pair is re-checked in float64 when
#: inter (1 + t) >= t (area_a + area_b) (1 - margin). float32 rounds each of these products to
#: within 4 ulp (< 3e-7 relative), far inside the margin.
_SCREEN_MARGIN = 1e-5


def churn(prev: BoxSet, cur: BoxSet, iou_thr: float = 0.5, threads: int | None = None) -> Churn:
    """Matched / added / removed boxes of ``cur`` against ``prev`` (all kinds taken together).

    ``threads``: blocks of images matched at once (None: ``priors.threads.default_threads()``);
    the result is the same for any count.

    Equal to matching every image with ``match_boxes`` (Hungarian on the IoU matrix), computed for
    all images at once (module docstring); mean_iou may differ in the last bits (summation order).
    """
    ids = np.union1d(prev.unique_image_ids(), cur.unique_image_ids()).astype(np.int64)
    po, co = prev.offsets(ids), cur.offsets(ids)
    n_prev, n_cur = np.diff(po), np.diff(co)
    matched = np.zeros(len(ids), np.int64)
    iou_sum = 0.0
    both = np.flatnonzero((n_prev > 0) & (n_cur > 0))
    order = both[np.argsort(-n_prev[both], kind="stable")]
    widest_cur = int(n_cur[both].max()) if len(both) else 0
    blocks = []
    lo = 0
    while lo < len(order):
        rows = int(n_prev[order[lo]])
        hi = min(len(order), lo + max(1, _PAIRS_PER_BLOCK // (rows * widest_cur)))
        blocks.append(order[lo:hi])
        lo = hi

    def match(block: np.ndarray) -> tuple[np.ndarray, float]:
        return _match_block(prev.boxes, cur.boxes, po[block], n_prev[block], co[block], n_cur[block], iou_thr)

    # Blocks are independent; summed in block order, so the result does not depend on threads.
    for block, (m, s) in zip(blocks, thread_map(match, blocks, threads)):
        matched[block] = m
        iou_sum += s
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


def _padded(boxes: np.ndarray, start: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``start[b] : start[b] + count[b]`` of ``boxes`` as float32 planes [4, width, B] (image
    innermost; padding: the zero-area box at 3.0, which overlaps nothing in [0, 1]) and their
    global row ids [width, B] (-1 for padding)."""
    width = int(count.max())
    slot = np.arange(width)
    rows = start[None, :] + slot[:, None]
    valid = slot[:, None] < count[None, :]
    planes = np.full((4, width, len(start)), 3.0, np.float32)
    planes[:, valid] = boxes.take(rows[valid], axis=0).T
    return planes, np.where(valid, rows, -1)


def _match_block(
    prev: np.ndarray,
    cur: np.ndarray,
    p_start: np.ndarray,
    p_count: np.ndarray,
    c_start: np.ndarray,
    c_count: np.ndarray,
    iou_thr: float,
) -> tuple[np.ndarray, float]:
    """Matched pairs per image (int64 [B]) and their summed IoU for a block of B images, image b
    holding prev rows p_start[b] + [0, p_count[b]) and cur rows c_start[b] + [0, c_count[b])."""
    a, a_rows = _padded(prev, p_start, p_count)
    b, b_rows = _padded(cur, c_start, c_count)
    n_img, width_p, width_c = len(p_start), a.shape[1], b.shape[1]
    # Screen: inter (1 + t) >= t (area_a + area_b) (1 - margin), in float32 on the padded grid
    # [prev slot, cur slot, image]: the image axis innermost keeps both operands of every
    # broadcast contiguous (2x faster than a stride-0 inner loop).
    shape = (width_p, width_c, n_img)
    w, tmp = np.empty(shape, np.float32), np.empty(shape, np.float32)
    np.minimum(a[2][:, None, :], b[2][None, :, :], out=w)
    w -= np.maximum(a[0][:, None, :], b[0][None, :, :], out=tmp)
    np.maximum(w, 0.0, out=w)
    h = np.minimum(a[3][:, None, :], b[3][None, :, :])
    h -= np.maximum(a[1][:, None, :], b[1][None, :, :], out=tmp)
    w *= h
    if iou_thr > 0:
        k = np.float32(iou_thr * (1.0 - _SCREEN_MARGIN) / (1.0 + iou_thr))
        area_a = (a[2] - a[0]) * (a[3] - a[1]) * k
        area_b = (b[2] - b[0]) * (b[3] - b[1]) * k
        flat = np.flatnonzero(w >= np.add(area_a[:, None, :], area_b[None, :, :], out=h))
    else:  # every pair reaches a threshold <= 0
        flat = np.arange(w.size)
    # np.nonzero of a 3-d mask is ~50x slower than flatnonzero + divmod.
    i, jb = np.divmod(flat, width_c * n_img)
    j, img = np.divmod(jb, n_img)
    pr, cr = a_rows[i, img], b_rows[j, img]
    real = (pr >= 0) & (cr >= 0)
    img, i, j, pr, cr = img[real], i[real], j[real], pr[real], cr[real]
    iou = _exact_iou(prev[pr], cur[cr])
    edge = iou >= iou_thr
    img, i, j, iou = img[edge], i[edge], j[edge], iou[edge]
    if not len(img):
        return np.zeros(n_img, np.int64), 0.0
    # Local node ids: prev box (img, i) -> img * width_p + i, cur box (img, j) -> img * width_c + j.
    pn, cn = img * width_p + i, img * width_c + j
    deg_p = np.bincount(pn, minlength=n_img * width_p)
    deg_c = np.bincount(cn, minlength=n_img * width_c)
    # A prev box whose neighbours all have degree 1 is the centre of a star component (a lone
    # pair included); likewise a cur box. A star matches one pair: its best IoU.
    star_p = np.zeros(n_img * width_p, np.int64)
    np.maximum.at(star_p, pn, deg_c[cn])
    star_c = np.zeros(n_img * width_c, np.int64)
    np.maximum.at(star_c, cn, deg_p[pn])
    on_p = star_p[pn] == 1
    on_c = (star_c[cn] == 1) & ~on_p
    matched = np.zeros(n_img, np.int64)
    best_p = np.zeros(n_img * width_p)
    np.maximum.at(best_p, pn[on_p], iou[on_p])
    best_c = np.zeros(n_img * width_c)
    np.maximum.at(best_c, cn[on_c], iou[on_c])
    centres_p = np.flatnonzero(best_p > 0) if iou_thr > 0 else np.unique(pn[on_p])
    centres_c = np.flatnonzero(best_c > 0) if iou_thr > 0 else np.unique(cn[on_c])
    matched += np.bincount(centres_p // width_p, minlength=n_img)
    matched += np.bincount(centres_c // width_c, minlength=n_img)
    total = float(best_p[centres_p].sum()) + float(best_c[centres_c].sum())
    rest = np.flatnonzero(~on_p & ~on_c)
    if len(rest):
        rest = rest[np.argsort(pn[rest], kind="stable")]  # by image, then prev slot
        total += _assign_components(img[rest], i[rest], j[rest], iou[rest], matched)
    return matched, total


def _assign_components(img: np.ndarray, i: np.ndarray, j: np.ndarray, iou: np.ndarray, matched: np.ndarray) -> float:
    """Hungarian matching of the non-star edges (image img, prev slot i, cur slot j, IoU; sorted by
    image, then i), one ``linear_sum_assignment`` per image on the boxes these edges touch; adds
    each image's matched pairs to ``matched`` and returns their summed IoU."""
    from scipy.optimize import linear_sum_assignment  # lazy, as in match_boxes

    # Compact per-image row / column numbers of the touched boxes (vectorised), then one padded
    # weight matrix per image: the loop below only slices and solves.
    uimg, first, n_edges = np.unique(img, return_index=True, return_counts=True)
    which = np.repeat(np.arange(len(uimg)), n_edges)
    row = _dense_rank(which, i)
    col = _dense_rank(which, j)
    n_rows = np.maximum.reduceat(row, first) + 1
    n_cols = np.maximum.reduceat(col, first) + 1
    weight = np.zeros((len(uimg), int(n_rows.max()), int(n_cols.max())))
    weight[which, row, col] = iou
    is_edge = np.zeros(weight.shape, bool)
    is_edge[which, row, col] = True
    picks_k, picks_r, picks_c = [], [], []
    for k in range(len(uimg)):
        r, c = linear_sum_assignment(weight[k, : n_rows[k], : n_cols[k]], maximize=True)
        picks_k.append(np.full(len(r), k))
        picks_r.append(r)
        picks_c.append(c)
    k, r, c = np.concatenate(picks_k), np.concatenate(picks_r), np.concatenate(picks_c)
    keep = is_edge[k, r, c]
    matched[uimg] += np.bincount(k[keep], minlength=len(uimg))
    return float(weight[k[keep], r[keep], c[keep]].sum())


def _dense_rank(group: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Rank of each value among the distinct values of its group (0, 1, ...), for non-decreasing
    ``group`` and small non-negative int ``value``."""
    key = group.astype(np.int64) * (int(value.max()) + 1) + value
    uniq, inv = np.unique(key, return_inverse=True)
    starts = np.searchsorted(uniq, group * (int(value.max()) + 1))
    return inv - starts


def _exact_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of row pairs (float [K, 4] each) -> float64 [K], bit for bit as ``pairwise_iou``."""
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    w = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    h = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = w * h
    union = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
