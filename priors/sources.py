"""Baseline prior sources for the paper's Table 6: random crops (UP-DETR) and selective search
(DETReg). The default sources (region, instance) live in ``priors.regions``/``priors.instances``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import threading

import cv2
import numpy as np

from joindet.priors.boxset import BoxSet

SELECTIVE_SEARCH_HINT = (
    "selective search needs cv2.ximgproc, but the cv2 module found has no contrib modules: "
    "opencv-python or opencv-python-headless was probably installed after opencv-contrib-python-headless "
    "(all of them install the same cv2 folder, the last one wins); run "
    "pip uninstall -y opencv-python opencv-python-headless opencv-contrib-python-headless && "
    "pip install opencv-contrib-python-headless, or choose another prior source"
)

# OpenCV ranks selective-search regions by level x rand(), the C library's global generator (not
# cv2.setRNGSeed's), so "the first 30 boxes" differ between calls unless rand() is seeded. One
# process-wide lock keeps srand + process of one call together when threads mine at once.
_LIBC = None
with contextlib.suppress(OSError, TypeError):
    _LIBC = ctypes.CDLL(ctypes.util.find_library("c"))
_RAND_LOCK = threading.Lock()


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


def selective_search(image: np.ndarray, max_boxes: int = 30, resize: int = 128, seed: int | None = 0) -> np.ndarray:
    """DETReg's priors (``datasets/selfdet.py``, strategy ``topk``): OpenCV selective search in fast
    mode on the image resized to ``resize`` x ``resize`` pixels (``res_size=128``, aspect ratio not
    kept, cv2.resize's default bilinear interpolation); the first ``max_boxes`` proposals
    (``max_prop``, 30), in OpenCV's order.

    As in DETReg the RGB array goes to OpenCV as it is, although OpenCV reads it as BGR: the HSV
    and Lab images of the fast mode, hence the boxes, are DETReg's only with that channel order.

    OpenCV orders proposals by level x rand() (DETReg draws a fresh order at every load).
    ``seed`` (32-bit) seeds the C library's rand() first, so a seed gives the same boxes on every
    call; None leaves rand() as it is (DETReg's behaviour, not reproducible). Where OpenCV's rand()
    is not the C library's found by ctypes (Windows), seeding has no effect.

    image: uint8 [H, W, 3] RGB. Returns float32 [N, 4] normalised xyxy (N <= max_boxes).
    Raises ImportError saying how to repair the install when cv2.ximgproc is missing.
    """
    if not hasattr(cv2, "ximgproc"):
        raise ImportError(SELECTIVE_SEARCH_HINT)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 [H, W, 3] RGB, got {image.dtype} {list(image.shape)}")
    rw = rh = int(resize)
    ss = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    ss.setBaseImage(cv2.resize(np.ascontiguousarray(image), (rw, rh)))
    ss.switchToSelectiveSearchFast()
    with _RAND_LOCK:
        if seed is not None and _LIBC is not None:
            _LIBC.srand(ctypes.c_uint(seed & 0xFFFFFFFF))
        rects = np.asarray(ss.process(), np.float64).reshape(-1, 4)[:max_boxes]
    boxes = np.stack(
        [rects[:, 0] / rw, rects[:, 1] / rh, (rects[:, 0] + rects[:, 2]) / rw, (rects[:, 1] + rects[:, 3]) / rh], 1
    )
    return np.clip(boxes, 0.0, 1.0).astype(np.float32)


def image_seed(version: int, image_id: int) -> int:
    """The 32-bit selective-search seed of one image in one prior version: a hash of both, so a
    version's boxes of an image do not depend on its shard or on the other images mined."""
    u = _hash_uniform(version, np.asarray([image_id], np.int64), 1, 1)
    return int(u[0, 0, 0] * 2.0**32)


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
