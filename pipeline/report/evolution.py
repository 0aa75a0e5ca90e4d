"""The evolution strip (like the paper's Fig. 6): a few fixed images, one column per version.

Each cell (about 290 px of image) shows the image, the eigen-attention map that version was mined from
(when the run stored it, ``RUN/attention/vNNNN.zarr``) as a translucent overlay read with the
figure's colour bar, that version's highest-scoring smoothed priors with their scores, and the
ground-truth boxes on top (pipeline/report/panels.py draws all three). An optional first
column shows the ground truth alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from joindet.pipeline.report.figures import png_bytes  # noqa: E402
from joindet.pipeline.report.panels import (  # noqa: E402
    attention_colorbar,
    draw_attention,
    draw_ground_truth,
    draw_priors,
    legend_handles,
)

#: Inches per cell at ``_DPI``: 4.0 x 100 = 400 px (about 290 px of image once titles, spacing and
#: the colour bar take their share), so that a 160 px image is shown enlarged.
_CELL_IN = 4.0
_DPI = 100


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

    ``max_boxes``: the highest-scoring priors drawn per cell (a cell's title says how many it has).
    """
    if not rows or not versions:
        return None
    with_gt = any(r.ground_truth is not None for r in rows)
    cols = (["ground truth"] if with_gt else []) + [f"v{v:04d}" for v in versions]
    fig, axes = plt.subplots(
        len(rows), len(cols), figsize=(_CELL_IN * len(cols) + 1.0, _CELL_IN * len(rows)), squeeze=False
    )
    mappable = None
    for i, row in enumerate(rows):
        h, w = row.image.shape[:2]
        gt = row.ground_truth if row.ground_truth is not None else np.zeros((0, 4))
        for j, title in enumerate(cols):
            ax = axes[i][j]
            ax.imshow(row.image, extent=(0, w, h, 0))
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlim(0, w)
            ax.set_ylim(h, 0)
            if with_gt and j == 0:
                draw_ground_truth(ax, gt)
                ax.set_title(f"image {row.image_id}: ground truth ({len(gt)})", fontsize=9)
                continue
            version = versions[j - (1 if with_gt else 0)]
            cell = row.cells.get(version)
            if cell is None:
                ax.set_title(f"{title}: not committed", fontsize=9)
                continue
            if cell.attention is not None:
                mappable = draw_attention(ax, cell.attention, w, h)
            shown = draw_priors(ax, "smoothed", cell.boxes, cell.scores, w, h, max_boxes=max_boxes)
            if with_gt:
                draw_ground_truth(ax, gt)
            overlay = "" if cell.attention is not None else ", no map"
            ax.set_title(f"{title}: top {shown} of {len(cell.boxes)} priors{overlay}", fontsize=9)
    axes[-1][0].legend(  # under the last row, whatever space the figure leaves below it
        handles=legend_handles(["smoothed"], with_gt),
        loc="upper left",
        ncol=2,
        fontsize=9,
        bbox_to_anchor=(0.0, -0.02),
    )
    if mappable is not None:
        attention_colorbar(fig, axes, mappable)
    return png_bytes(fig, dpi=_DPI)
