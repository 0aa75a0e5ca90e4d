"""BoxSet: construction, validation, sorted lookup and Arrow round trip."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from joindet.priors import BoxSet, BoxSetError


def _random(n: int, seed: int = 0, n_images: int = 5) -> BoxSet:
    rng = np.random.default_rng(seed)
    xy = rng.random((n, 2)) * 0.5
    return BoxSet.from_arrays(
        rng.integers(0, n_images, n),
        np.concatenate([xy, xy + rng.random((n, 2)) * 0.5], 1),
        rng.random(n),
        rng.integers(0, 3, n).astype(np.int8),
    )


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 60), st.integers(0, 10_000), st.integers(1, 8))
def test_sorted_stable_and_lookup(n: int, seed: int, n_images: int) -> None:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, n_images, n)
    xy = rng.random((n, 2)) * 0.5
    boxes = np.concatenate([xy, xy + 0.1], 1)
    bs = BoxSet.from_arrays(ids, boxes, np.arange(n))
    assert (np.diff(bs.image_ids) >= 0).all()
    for img in range(n_images):
        part = bs.for_image(img)
        expected_scores = np.flatnonzero(ids == img).astype(np.float32)  # original order kept
        np.testing.assert_array_equal(part.scores, expected_scores)
    assert BoxSet.from_arrow(bs.to_arrow()).equals(bs)


def test_offsets_slices_match_for_image() -> None:
    bs = _random(50, seed=3, n_images=6)
    ids = np.arange(8)
    off = bs.offsets(ids)
    for i, img in enumerate(ids):
        assert off[i + 1] - off[i] == len(bs.for_image(int(img)))


def test_concat_and_kinds() -> None:
    a = _random(10).with_kind("region")
    b = _random(7, seed=1).with_kind("instance")
    both = BoxSet.concat([a, b])
    assert len(both) == 17 and len(both.of_kind("region")) == 10 and len(both.of_kind("instance")) == 7
    assert set(both.kind_names()) == {"region", "instance"}
    assert len(BoxSet.concat([])) == 0


@pytest.mark.parametrize(
    ("boxes", "message"),
    [
        ([[0, 0, np.nan, 1]], "NaN or infinite"),
        ([[0, 0, np.inf, 1]], "NaN or infinite"),
        ([[0.5, 0, 0.4, 1]], "malformed"),
        ([[0, 0, 1]], r"shape \[N, 4\]"),
    ],
)
def test_rejects_bad_boxes(boxes: list, message: str) -> None:
    with pytest.raises(BoxSetError, match=message):
        BoxSet.from_arrays([0], boxes)


def test_rejects_bad_kind_and_lengths() -> None:
    with pytest.raises(BoxSetError, match="unknown kind 'proposal'"):
        BoxSet.from_arrays([0], [[0, 0, 1, 1]], kinds="proposal")
    with pytest.raises(BoxSetError, match="scores has 2 rows"):
        BoxSet.from_arrays([0], [[0, 0, 1, 1]], [0.1, 0.2])


def test_from_arrow_remaps_foreign_dictionary_and_multichunk() -> None:
    import pyarrow as pa

    bs = _random(9, seed=4)
    t = bs.to_arrow()
    names = ["smoothed", "instance", "region"]  # another dictionary order than KINDS
    idx = pa.array([names.index(k) for k in bs.kind_names()], pa.int8())
    t = t.set_column(6, "kind", pa.DictionaryArray.from_arrays(idx, names))
    multi = pa.concat_tables([t.slice(0, 4), t.slice(4)])
    assert multi.column("x0").num_chunks == 2
    assert BoxSet.from_arrow(multi).equals(bs)
    assert BoxSet.from_arrow(multi, validate=False).equals(bs)
    plain = t.set_column(6, "kind", pa.array(bs.kind_names()))
    assert BoxSet.from_arrow(plain).equals(bs)


def test_from_arrow_validates_by_default() -> None:
    import pyarrow as pa

    t = _random(3).to_arrow()
    t = t.set_column(3, "x1", pa.array([float("nan")] * 3, pa.float32()))
    with pytest.raises(BoxSetError, match="NaN"):
        BoxSet.from_arrow(t)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(-3, 6), max_size=40))
def test_image_counts_match_numpy_unique(ids: list[int]) -> None:
    bs = BoxSet.from_arrays(ids, np.tile([0, 0, 1, 1], (len(ids), 1)))
    u, c = np.unique(np.asarray(ids, np.int64), return_counts=True)
    got_u, got_c = bs.image_counts()
    np.testing.assert_array_equal(got_u, u)
    np.testing.assert_array_equal(got_c, c)
    np.testing.assert_array_equal(bs.unique_image_ids(), u)
