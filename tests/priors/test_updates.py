"""Update strategies behind update_priors: box_smooth, direct, nms, fixed."""

from __future__ import annotations

import numpy as np
import pytest

from joindet.priors import BoxSet, box_smooth, update_priors

PREV = BoxSet.from_arrays(
    [0, 0, 1], [[0.1, 0.1, 0.4, 0.4], [0.6, 0.6, 0.9, 0.9], [0.2, 0.2, 0.5, 0.5]], [0.9, 0.8, 0.7], "smoothed"
)
CUR = BoxSet.from_arrays([0, 2], [[0.1, 0.1, 0.41, 0.4], [0.0, 0.0, 1.2, 0.5]], [0.6, 0.5], "region")


def test_box_smooth_strategy_is_box_smooth() -> None:
    assert update_priors(PREV, CUR, "box_smooth", momentum=0.3).equals(box_smooth(PREV, CUR, momentum=0.3))


def test_direct_takes_current_priors_clipped() -> None:
    out = update_priors(PREV, CUR, "direct")
    assert out.image_ids.tolist() == [0, 2] and out.kind_names() == ["smoothed"] * 2
    assert np.allclose(out.boxes[1], [0, 0, 1, 0.5])


def test_nms_keeps_previous_boxes_not_overlapping_current() -> None:
    out = update_priors(PREV, CUR, "nms", iou_thr=0.5)
    # image 0: the first previous box overlaps the current one (IoU ~0.97) and is replaced
    got = out.for_image(0).boxes
    assert np.allclose(got[np.argsort(got[:, 0])], [[0.1, 0.1, 0.41, 0.4], [0.6, 0.6, 0.9, 0.9]])
    assert len(out.for_image(1)) == 1 and len(out.for_image(2)) == 1
    assert len(update_priors(PREV, BoxSet.empty(), "nms")) == len(PREV)


def test_fixed_returns_r0_and_needs_it() -> None:
    r0 = BoxSet.from_arrays([5], [[0.2, 0.2, 0.3, 0.3]], [1.0], "region")
    out = update_priors(PREV, CUR, "fixed", r0=r0)
    assert out.image_ids.tolist() == [5] and np.array_equal(out.boxes, r0.boxes)
    with pytest.raises(ValueError, match="r0"):
        update_priors(PREV, CUR, "fixed")


def test_score_floor_and_cap_apply_to_every_strategy() -> None:
    for strategy in ("direct", "nms"):
        out = update_priors(PREV, CUR, strategy, min_score=0.55, max_per_image=1)
        assert (out.scores >= 0.55).all()
        assert np.bincount(out.image_ids).max() <= 1


def test_unknown_strategy_names_the_setting() -> None:
    with pytest.raises(ValueError, match="priors.update"):
        update_priors(PREV, CUR, "wbf3")
