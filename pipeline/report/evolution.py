"""The evolution strip (like the paper's Fig. 6): a few fixed images, one column per version.

Each cell shows the image, the eigen-attention map that version was mined from (when the run
stored it, ``RUN/attention/vNNNN.zarr``) as a translucent overlay, and that version's smoothed
priors as rectangles. An optional first column shows the ground-truth boxes.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from joindet.pipeline.report.figures import png_bytes  # noqa: E402


@dataclass
class StripCell:
    """One version of one image.

    boxes: float [n, 4] normalised xyxy of the original image; scores: float [n].
    attention: float [h, w] eigen-attention map over the whole image (None: not stored).
    """

    boxes: np.ndarray
    scores: np.ndarray
    attention: np.ndarray | None


@dataclass
class StripRow:
    """One image: uint8 [H, W, 3] RGB, its cells per version, and ground truth as pixel xywh [k, 4]."""

    image_id: int
    image: np.ndarray
    cells: dict[int, StripCell]
    ground_truth: np.ndarray | None = None


def evolution_figure(rows: list[StripRow], versions: list[int], max_boxes: int = 10) -> bytes | None:
    """The strip as PNG bytes (None when there are no rows or no versions).

    ``max_boxes``: the highest-scoring priors drawn per cell (a cell lists how many it has).
    """
    if not rows or not versions:
        return None
    with_gt = any(r.ground_truth is not None for r in rows)
    cols = (["ground truth"] if with_gt else []) + [f"v{v:04d}" for v in versions]
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(2.2 * len(cols), 2.3 * len(rows)), squeeze=False)
    for i, row in enumerate(rows):
        h, w = row.image.shape[:2]
        for j, title in enumerate(cols):
            ax = axes[i][j]
            ax.imshow(row.image)
            ax.set_xticks([])
            ax.set_yticks([])
            if with_gt and j == 0:
                gt = row.ground_truth if row.ground_truth is not None else np.zeros((0, 4))
                for x, y, bw, bh in gt:
                    ax.add_patch(Rectangle((x, y), bw, bh, fill=False, edgecolor="lime", linewidth=1.5))
                ax.set_title(f"image {row.image_id}\nground truth ({len(gt)})", fontsize=8)
                continue
            version = versions[j - (1 if with_gt else 0)]
            cell = row.cells.get(version)
            if cell is None:
                ax.set_title(f"{title}: not committed", fontsize=8)
                continue
            if cell.attention is not None:
                # The map covers the whole original image (valid feature cells only).
                ax.imshow(cell.attention, cmap="jet", alpha=0.45, extent=(0, w, h, 0), interpolation="bilinear")
            order = np.argsort(-cell.scores, kind="stable")[:max_boxes]
            for x0, y0, x1, y1 in cell.boxes[order]:
                ax.add_patch(
                    Rectangle(
                        (x0 * w, y0 * h), (x1 - x0) * w, (y1 - y0) * h, fill=False, edgecolor="yellow", linewidth=1.2
                    )
                )
            overlay = "" if cell.attention is not None else ", no map"
            ax.set_title(f"{title}: {len(cell.boxes)} priors{overlay}", fontsize=8)
            ax.set_xlim(0, w)
            ax.set_ylim(h, 0)
    fig.tight_layout()
    return png_bytes(fig, dpi=80)  # many panels: keep the embedded page light
