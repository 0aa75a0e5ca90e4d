"""Baseline prior sources for the paper's Table 6: random crops (UP-DETR) and selective search
(DETReg). The default sources (region, instance) live in ``priors.regions``/``priors.instances``.
"""

from __future__ import annotations

import cv2
import numpy as np

from joindet.priors.boxset import BoxSet

SELECTIVE_SEARCH_HINT = (
    "selective search needs cv2.ximgproc from opencv-contrib, which is not installed; "
    'run pip install "joindet[selective-search]" (opencv-contrib-python-headless) or choose another prior source'
)


def random_crops(
    image_ids: np.ndarray,
    num_boxes: int = 30,
    *,
    min_size: float = 0.1,
    max_size: float = 0.6,
    seed: int = 0,
) -> BoxSet:
    """UP-DETR-style random crops: ``num_boxes`` random boxes per image, kind "region", score 1.

    Box sides are uniform in [min_size, max_size] (fractions of the image), positions uniform
    inside the image; normalised xyxy. Each image's boxes depend only on (seed, image_id), not on
    which other images are in the call, so sharded mining reproduces them.
    """
    if not 0.0 < min_size <= max_size <= 1.0:
        raise ValueError(f"need 0 < min_size <= max_size <= 1, got min_size={min_size}, max_size={max_size}")
    ids = np.unique(np.asarray(image_ids, np.int64))
    u = _hash_uniform(seed, ids, num_boxes, 4)  # [I, num_boxes, 4] in [0, 1)
    size = min_size + (max_size - min_size) * u[..., 2:]
    corner = u[..., :2] * (1.0 - size)
    boxes = np.concatenate([corner, corner + size], axis=-1).reshape(-1, 4)
    return BoxSet.from_arrays(np.repeat(ids, num_boxes), np.clip(boxes, 0.0, 1.0), None, "region", assume_sorted=True)


def selective_search(image: np.ndarray, max_boxes: int = 30, resize: int = 128) -> np.ndarray:
    """DETReg's priors: OpenCV selective search (fast mode) on the image resized to ``resize`` x
    ``resize`` pixels (DETReg's ``res_size=128``, aspect ratio not kept); the first ``max_boxes``
    proposals (DETReg's ``max_prop``, 30), in OpenCV's order.

    image: uint8 [H, W, 3] RGB. Returns float32 [N, 4] normalised xyxy (N <= max_boxes).
    Raises ImportError naming the extra to install when cv2.ximgproc is missing.
    """
    if not hasattr(cv2, "ximgproc"):
        raise ImportError(SELECTIVE_SEARCH_HINT)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 [H, W, 3] RGB, got {image.dtype} {list(image.shape)}")
    rw = rh = int(resize)
    small = cv2.resize(cv2.cvtColor(image, cv2.COLOR_RGB2BGR), (rw, rh), interpolation=cv2.INTER_AREA)
    ss = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    ss.setBaseImage(small)
    ss.switchToSelectiveSearchFast()
    rects = np.asarray(ss.process(), np.float64).reshape(-1, 4)[:max_boxes]
    boxes = np.stack(
        [rects[:, 0] / rw, rects[:, 1] / rh, (rects[:, 0] + rects[:, 2]) / rw, (rects[:, 1] + rects[:, 3]) / rh], 1
    )
    return np.clip(boxes, 0.0, 1.0).astype(np.float32)


def _hash_uniform(seed: int, ids: np.ndarray, n: int, d: int) -> np.ndarray:
    """Counter-based uniforms in [0, 1): float64 [len(ids), n, d], a SplitMix64 hash of
    (seed, image_id, index), so values depend on nothing else."""
    counter = np.arange(n * d, dtype=np.uint64).reshape(1, n, d)
    with np.errstate(over="ignore"):
        z = (ids.astype(np.uint64)[:, None, None] * np.uint64(0x9E3779B97F4A7C15)) ^ (
            np.uint64(seed & 0xFFFFFFFFFFFFFFFF) * np.uint64(0xBF58476D1CE4E5B9)
        )
        z = z + counter * np.uint64(0x94D049BB133111EB) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)
