"""Box Smooth: equivalence with ensemble-boxes WBF, momentum limits, and WBF's input cleaning."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from ensemble_boxes import weighted_boxes_fusion
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment

from joindet.priors import BoxSet, box_smooth


def _random_set(rng: np.random.Generator, n_images: int, max_boxes: int, near: BoxSet | None = None) -> BoxSet:
    ids, boxes = [], []
    for i in range(n_images):
        n = int(rng.integers(0, max_boxes + 1))
        centre = rng.uniform(0, 1, (n, 2))
        size = rng.uniform(0.02, 0.5, (n, 2))
        b = np.concatenate([centre - size / 2, centre + size / 2], 1)
        if near is not None:
            base = near.for_image(i).boxes
            k = min(len(base), n // 2 + 1, n)
            b[:k] = base[:k] + rng.normal(0, 0.02, (k, 4))
        b = np.concatenate([np.minimum(b[:, :2], b[:, 2:]), np.maximum(b[:, :2], b[:, 2:])], 1)
        ids += [i] * n
        boxes.append(np.clip(b, 0, 1))
    allb = np.concatenate(boxes) if boxes else np.zeros((0, 4))
    return BoxSet.from_arrays(ids, allb, rng.uniform(0.05, 1.0, len(ids)), "region")


def _wbf(prev: BoxSet, cur: BoxSet, m: float, iou_thr: float) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        boxes, _, _ = weighted_boxes_fusion(
            [prev.boxes.tolist(), cur.boxes.tolist()],
            [prev.scores.tolist(), cur.scores.tolist()],
            [[0] * len(prev), [0] * len(cur)],
            weights=[m, 1 - m],
            iou_thr=iou_thr,
            skip_box_thr=0.0,
        )
    return np.asarray(boxes, np.float64).reshape(-1, 4)


def _same_boxes(a: np.ndarray, b: np.ndarray, tol: float = 1e-5) -> bool:
    if a.shape != b.shape:
        return False
    if not len(a):
        return True
    cost = np.abs(a[:, None, :] - b[None, :, :]).max(-1)
    r, c = linear_sum_assignment(cost)
    return bool(cost[r, c].max() <= tol)


@pytest.mark.parametrize("seed", range(6))
def test_coordinates_equal_ensemble_boxes_per_image(seed: int) -> None:
    rng = np.random.default_rng(seed)
    prev = _random_set(rng, 25, 12)
    cur = _random_set(rng, 25, 12, near=prev)
    m = float(rng.uniform(0.1, 0.9))
    thr = float(rng.choice([0.3, 0.55, 0.7]))
    out = box_smooth(prev, cur, momentum=m, iou_thr=thr)
    assert out.kind_names() == ["smoothed"] * len(out)
    for i in range(25):
        ref = _wbf(prev.for_image(i), cur.for_image(i), m, thr)
        assert _same_boxes(out.for_image(i).boxes.astype(np.float64), ref), f"image {i}"


def test_score_rule_mean_halved_when_one_set() -> None:
    prev = BoxSet.from_arrays([0, 0], [[0.1, 0.1, 0.4, 0.4], [0.6, 0.6, 0.9, 0.9]], [0.8, 0.6])
    cur = BoxSet.from_arrays([0, 0], [[0.1, 0.1, 0.41, 0.4], [0.0, 0.6, 0.2, 0.9]], [0.4, 0.9])
    out = box_smooth(prev, cur, momentum=0.45)
    assert np.allclose(np.sort(out.scores), [0.3, 0.45, 0.6])
    assert np.all(np.diff(out.scores) <= 0)  # one image, descending


def test_min_score_and_max_per_image() -> None:
    rng = np.random.default_rng(3)
    prev, cur = _random_set(rng, 10, 20), _random_set(rng, 10, 20)
    full = box_smooth(prev, cur)
    capped = box_smooth(prev, cur, min_score=0.2, max_per_image=3)
    assert (capped.scores >= 0.2).all()
    for i in range(10):
        got = capped.for_image(i).scores
        expect = np.sort(full.for_image(i).scores[full.for_image(i).scores >= 0.2])[::-1][:3]
        assert np.allclose(np.sort(got)[::-1], expect)


def test_bad_parameters_raise() -> None:
    with pytest.raises(ValueError, match="momentum"):
        box_smooth(BoxSet.empty(), BoxSet.empty(), momentum=1.5)
    with pytest.raises(ValueError, match="iou_thr"):
        box_smooth(BoxSet.empty(), BoxSet.empty(), iou_thr=-0.1)


def _disjoint_boxes(n: int, rng: np.random.Generator) -> np.ndarray:
    """n boxes on a grid, pairwise IoU 0."""
    k = int(np.ceil(np.sqrt(max(n, 1))))
    cells = rng.permutation(k * k)[:n]
    x, y = (cells % k) / k, (cells // k) / k
    s = rng.uniform(0.3, 0.9, (n, 2)) / k
    return np.stack([x, y, x + s[:, 0], y + s[:, 1]], 1)


sizes = st.lists(st.integers(0, 6), min_size=1, max_size=5)


def _disjoint_set(counts: list[int], rng: np.random.Generator) -> BoxSet:
    """counts[i] pairwise non-overlapping boxes for image i, scores in [0.1, 1)."""
    boxes = np.concatenate([_disjoint_boxes(n, rng) for n in counts])
    return BoxSet.from_arrays(np.repeat(np.arange(len(counts)), counts), boxes, rng.uniform(0.1, 1, sum(counts)))


@settings(max_examples=40, deadline=None)
@given(sizes, sizes, st.integers(0, 2**31 - 1))
def test_momentum_one_returns_previous_boxes(np_: list[int], nc: list[int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    prev = _disjoint_set(np_, rng)
    cur = _random_set(rng, len(nc), 6)
    out = box_smooth(prev, cur, momentum=1.0)
    for i in range(len(np_)):
        assert _same_boxes(out.for_image(i).boxes.astype(np.float64), prev.for_image(i).boxes.astype(np.float64), 1e-6)
    assert set(out.image_ids.tolist()) <= set(prev.image_ids.tolist())


@settings(max_examples=40, deadline=None)
@given(sizes, st.integers(0, 2**31 - 1))
def test_momentum_zero_returns_current_boxes(nc: list[int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    cur = _disjoint_set(nc, rng)
    prev = _random_set(rng, len(nc), 6)
    out = box_smooth(prev, cur, momentum=0.0)
    for i in range(len(nc)):
        assert _same_boxes(out.for_image(i).boxes.astype(np.float64), cur.for_image(i).boxes.astype(np.float64), 1e-6)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1), st.booleans())
def test_empty_side_gives_the_other_side_halved(seed: int, prev_empty: bool) -> None:
    rng = np.random.default_rng(seed)
    one = BoxSet.from_arrays(
        np.repeat(np.arange(3), 4), np.concatenate([_disjoint_boxes(4, rng) for _ in range(3)]), rng.uniform(0.1, 1, 12)
    )
    prev, cur = (BoxSet.empty(), one) if prev_empty else (one, BoxSet.empty())
    out = box_smooth(prev, cur, momentum=0.45)
    for i in range(3):
        assert _same_boxes(out.for_image(i).boxes.astype(np.float64), one.for_image(i).boxes.astype(np.float64), 1e-6)
        assert np.allclose(np.sort(out.for_image(i).scores), np.sort(one.for_image(i).scores) / 2)
    assert len(box_smooth(BoxSet.empty(), BoxSet.empty())) == 0


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_image_order_does_not_matter(seed: int) -> None:
    rng = np.random.default_rng(seed)
    prev = _random_set(rng, 6, 8)
    cur = _random_set(rng, 6, 8, near=prev)
    perm = rng.permutation(6)
    relabel = lambda s: BoxSet.from_arrays(perm[s.image_ids] * 7 + 100, s.boxes, s.scores, s.kinds)  # noqa: E731
    a = box_smooth(prev, cur)
    b = box_smooth(relabel(prev), relabel(cur))
    for i in range(6):
        x, y = a.for_image(i), b.for_image(int(perm[i]) * 7 + 100)
        assert np.allclose(x.boxes, y.boxes) and np.allclose(x.scores, y.scores)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_out_of_range_clipped_and_zero_area_dropped_as_wbf(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 8
    lo = rng.uniform(-0.3, 0.9, (n, 2))
    b = np.concatenate([lo, lo + rng.uniform(0.0, 0.6, (n, 2))], 1)
    b[: n // 3, 2] = b[: n // 3, 0]  # zero width
    b[n - 1] = [1.1, 0.2, 1.3, 0.5]  # clips to zero width
    prev = BoxSet.from_arrays(np.zeros(n, int), b, rng.uniform(0.1, 1, n))
    jitter = b + rng.normal(0, 0.01, b.shape)
    jitter = np.concatenate([np.minimum(jitter[:, :2], jitter[:, 2:]), np.maximum(jitter[:, :2], jitter[:, 2:])], 1)
    cur = BoxSet.from_arrays(np.zeros(n, int), jitter, rng.uniform(0.1, 1, n))
    out = box_smooth(prev, cur, momentum=0.3)
    assert ((out.boxes >= 0) & (out.boxes <= 1)).all()
    assert _same_boxes(out.boxes.astype(np.float64), _wbf(prev, cur, 0.3, 0.55))


def test_blocks_of_images_give_the_same_result(monkeypatch: pytest.MonkeyPatch) -> None:
    import joindet.priors.smooth as smooth

    rng = np.random.default_rng(11)
    prev = _random_set(rng, 40, 10)
    cur = _random_set(rng, 40, 10, near=prev)
    whole = box_smooth(prev, cur, min_score=0.1, max_per_image=5)
    monkeypatch.setattr(smooth, "_SLOTS_PER_BLOCK", 25)  # a few images per block
    blocked = box_smooth(prev, cur, min_score=0.1, max_per_image=5)
    assert np.array_equal(whole.image_ids, blocked.image_ids)
    assert np.array_equal(whole.boxes, blocked.boxes) and np.array_equal(whole.scores, blocked.scores)


def _near_threshold_sets(rng: np.random.Generator, n_images: int, thr: float) -> tuple[BoxSet, BoxSet]:
    """Per image: a previous box, a current copy shifted so that their IoU is within a few float32
    ulps of ``thr`` (sizes down to 1e-6, where float32 screening cannot decide), and a near-tie:
    a current box halfway between two previous boxes."""
    pids, pb, cids, cb = [], [], [], []
    for i in range(n_images):
        size = float(10.0 ** rng.uniform(-6, -0.5))
        x0, y0 = rng.uniform(0, 1 - 2.5 * size, 2)
        # Same-height boxes shifted by d: IoU = (size - d) / (size + d).
        d = size * (1 - thr) / (1 + thr) * (1 + rng.integers(-4, 5) * 2e-7)
        pids += [i]
        pb += [[x0, y0, x0 + size, y0 + size]]
        cids += [i]
        cb += [[x0 + d, y0, x0 + d + size, y0 + size]]
        # Two previous boxes 0.6 size apart and a current box halfway: equal IoUs up to rounding.
        yt = min(y0 + 1.2 * size, 1 - size)
        pids += [i, i]
        pb += [[x0, yt, x0 + size, yt + size], [x0 + 0.6 * size, yt, x0 + 1.6 * size, yt + size]]
        cids += [i]
        cb += [[x0 + 0.3 * size, yt, x0 + 1.3 * size, yt + size]]
    prev = BoxSet.from_arrays(pids, np.asarray(pb), rng.uniform(0.2, 1.0, len(pids)), "region")
    cur = BoxSet.from_arrays(cids, np.asarray(cb), rng.uniform(0.2, 1.0, len(cids)), "region")
    return prev, cur


@pytest.mark.parametrize("thr", [0.3, 0.55, 0.7])
def test_near_threshold_and_near_tie_decisions_equal_ensemble_boxes(
    thr: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    import joindet.priors.smooth as smooth

    calls = []
    exact = smooth._exact_match
    monkeypatch.setattr(smooth, "_exact_match", lambda *a: calls.append(1) or exact(*a))
    rng = np.random.default_rng(int(thr * 100))
    prev, cur = _near_threshold_sets(rng, 60, thr)
    out = box_smooth(prev, cur, momentum=0.5, iou_thr=thr)
    for i in range(60):
        ref = _wbf(prev.for_image(i), cur.for_image(i), 0.5, thr)
        assert _same_boxes(out.for_image(i).boxes.astype(np.float64), ref), f"image {i}"
    assert calls, "the float64 re-check of uncertain float32 decisions was never exercised"
