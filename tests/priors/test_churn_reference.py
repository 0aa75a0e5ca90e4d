"""The vectorised churn equals the straightforward per-image Hungarian matching it replaced."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment

from joindet.priors import BoxSet, box_smooth, churn, pairwise_iou


def reference_churn(prev: BoxSet, cur: BoxSet, iou_thr: float) -> tuple[np.ndarray, np.ndarray, float]:
    """The previous implementation: per image, Hungarian on the whole IoU matrix (entries below
    the threshold zeroed), pairs kept when IoU >= threshold. -> (image ids, matched, summed IoU)."""
    ids = np.union1d(np.unique(prev.image_ids), np.unique(cur.image_ids)).astype(np.int64)
    matched = np.zeros(len(ids), np.int64)
    total = 0.0
    for k, image_id in enumerate(ids):
        p, c = prev.for_image(image_id).boxes, cur.for_image(image_id).boxes
        if len(p) and len(c):
            iou = pairwise_iou(p, c)
            rows, cols = linear_sum_assignment(np.where(iou >= iou_thr, iou, 0.0), maximize=True)
            keep = iou[rows, cols] >= iou_thr
            matched[k] = int(keep.sum())
            total += float(iou[rows[keep], cols[keep]].sum())
    return ids, matched, total


def _clustered(rng: np.random.Generator, n_images: int, n_boxes: int, spread: float) -> BoxSet:
    """Boxes around a few centres per image (many near-duplicates: large matching components)."""
    img = rng.integers(0, n_images, n_boxes)
    centre = rng.random((n_images, 3, 2)) * 0.6 + 0.2
    c = centre[img, rng.integers(0, 3, n_boxes)] + rng.normal(0, spread, (n_boxes, 2))
    half = rng.uniform(0.05, 0.2, (n_boxes, 2))
    return BoxSet.from_arrays(img, np.clip(np.concatenate([c - half, c + half], 1), 0, 1), rng.random(n_boxes))


def _assert_same(prev: BoxSet, cur: BoxSet, iou_thr: float) -> None:
    ids, matched, total = reference_churn(prev, cur, iou_thr)
    ch = churn(prev, cur, iou_thr)
    np.testing.assert_array_equal(ch.image_ids, ids)
    np.testing.assert_array_equal(ch.matched_per_image, matched)
    assert ch.matched == int(matched.sum())
    if ch.matched:
        assert ch.mean_iou == pytest.approx(total / ch.matched, rel=1e-12, abs=0)
    else:
        assert np.isnan(ch.mean_iou)


@settings(max_examples=40, deadline=None)
@given(
    n_prev=st.integers(0, 300),
    n_cur=st.integers(0, 300),
    n_images=st.integers(1, 12),
    spread=st.sampled_from([0.0, 0.005, 0.02, 0.1]),
    iou_thr=st.sampled_from([0.5, 0.3, 0.7, 0.0, 1.0]),
    seed=st.integers(0, 2**16),
)
def test_equals_per_image_hungarian(
    n_prev: int, n_cur: int, n_images: int, spread: float, iou_thr: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    _assert_same(_clustered(rng, n_images, n_prev, spread), _clustered(rng, n_images, n_cur, spread), iou_thr)


def test_equals_reference_on_a_box_smooth_round() -> None:
    """The stage's case: a parent version against its Box Smooth successor (stars, lone pairs and
    components that need the solver all occur), plus degenerate boxes and identical copies."""
    rng = np.random.default_rng(3)
    prev = _clustered(rng, 60, 3000, 0.03)
    jitter = prev.boxes + rng.normal(0, 0.01, prev.boxes.shape).astype(np.float32)
    jitter = np.clip(np.concatenate([jitter[:, :2], np.maximum(jitter[:, 2:], jitter[:, :2])], 1), 0, 1)
    mined = BoxSet.from_arrays(prev.image_ids, jitter, rng.random(len(prev)), "region")
    nxt = box_smooth(prev, mined, max_per_image=None)
    _assert_same(prev, nxt, 0.5)
    degenerate = BoxSet.from_arrays(
        [0, 0, 0, 1], [[0.2, 0.2, 0.2, 0.5], [0, 0, 0, 0], [0.1, 0.1, 0.4, 0.4], [0, 0, 1, 1]]
    )
    _assert_same(degenerate, degenerate, 0.5)
    _assert_same(degenerate, degenerate, 0.0)
    same = BoxSet.from_arrays([5] * 4, [[0.1, 0.1, 0.5, 0.5]] * 4)
    _assert_same(same, BoxSet.from_arrays([5] * 3, [[0.1, 0.1, 0.5, 0.5]] * 3), 0.5)


def test_padding_never_matches_and_blocks_split_images(monkeypatch: pytest.MonkeyPatch) -> None:
    """Images of very different box counts share blocks (padding) and tiny blocks split them."""
    churn_module = importlib.import_module("joindet.priors.churn")  # the package exports the function as `churn`

    rng = np.random.default_rng(5)
    prev = _clustered(rng, 40, 900, 0.02)
    cur = _clustered(rng, 40, 500, 0.02)
    _assert_same(prev, cur, 0.5)
    monkeypatch.setattr(churn_module, "_PAIRS_PER_BLOCK", 64)
    _assert_same(prev, cur, 0.5)


def test_threads_give_the_same_churn(monkeypatch: pytest.MonkeyPatch) -> None:
    """Many small blocks matched on 1 and on 3 threads: equal counts and bit-equal mean IoU."""
    churn_module = importlib.import_module("joindet.priors.churn")
    monkeypatch.setattr(churn_module, "_PAIRS_PER_BLOCK", 256)
    rng = np.random.default_rng(11)
    prev, cur = _clustered(rng, 50, 1500, 0.02), _clustered(rng, 50, 1200, 0.02)
    one, three = churn(prev, cur, threads=1), churn(prev, cur, threads=3)
    assert one.summary() == three.summary() and one.mean_iou == three.mean_iou
    np.testing.assert_array_equal(one.matched_per_image, three.matched_per_image)
