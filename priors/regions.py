"""Region priors P^r = RG(M): bounding rectangles of the connected foreground of an attention map.

A map M [h, w] (from ``eigen_attention``) is thresholded at the mean of its valid cells; every
connected foreground component (``cv2.connectedComponentsWithStats``) gives one box. Valid cells
form a top-left rectangle (images are padded bottom/right), and boxes are normalised by that
rectangle's extent using cell *edges*, so a box maps back onto the original image whatever the
padding: a component spanning columns j0..j1 of vw valid columns gives x0 = j0 / vw,
x1 = (j1 + 1) / vw.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import Tensor


def foreground_masks(M: Tensor | np.ndarray, valid: Tensor | np.ndarray | None = None) -> np.ndarray:
    """Foreground masks M > mean(M over valid cells), False on invalid cells.

    M: float [B, h, w]; valid: bool [B, h, w] or None (all valid). Returns bool [B, h, w].
    An all-zero (degenerate) map has no foreground.
    """
    m = _to_numpy(M).astype(np.float64)
    if m.ndim != 3:
        raise ValueError(f"M must have shape [B, h, w], got {list(m.shape)}")
    v = np.ones(m.shape, bool) if valid is None else _to_numpy(valid).astype(bool)
    if v.shape != m.shape:
        raise ValueError(f"valid must have shape {list(m.shape)} to match M, got {list(v.shape)}")
    count = np.maximum(v.sum((1, 2)), 1)
    mean = np.where(v, m, 0.0).sum((1, 2)) / count
    return (m > mean[:, None, None]) & v


def valid_extent(valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows int64 [B], cols int64 [B]): the size of each map's top-left valid rectangle (>= 1)."""
    rows = np.maximum(valid.any(axis=2).sum(axis=1), 1)
    cols = np.maximum(valid.any(axis=1).sum(axis=1), 1)
    return rows.astype(np.int64), cols.astype(np.int64)


def region_priors(
    M: Tensor | np.ndarray,
    valid: Tensor | np.ndarray | None = None,
    connectivity: int = 4,
    min_cells: int = 1,
    max_boxes: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Region priors of a batch of attention maps.

    Args:
        M: float [B, h, w] attention maps (foreground positive).
        valid: bool [B, h, w], True on real cells; None means all valid.
        connectivity: 4 or 8, the neighbourhood of connected components.
        min_cells: components with fewer cells are ignored.
        max_boxes: keep at most this many boxes per map, largest components first.

    Returns:
        (batch_index int64 [N], boxes float32 [N, 4] normalised xyxy of the valid area,
        scores float32 [N] = share of foreground cells inside each box), sorted by batch index,
        then by component size (largest first). Feed to ``BoxSet.from_arrays`` after mapping
        batch_index to image ids.
    """
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    fg = foreground_masks(M, valid)
    v = np.ones(fg.shape, bool) if valid is None else _to_numpy(valid).astype(bool)
    rows, cols = valid_extent(v)
    out_b, out_boxes, out_scores = [], [], []
    for b in range(fg.shape[0]):
        if not fg[b].any():
            continue
        n, _, stats, _ = cv2.connectedComponentsWithStats(fg[b].astype(np.uint8), connectivity=connectivity)
        st = stats[1:].astype(np.int64)  # label 0 is the background
        st = st[st[:, cv2.CC_STAT_AREA] >= min_cells]
        st = st[np.argsort(-st[:, cv2.CC_STAT_AREA], kind="stable")]
        if max_boxes is not None:
            st = st[:max_boxes]
        if not len(st):
            continue
        x, y = st[:, cv2.CC_STAT_LEFT], st[:, cv2.CC_STAT_TOP]
        w, h = st[:, cv2.CC_STAT_WIDTH], st[:, cv2.CC_STAT_HEIGHT]
        integral = cv2.integral(fg[b].astype(np.uint8))  # [h + 1, w + 1], exclusive prefix sums
        inside = integral[y + h, x + w] - integral[y, x + w] - integral[y + h, x] + integral[y, x]
        boxes = np.stack([x / cols[b], y / rows[b], (x + w) / cols[b], (y + h) / rows[b]], axis=1)
        out_b.append(np.full(len(st), b, np.int64))
        out_boxes.append(np.clip(boxes, 0.0, 1.0))
        out_scores.append(inside / (w * h))
    if not out_b:
        return np.zeros(0, np.int64), np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
    return (
        np.concatenate(out_b),
        np.concatenate(out_boxes).astype(np.float32),
        np.concatenate(out_scores).astype(np.float32),
    )


def _to_numpy(x: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)
