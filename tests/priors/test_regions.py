"""Region priors: components, cell-edge normalisation over the valid area, scores, options."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from joindet.priors import BoxSet, region_priors


def test_components_become_cell_edge_boxes() -> None:
    m = torch.zeros(1, 6, 8)
    m[0, 1:3, 2:5] = 1.0  # 2 x 3 block
    m[0, 5, 7] = 1.0  # single cell in the corner
    b, boxes, scores = region_priors(m)
    assert b.tolist() == [0, 0]
    assert np.allclose(boxes[0], [2 / 8, 1 / 6, 5 / 8, 3 / 6])  # largest first
    assert np.allclose(boxes[1], [7 / 8, 5 / 6, 1.0, 1.0])
    assert np.allclose(scores, [1.0, 1.0])
    BoxSet.from_arrays(b, boxes, scores, "region")  # BoxSet-ready


def test_normalised_by_valid_extent_not_padded_map() -> None:
    m = torch.zeros(1, 6, 8)
    valid = torch.zeros(1, 6, 8, dtype=torch.bool)
    valid[0, :3, :4] = True
    m[0, 0:3, 2:4] = 1.0
    m[0, 4:, 6:] = 5.0  # padding: ignored even though it is large
    _, boxes, _ = region_priors(m, valid)
    assert np.allclose(boxes, [[0.5, 0.0, 1.0, 1.0]])


def test_score_is_foreground_share_in_box_and_connectivity() -> None:
    m = torch.zeros(1, 4, 4)
    m[0, 0, 0] = m[0, 1, 1] = m[0, 2, 2] = 1.0  # a diagonal
    b4, _, _ = region_priors(m, connectivity=4)
    b8, boxes8, scores8 = region_priors(m, connectivity=8)
    assert len(b4) == 3 and len(b8) == 1
    assert np.allclose(boxes8, [[0, 0, 0.75, 0.75]]) and np.allclose(scores8, [3 / 9])


def test_min_cells_and_max_boxes() -> None:
    m = torch.zeros(1, 8, 8)
    m[0, 0:3, 0:3] = 1
    m[0, 5:7, 5:7] = 1
    m[0, 0, 7] = 1
    assert len(region_priors(m, min_cells=2)[0]) == 2
    b, boxes, _ = region_priors(m, max_boxes=1)
    assert len(b) == 1 and np.allclose(boxes[0], [0, 0, 3 / 8, 3 / 8])


def test_degenerate_map_gives_no_priors_and_bad_inputs_raise() -> None:
    b, boxes, scores = region_priors(torch.zeros(2, 5, 5))
    assert b.shape == (0,) and boxes.shape == (0, 4) and scores.shape == (0,)
    with pytest.raises(ValueError, match="connectivity"):
        region_priors(torch.zeros(1, 3, 3), connectivity=6)
    with pytest.raises(ValueError, match="valid must have shape"):
        region_priors(torch.zeros(1, 3, 3), torch.ones(1, 3, 4, dtype=torch.bool))


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 12), st.integers(2, 12), st.integers(0, 2**31 - 1))
def test_boxes_cover_all_foreground_and_stay_in_unit_square(h: int, w: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    m = torch.from_numpy(rng.normal(size=(1, h, w)))
    b, boxes, scores = region_priors(m, connectivity=8)
    assert ((boxes >= 0) & (boxes <= 1)).all() and ((scores > 0) & (scores <= 1)).all()
    fg = (m[0] > m[0].mean()).numpy()
    covered = np.zeros_like(fg)
    for x0, y0, x1, y1 in boxes:
        covered[round(y0 * h) : round(y1 * h), round(x0 * w) : round(x1 * w)] = True
    assert covered[fg].all()
