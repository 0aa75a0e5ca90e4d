"""Baseline prior sources: random crops and selective search (OpenCV contrib's cv2.ximgproc)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest

from joindet.priors import random_crops, selective_search
from joindet.priors.sources import SELECTIVE_SEARCH_HINT, image_seed


def test_random_crops_shape_range_and_sizes() -> None:
    out = random_crops(np.array([7, 3, 3]), num_boxes=5, min_size=0.1, max_size=0.3, seed=1)
    assert out.image_ids.tolist() == [3] * 5 + [7] * 5 and out.kind_names() == ["region"] * 10
    w, h = out.boxes[:, 2] - out.boxes[:, 0], out.boxes[:, 3] - out.boxes[:, 1]
    assert ((out.boxes >= 0) & (out.boxes <= 1)).all()
    assert ((w >= 0.1 - 1e-6) & (w <= 0.3 + 1e-6) & (h >= 0.1 - 1e-6) & (h <= 0.3 + 1e-6)).all()


def test_random_crops_depend_only_on_seed_and_image() -> None:
    a = random_crops(np.array([1, 2, 3]), seed=4)
    b = random_crops(np.array([3]), seed=4)
    assert np.array_equal(a.for_image(3).boxes, b.boxes)
    assert not np.array_equal(a.for_image(1).boxes, a.for_image(2).boxes)
    assert not np.array_equal(random_crops(np.array([3]), seed=5).boxes, b.boxes)
    with pytest.raises(ValueError, match="min_size"):
        random_crops(np.array([1]), min_size=0.5, max_size=0.2)


def _scene(seed: int = 0) -> np.ndarray:
    """uint8 [96, 160, 3] RGB: noise with three coloured rectangles."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 60, (96, 160, 3), dtype=np.uint8)
    img[20:60, 40:100] = (220, 40, 40)
    img[50:90, 110:150] = (40, 200, 60)
    img[5:30, 5:50] = (30, 60, 230)
    return img


def _opencv_fast_mode(bgr_or_rgb: np.ndarray, seed: int) -> np.ndarray:
    """Every proposal of OpenCV's fast mode on the 128 x 128 resize, int [N, 4] xywh."""
    from joindet.priors import sources

    ss = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    ss.setBaseImage(cv2.resize(bgr_or_rgb, (128, 128)))
    ss.switchToSelectiveSearchFast()
    with sources._RAND_LOCK:
        sources._LIBC.srand(seed)
        return ss.process()


def _rows(a: np.ndarray) -> set[tuple]:
    return {tuple(np.round(r, 6)) for r in a.tolist()}


def test_selective_search_without_contrib_says_how_to_repair_the_install(monkeypatch) -> None:
    # what pip leaves when opencv-python(-headless) is installed after the contrib wheel
    monkeypatch.delattr(cv2, "ximgproc")
    with pytest.raises(ImportError) as err:
        selective_search(np.zeros((32, 32, 3), np.uint8))
    assert str(err.value) == SELECTIVE_SEARCH_HINT
    assert "pip install opencv-contrib-python-headless" in str(err.value)


def test_selective_search_is_detregs_setting() -> None:
    img = _scene()
    boxes = selective_search(img, max_boxes=30, seed=3)
    assert boxes.dtype == np.float32 and boxes.shape == (30, 4) and ((boxes >= 0) & (boxes <= 1)).all()
    assert (boxes[:, 2:] > boxes[:, :2]).all()
    # the first 30 of OpenCV's fast mode on the RGB array resized to 128 x 128, divided by 128
    rects = _opencv_fast_mode(img, 3).astype(np.float64)
    want = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], 1) / 128.0
    assert np.array_equal(boxes, want[:30].astype(np.float32))
    # every proposal: the same set whatever the seed; the RGB channel order (DETReg's) matters
    every = selective_search(img, max_boxes=10**6, seed=4)
    assert _rows(every) == _rows(want)
    assert _rows(every) != _rows(selective_search(cv2.cvtColor(img, cv2.COLOR_RGB2BGR), max_boxes=10**6, seed=4))
    with pytest.raises(ValueError, match="uint8"):
        selective_search(img.astype(np.float32))


def test_selective_search_seed_fixes_opencvs_random_order() -> None:
    img = _scene(1)
    a = selective_search(img, seed=7)
    assert np.array_equal(a, selective_search(img, seed=7))
    assert not np.array_equal(a, selective_search(img, seed=8))  # the top 30 of another order
    # threads mining at once get what one thread gets
    seeds = list(range(8))
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda k: selective_search(img, seed=k), seeds))
    assert all(np.array_equal(t, selective_search(img, seed=k)) for t, k in zip(together, seeds, strict=True))


def test_image_seed_depends_on_version_and_image_only() -> None:
    seeds = {image_seed(v, i) for v in range(3) for i in (0, 1, 581929)}
    assert len(seeds) == 9 and all(0 <= s < 2**32 for s in seeds)
    assert image_seed(2, 17) == image_seed(2, 17)
