"""Instance priors: foreground argmax, foreground share >= t, cxcywh -> clipped xyxy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from joindet.priors import instance_priors


def _map() -> torch.Tensor:
    m = torch.zeros(1, 4, 4)
    m[0, :2, :2] = 1.0  # foreground: the top-left quarter
    return m


def test_keeps_foreground_predictions_on_foreground_cells() -> None:
    logits = torch.tensor([[[0.0, 2.0], [2.0, 0.0], [0.0, 1.0], [0.0, 3.0]]])
    boxes = torch.tensor(
        [[[0.25, 0.25, 0.5, 0.5], [0.25, 0.25, 0.5, 0.5], [0.75, 0.75, 0.5, 0.5], [0.25, 0.5, 0.5, 1.0]]]
    )
    b, xyxy, scores = instance_priors(logits, boxes, _map())
    # q0: fg, share 1; q1: background argmax; q2: share 0; q3: share 0.5 (kept at t=0.5)
    assert b.tolist() == [0, 0]
    assert np.allclose(xyxy, [[0, 0, 0.5, 0.5], [0, 0, 0.5, 1.0]])
    assert np.allclose(scores, torch.softmax(logits[0, [0, 3]], -1)[:, 1].numpy())
    assert len(instance_priors(logits, boxes, _map(), t=0.6)[0]) == 1


def test_boxes_clipped_and_tiny_box_judged_by_its_centre_cell() -> None:
    logits = torch.tensor([[[0.0, 1.0], [0.0, 1.0]]])
    boxes = torch.tensor([[[0.1, 0.1, 0.6, 0.6], [0.1, 0.1, 0.01, 0.01]]])
    b, xyxy, _ = instance_priors(logits, boxes, _map())
    assert len(b) == 2
    assert np.allclose(xyxy[0], [0, 0, 0.4, 0.4]) and ((xyxy >= 0) & (xyxy <= 1)).all()


def test_valid_area_normalisation() -> None:
    m = torch.zeros(1, 4, 4)
    valid = torch.zeros(1, 4, 4, dtype=torch.bool)
    valid[0, :2, :2] = True
    m[0, 0, 0] = 1.0  # top-left valid cell is foreground: the top-left quarter of the image
    logits = torch.tensor([[[0.0, 1.0], [0.0, 1.0]]])
    boxes = torch.tensor([[[0.25, 0.25, 0.5, 0.5], [0.75, 0.75, 0.5, 0.5]]])
    b, xyxy, _ = instance_priors(logits, boxes, m, valid)
    assert len(b) == 1 and np.allclose(xyxy, [[0, 0, 0.5, 0.5]])


def test_degenerate_map_and_bad_shapes() -> None:
    logits = torch.tensor([[[0.0, 1.0]]])
    boxes = torch.tensor([[[0.5, 0.5, 0.5, 0.5]]])
    assert len(instance_priors(logits, boxes, torch.zeros(1, 4, 4))[0]) == 0
    with pytest.raises(ValueError, match="logits"):
        instance_priors(torch.zeros(1, 2, 3), boxes, _map())
    with pytest.raises(ValueError, match="boxes"):
        instance_priors(logits, torch.zeros(1, 2, 4), _map())
    with pytest.raises(ValueError, match="M must"):
        instance_priors(logits, boxes, torch.zeros(2, 4, 4))


def test_min_score_replaces_the_argmax_rule() -> None:
    import torch

    from joindet.priors import instance_priors

    # two queries with foreground probability 0.3 and 0.6; the map is all foreground
    fg = torch.tensor([0.3, 0.6])
    logits = torch.stack([torch.zeros(2), torch.log(fg / (1 - fg))], -1)[None]
    boxes = torch.tensor([[[0.5, 0.5, 0.4, 0.4], [0.5, 0.5, 0.2, 0.2]]])
    m = torch.ones(1, 4, 4)
    m[0, 0, 0] = 0.0  # a non-constant map, so the mask M > mean(M) has foreground cells
    paper = instance_priors(logits, boxes, m, t=0.0)
    assert paper[0].tolist() == [0]
    assert np.allclose(paper[2], [0.6])
    low = instance_priors(logits, boxes, m, t=0.0, min_score=0.25)
    assert np.allclose(np.sort(low[2]), [0.3, 0.6])
    high = instance_priors(logits, boxes, m, t=0.0, min_score=0.7)
    assert len(high[0]) == 0
