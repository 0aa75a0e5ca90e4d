"""Copy-paste of small prior boxes inside one training image (the paper's Table 7 ablation)."""

from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import box_iou


def paste_small_boxes(
    image: np.ndarray,
    boxes: np.ndarray,
    keep: np.ndarray,
    rng: np.random.Generator,
    max_area: float = 0.02,
    max_pastes: int = 3,
    max_overlap: float = 0.3,
    tries: int = 5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Copy the pixels of small boxes to random places of the same image.

    Args:
        image: uint8 [h, w, 3], modified in a copy.
        boxes: float [m, 4] pixel xyxy in ``image``.
        keep: int [m] source indices of the boxes (into the transform's input boxes).
        max_area: a box is small when its area is below this fraction of the image area.
        max_pastes: at most this many pastes (sources drawn with replacement among small boxes).
        max_overlap: a place is accepted when its IoU with every current box is at most this,
            so pastes do not bury existing objects; after ``tries`` refusals the paste is skipped.

    Returns:
        (image, boxes [m + p, 4], keep [m + p]) with pasted boxes appended; a pasted box's keep
        entry repeats its source's, so its embedding target can be the source's.
    """
    h, w = image.shape[:2]
    iw = np.floor(boxes[:, 2]).astype(int) - np.ceil(boxes[:, 0]).astype(int)
    ih = np.floor(boxes[:, 3]).astype(int) - np.ceil(boxes[:, 1]).astype(int)
    small = np.nonzero((iw >= 2) & (ih >= 2) & (iw * ih < max_area * h * w))[0]
    if len(small) == 0 or max_pastes < 1:
        return image, boxes, keep
    out = image.copy()
    new_boxes, new_keep = [boxes], [keep]
    current = torch.as_tensor(boxes, dtype=torch.float64)
    for src in rng.choice(small, size=int(rng.integers(1, max_pastes + 1)), replace=True):
        x0, y0 = int(np.ceil(boxes[src, 0])), int(np.ceil(boxes[src, 1]))
        pw, ph = int(iw[src]), int(ih[src])
        if pw >= w or ph >= h:
            continue
        for _ in range(tries):
            nx, ny = int(rng.integers(0, w - pw + 1)), int(rng.integers(0, h - ph + 1))
            cand = torch.tensor([[nx, ny, nx + pw, ny + ph]], dtype=torch.float64)
            if float(box_iou(cand, current).max()) <= max_overlap:
                out[ny : ny + ph, nx : nx + pw] = image[y0 : y0 + ph, x0 : x0 + pw]
                current = torch.cat([current, cand])
                new_boxes.append(cand.numpy())
                new_keep.append(np.array([keep[src]]))
                break
    return out, np.concatenate(new_boxes).astype(boxes.dtype), np.concatenate(new_keep).astype(np.int64)
