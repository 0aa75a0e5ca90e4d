"""Churn statistics (matched / added / removed, mean IoU) used by commit, diff and reports."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.ops import box_iou

from joindet.priors import BoxSet, churn, match_boxes, pairwise_iou


def test_pairwise_iou_matches_torchvision() -> None:
    rng = np.random.default_rng(0)
    a = rng.random((7, 2))
    a = np.concatenate([a, a + rng.random((7, 2))], 1)
    b = rng.random((5, 2))
    b = np.concatenate([b, b + rng.random((5, 2))], 1)
    np.testing.assert_allclose(pairwise_iou(a, b), box_iou(torch.tensor(a), torch.tensor(b)).numpy(), atol=1e-12)


def test_hand_made_case() -> None:
    prev = BoxSet.from_arrays([1, 1, 2], [[0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1], [0, 0, 1, 1]])
    cur = BoxSet.from_arrays([1, 1, 3], [[0, 0, 0.5, 0.4], [0, 0.5, 0.2, 0.7], [0, 0, 1, 1]])
    ch = churn(prev, cur)
    # image 1: first boxes IoU 0.8 match; image 2 only in prev (removed); image 3 only in cur (added)
    assert (ch.matched, ch.added, ch.removed) == (1, 2, 2)
    assert ch.mean_iou == pytest.approx(0.8)
    np.testing.assert_array_equal(ch.image_ids, [1, 2, 3])
    assert ch.most_changed(2) == [
        {"image_id": 1, "matched": 1, "added": 1, "removed": 1},
        {"image_id": 2, "matched": 0, "added": 0, "removed": 1},
    ]


def test_matching_is_one_to_one_and_respects_threshold() -> None:
    prev = np.array([[0, 0, 1, 1]], np.float32)
    cur = np.array([[0, 0, 1, 1], [0, 0, 1, 0.9]], np.float32)
    p, c, iou = match_boxes(prev, cur)
    assert len(p) == 1 and c[0] == 0 and iou[0] == 1.0
    p, c, iou = match_boxes(prev, np.array([[0, 0, 1, 0.4]], np.float32))
    assert len(p) == 0  # IoU 0.4 < 0.5


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 40), st.integers(0, 40), st.integers(0, 1000))
def test_counts_are_consistent(n_prev: int, n_cur: int, seed: int) -> None:
    rng = np.random.default_rng(seed)

    def make(n: int) -> BoxSet:
        xy = rng.random((n, 2)) * 0.6
        return BoxSet.from_arrays(rng.integers(0, 4, n), np.concatenate([xy, xy + 0.2 + rng.random((n, 2)) * 0.2], 1))

    a, b = make(n_prev), make(n_cur)
    ch = churn(a, b)
    assert ch.matched + ch.removed == n_prev and ch.matched + ch.added == n_cur
    assert (ch.added_per_image >= 0).all() and (ch.removed_per_image >= 0).all()
    same = churn(a, a)
    assert same.matched == n_prev and same.added == same.removed == 0
    assert np.isnan(same.mean_iou) if n_prev == 0 else same.mean_iou == pytest.approx(1.0)
