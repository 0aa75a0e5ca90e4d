"""Baseline prior sources: random crops and selective search (needs opencv-contrib)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from joindet.priors import random_crops, selective_search
from joindet.priors.sources import SELECTIVE_SEARCH_HINT


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


@pytest.mark.skipif(hasattr(cv2, "ximgproc"), reason="opencv-contrib is installed")
def test_selective_search_without_contrib_says_how_to_install() -> None:
    with pytest.raises(ImportError) as err:
        selective_search(np.zeros((32, 32, 3), np.uint8))
    assert str(err.value) == SELECTIVE_SEARCH_HINT
    assert 'pip install "joindet[selective-search]"' in str(err.value)


@pytest.mark.skipif(not hasattr(cv2, "ximgproc"), reason="needs opencv-contrib (cv2.ximgproc)")
def test_selective_search_finds_boxes() -> None:
    img = np.full((96, 160, 3), 30, np.uint8)
    img[20:60, 40:100] = (220, 40, 40)
    boxes = selective_search(img, max_boxes=30)
    assert 0 < len(boxes) <= 30 and ((boxes >= 0) & (boxes <= 1)).all()
    with pytest.raises(ValueError, match="uint8"):
        selective_search(img.astype(np.float32))
