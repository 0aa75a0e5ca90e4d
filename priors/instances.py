"""Instance priors P^i = IG(P^f, M): decoder predictions confirmed by the attention map.

A prediction is kept when its argmax class is foreground (or, optionally, its foreground
probability reaches ``min_score``) and at least a share ``t`` of the
attention-map cells inside its box are foreground (M > mean(M) over valid cells). A cell is
inside a box when its centre is; a box too small to contain any cell centre is judged by the
cell holding its own centre.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

from joindet.priors.regions import foreground_masks, valid_extent


def instance_priors(
    logits: Tensor,
    boxes: Tensor,
    M: Tensor,
    valid: Tensor | None = None,
    t: float = 0.5,
    min_score: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Instance priors of a batch of decoder outputs.

    Args:
        logits: float [B, Q, 2], class logits (index 0 background, 1 foreground).
        boxes: float [B, Q, 4], normalised cxcywh, fractions of the valid (unpadded) image.
        M: float [B, h, w] attention maps; valid: bool [B, h, w] or None (all valid).
        t: minimum share N_f / N_t of foreground cells inside a kept box.
        min_score: None keeps the predictions whose argmax class is foreground (the paper's rule,
            i.e. foreground probability > 0.5); a float keeps those whose foreground probability
            is at least ``min_score`` instead. A detector trained with the focal loss for only a
            few epochs rarely exceeds 0.5 (short CPU runs), which empties P^i under the paper's rule.

    Returns:
        (batch_index int64 [N], boxes float32 [N, 4] normalised xyxy clipped to [0, 1],
        scores float32 [N] = softmax foreground probability), sorted by batch index then query.
        Boxes of zero area after clipping are dropped.
    """
    if logits.ndim != 3 or logits.shape[-1] != 2:
        raise ValueError(f"logits must have shape [B, Q, 2], got {list(logits.shape)}")
    if boxes.shape != (*logits.shape[:2], 4):
        raise ValueError(f"boxes must have shape {[*logits.shape[:2], 4]} to match logits, got {list(boxes.shape)}")
    if M.ndim != 3 or M.shape[0] != logits.shape[0]:
        raise ValueError(f"M must have shape [B, h, w] with B = {logits.shape[0]}, got {list(M.shape)}")
    fg = foreground_masks(M, valid)
    v = np.ones(fg.shape, bool) if valid is None else valid.detach().cpu().numpy().astype(bool)
    rows, cols = valid_extent(v)
    lg = logits.detach().float().cpu()
    prob = lg.softmax(-1)[..., 1].numpy()
    is_fg = (lg[..., 1] > lg[..., 0]).numpy() if min_score is None else prob >= min_score
    cxcywh = boxes.detach().double().cpu().numpy()
    xyxy = np.concatenate([cxcywh[..., :2] - cxcywh[..., 2:] / 2, cxcywh[..., :2] + cxcywh[..., 2:] / 2], -1)
    xyxy = np.clip(xyxy, 0.0, 1.0)
    share = _foreground_share(fg, rows, cols, xyxy, np.clip(cxcywh[..., :2], 0.0, 1.0))
    area = (xyxy[..., 2] - xyxy[..., 0]) * (xyxy[..., 3] - xyxy[..., 1])
    keep = is_fg & (share >= t) & (area > 0)
    b, q = np.nonzero(keep)
    return b.astype(np.int64), xyxy[b, q].astype(np.float32), prob[b, q].astype(np.float32)


def _foreground_share(
    fg: np.ndarray, rows: np.ndarray, cols: np.ndarray, xyxy: np.ndarray, centre: np.ndarray
) -> np.ndarray:
    """Share of foreground cells among the cells whose centres lie in each box.

    fg bool [B, h, w]; rows/cols int [B] valid extent; xyxy float [B, Q, 4] and centre [B, Q, 2]
    normalised to the valid area. Returns float [B, Q] in [0, 1].
    """
    bsz, h, w = fg.shape
    integral = np.zeros((bsz, h + 1, w + 1), np.int64)
    integral[:, 1:, 1:] = fg.cumsum(1).cumsum(2)
    vw, vh = cols[:, None].astype(np.float64), rows[:, None].astype(np.float64)
    # Cell j's centre (j + 0.5) / vw lies in [x0, x1] iff ceil(x0 vw - 0.5) <= j <= floor(x1 vw - 0.5).
    j0 = np.ceil(xyxy[..., 0] * vw - 0.5).astype(np.int64)
    j1 = np.floor(xyxy[..., 2] * vw - 0.5).astype(np.int64)
    i0 = np.ceil(xyxy[..., 1] * vh - 0.5).astype(np.int64)
    i1 = np.floor(xyxy[..., 3] * vh - 0.5).astype(np.int64)
    cj = np.minimum(np.floor(centre[..., 0] * vw), vw - 1).astype(np.int64)
    ci = np.minimum(np.floor(centre[..., 1] * vh), vh - 1).astype(np.int64)
    empty = (j0 > j1) | (i0 > i1)
    j0, j1 = np.where(empty, cj, j0), np.where(empty, cj, j1)
    i0, i1 = np.where(empty, ci, i0), np.where(empty, ci, i1)
    j0, i0 = np.clip(j0, 0, cols[:, None] - 1), np.clip(i0, 0, rows[:, None] - 1)
    j1, i1 = np.clip(j1, 0, cols[:, None] - 1), np.clip(i1, 0, rows[:, None] - 1)
    bi = np.arange(bsz)[:, None]
    inside = integral[bi, i1 + 1, j1 + 1] - integral[bi, i0, j1 + 1] - integral[bi, i1 + 1, j0] + integral[bi, i0, j0]
    total = (i1 - i0 + 1) * (j1 - j0 + 1)
    return inside / np.maximum(total, 1)
