"""Statistics recorded in a version's manifest (``stats``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from joindet.priors.boxset import BoxSet
from joindet.priors.churn import churn


def kind_stats(bs: BoxSet, num_images: int | None = None) -> dict[str, Any]:
    """Boxes per image (mean/median over ``num_images`` images, images without boxes counted as
    0; over images with boxes when None), mean box area (fraction of the image), mean score."""
    ids, counts = bs.image_counts()
    n = max(num_images if num_images is not None else len(ids), len(ids))
    per_image = np.concatenate([counts, np.zeros(n - len(ids), np.int64)])
    wh = bs.boxes[:, 2:] - bs.boxes[:, :2]
    return {
        "boxes": len(bs),
        "images_with_boxes": int(len(ids)),
        "boxes_per_image_mean": round(float(per_image.mean()), 4) if n else 0.0,
        "boxes_per_image_median": float(np.median(per_image)) if n else 0.0,
        "mean_box_area": round(float((wh[:, 0].astype(np.float64) * wh[:, 1]).mean()), 6) if len(bs) else 0.0,
        "mean_score": round(float(bs.scores.astype(np.float64).mean()), 6) if len(bs) else 0.0,
    }


def version_stats(
    kinds: Mapping[str, BoxSet], images: pa.Table | None, parent_smoothed: BoxSet | None
) -> dict[str, Any]:
    """Per-kind statistics plus ``churn`` of "smoothed" against the parent's (None without parent)."""
    n = images.num_rows if images is not None else None
    stats: dict[str, Any] = {k: kind_stats(bs, n) for k, bs in kinds.items()}
    stats["churn"] = churn(parent_smoothed, kinds["smoothed"]).summary() if parent_smoothed is not None else None
    return stats
