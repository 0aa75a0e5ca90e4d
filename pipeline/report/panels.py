"""Drawing on one image panel (matplotlib axes): prior boxes by kind, ground truth, eigen attention.

Shared by the report's evolution strip and ``joindet priors plot`` so that both pictures read the
same way:

- each prior kind has its own colour *and* line style (smoothed: thick solid green, region:
  dashed cyan, instance: dotted magenta), drawn thickest first so that two identical boxes of
  different kinds both stay visible; a box's score is written at a corner of its own per kind;
- ground truth: thin white lines with a black edge, drawn last (on top);
- the eigen attention map: scaled to [0, 1] per image, a translucent overlay (``ATTENTION_ALPHA``)
  over the whole original image, read with the figure's colour bar (``attention_colorbar``).

Coordinates: prior boxes are normalised xyxy of the original image; ground truth is pixel
``[x, y, w, h]`` (COCO) of the original image; panels are drawn in pixels of the image shown.
"""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.patheffects as path_effects  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.image import AxesImage  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

#: Line style of each prior kind, in drawing order (thickest first).
KIND_STYLES: dict[str, dict[str, Any]] = {
    "smoothed": {"color": "#2ca02c", "linestyle": "-", "linewidth": 2.6},
    "region": {"color": "#17becf", "linestyle": (0, (4, 2)), "linewidth": 1.5},
    "instance": {"color": "#ff4fd8", "linestyle": (0, (1, 1.2)), "linewidth": 1.8},
}
#: Where each kind writes its score: the box corner (x side, y side).
_SCORE_CORNER = {"smoothed": ("left", "top"), "region": ("left", "bottom"), "instance": ("right", "top")}
GT_STYLE: dict[str, Any] = {"color": "white", "linestyle": "-", "linewidth": 1.1}
ATTENTION_CMAP = "inferno"
ATTENTION_ALPHA = 0.4
_OUTLINE = [path_effects.withStroke(linewidth=2.4, foreground="black")]


def scaled_attention(amap: np.ndarray) -> np.ndarray:
    """float32 [h, w] map scaled to [0, 1] by its own min and max (NaN cells kept; a constant map is 0)."""
    a = np.asarray(amap, np.float32)
    finite = a[np.isfinite(a)]
    if not finite.size:
        return a
    lo, hi = float(finite.min()), float(finite.max())
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def draw_attention(ax: Any, amap: np.ndarray, width: int, height: int) -> AxesImage:
    """The map stretched over the whole ``width`` x ``height`` image, translucent; returns the
    image artist (the colour bar's mappable)."""
    return ax.imshow(
        scaled_attention(amap),
        cmap=ATTENTION_CMAP,
        alpha=ATTENTION_ALPHA,
        vmin=0.0,
        vmax=1.0,
        extent=(0, width, height, 0),
        interpolation="bilinear",
    )


def draw_priors(
    ax: Any,
    kind: str,
    boxes: np.ndarray,
    scores: np.ndarray,
    width: int,
    height: int,
    max_boxes: int | None = None,
    show_scores: bool = True,
) -> int:
    """The ``max_boxes`` highest-scoring boxes (float [n, 4] normalised xyxy) of one kind; returns
    how many were drawn."""
    style = KIND_STYLES.get(kind, {"color": "yellow", "linestyle": "-", "linewidth": 1.2})
    order = np.argsort(-np.asarray(scores), kind="stable")[:max_boxes]
    xside, yside = _SCORE_CORNER.get(kind, ("left", "top"))
    for x0, y0, x1, y1 in np.asarray(boxes)[order] * [width, height, width, height]:
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, **style))
    if show_scores:
        for (x0, y0, x1, y1), s in zip(np.asarray(boxes)[order] * [width, height, width, height], scores[order]):
            x, y = (x0 if xside == "left" else x1), (y0 if yside == "top" else y1)
            ax.text(
                x,
                y,
                f"{float(s):.2f}",
                color="white",
                fontsize=6,
                ha=xside,
                va="top" if yside == "top" else "bottom",
                bbox={"facecolor": style["color"], "alpha": 0.75, "pad": 0.6, "linewidth": 0},
            )
    return len(order)


def draw_ground_truth(ax: Any, xywh: np.ndarray) -> int:
    """Ground-truth boxes (float [k, 4] pixel xywh), white with a black edge; returns k."""
    for x, y, w, h in np.asarray(xywh, np.float64).reshape(-1, 4):
        patch = Rectangle((x, y), w, h, fill=False, **GT_STYLE)
        patch.set_path_effects(_OUTLINE)
        ax.add_patch(patch)
    return len(np.asarray(xywh).reshape(-1, 4))


def legend_handles(kinds: list[str], with_gt: bool) -> list[Line2D]:
    """Legend entries: one line per prior kind in its style, and ground truth."""
    handles = [Line2D([], [], label=f"{k} prior", **KIND_STYLES[k]) for k in kinds if k in KIND_STYLES]
    if with_gt:
        gt = Line2D([], [], label="ground truth", **GT_STYLE)
        gt.set_path_effects(_OUTLINE)
        handles.append(gt)
    return handles


def attention_colorbar(fig: Any, axes: Any, mappable: AxesImage) -> None:
    """One colour bar for every attention overlay of ``fig`` (each scaled to [0, 1] per image)."""
    bar = fig.colorbar(mappable, ax=axes, fraction=0.025, pad=0.03)
    bar.solids.set_alpha(1.0)  # the scale itself opaque; the overlays are ATTENTION_ALPHA
    bar.set_label("eigen attention, scaled per image (1: foreground side)", fontsize=8)
