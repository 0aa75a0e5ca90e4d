"""Transforms keep boxes on the pixels they describe; collate pads and masks; low-data subsets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from joindet.pipeline.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MiningTransform,
    TrainTransform,
    collate,
    low_data_subset,
    resized_shape,
)


def _unnormalise(t: torch.Tensor) -> np.ndarray:
    """float [3, h, w] ImageNet-normalised -> float [h, w, 3] in 0..255."""
    return (t.permute(1, 2, 0).numpy() * IMAGENET_STD + IMAGENET_MEAN) * 255.0


def _pixel_box(mask: np.ndarray) -> np.ndarray | None:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=float)


@st.composite
def scene(draw):
    h, w = draw(st.integers(24, 120)), draw(st.integers(24, 120))
    x0, y0 = draw(st.integers(0, w - 6)), draw(st.integers(0, h - 6))
    x1, y1 = draw(st.integers(x0 + 6, w)), draw(st.integers(y0 + 6, h))
    return h, w, (x0, y0, x1, y1), draw(st.integers(0, 2**32 - 1)), draw(st.booleans())


@settings(max_examples=80, deadline=None)
@given(scene())
def test_train_transform_box_matches_transformed_pixels(case) -> None:
    h, w, (x0, y0, x1, y1), seed, copy_paste = case
    image = np.zeros((h, w, 3), np.uint8)
    image[y0:y1, x0:x1] = 255
    boxes = np.array([[x0 / w, y0 / h, x1 / w, y1 / h]])
    tf = TrainTransform(64, 100, scale_range=(0.3, 2.0), flip=0.5, min_box_size=3.0, copy_paste=copy_paste)
    out, cxcywh, keep = tf(image, boxes, np.random.default_rng(seed))
    oh, ow = out.shape[1:]
    assert out.dtype == torch.float32 and cxcywh.dtype == torch.float32 and keep.dtype == torch.int64
    assert oh <= 64 * 100 // min(64, 100) and ow <= 100
    seen = _pixel_box(_unnormalise(out)[..., 0] > 127.5)
    if len(keep) == 0:  # dropped: what is left of the rectangle is thinner than min_box_size (+ blur)
        assert seen is None or min(seen[2] - seen[0], seen[3] - seen[1]) <= 3.0 + 2
        return
    assert keep.tolist()[0] == 0 and set(keep.tolist()) == {0}
    assert torch.all((cxcywh >= 0) & (cxcywh <= 1))
    c = cxcywh.numpy().astype(float)
    xyxy = np.stack([c[:, 0] - c[:, 2] / 2, c[:, 1] - c[:, 3] / 2, c[:, 0] + c[:, 2] / 2, c[:, 1] + c[:, 3] / 2], 1)
    xyxy *= [ow, oh, ow, oh]
    union = np.array([*xyxy[:, :2].min(0), *xyxy[:, 2:].max(0)])  # pasted copies are white too
    assert seen is not None and np.abs(seen - union).max() <= 1.5, (seen, union)
    if len(keep) > 1:  # pasted copies: each pasted box shows the rectangle's pixels
        for c in cxcywh[1:].numpy().astype(float):
            x, y, bw, bh = (c[0] - c[2] / 2) * ow, (c[1] - c[3] / 2) * oh, c[2] * ow, c[3] * oh
            patch = _unnormalise(out)[round(y) : round(y + bh), round(x) : round(x + bw), 0]
            assert patch.size and patch.mean() > 127


def test_train_transform_is_reproducible_and_keeps_empty_images() -> None:
    rng_img = np.random.default_rng(1).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    boxes = np.array([[0.1, 0.1, 0.5, 0.6], [0.0, 0.0, 0.01, 0.01], [0.6, 0.2, 0.9, 0.9]])
    tf = TrainTransform(48, 80, min_box_size=2.0)
    a = tf(rng_img, boxes, np.random.default_rng(7))
    b = tf(rng_img, torch.tensor(boxes), np.random.default_rng(7))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert 1 not in a[2].tolist()  # the 1 % box is always too small at this size
    img, bx, kp = tf(rng_img, np.zeros((0, 4)), np.random.default_rng(3))
    assert img.shape[0] == 3 and bx.shape == (0, 4) and kp.shape == (0,)


def test_train_transform_scale_range_and_flip() -> None:
    image = np.zeros((40, 80, 3), np.uint8)
    image[:, :40] = 255  # left half white
    tf = TrainTransform(40, 200, scale_range=(0.5, 0.5), flip=1.0)
    out, boxes, keep = tf(image, np.array([[0.0, 0.0, 0.5, 1.0]]), np.random.default_rng(0))
    assert tuple(out.shape[1:]) == (20, 40)  # half of the 40x80 canvas, nothing to crop
    assert _unnormalise(out)[:, -5:, 0].mean() > 250 and _unnormalise(out)[:, :5, 0].mean() < 5
    assert torch.allclose(boxes, torch.tensor([[0.75, 0.5, 0.5, 1.0]]))


@pytest.mark.parametrize("bad", [{"scale_range": (0.0, 1.0)}, {"scale_range": (2.0, 1.0)}, {"flip": 1.5}, {"size": 0}])
def test_train_transform_rejects_bad_settings(bad: dict) -> None:
    kwargs = {"size": 32, "max_size": 64} | bad
    with pytest.raises(ValueError):
        TrainTransform(**kwargs)


def test_transforms_reject_non_uint8_rgb() -> None:
    with pytest.raises(ValueError, match="uint8"):
        MiningTransform(32, 64)(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        TrainTransform(32, 64)(np.zeros((10, 10, 3), np.float32), np.zeros((0, 4)), np.random.default_rng(0))


@given(st.integers(1, 3000), st.integers(1, 3000), st.integers(16, 800), st.integers(16, 1333))
def test_resized_shape_rule(h: int, w: int, size: int, max_size: int) -> None:
    nh, nw = resized_shape(h, w, size, max_size)
    assert max(nh, nw) <= max_size + 1
    assert min(nh, nw) == size or max(nh, nw) >= max_size - 1 or min(nh, nw) == 1
    assert abs(nh / nw - h / w) <= max(h / w, 1) * (1 / min(nh, nw) + 1 / max(nh, nw)) + 1e-9


def test_mining_transform_and_collate() -> None:
    tf = MiningTransform(64, 100, stride=32)
    white = np.full((30, 90, 3), 255, np.uint8)
    a, (ha, wa) = tf(white)
    b, (hb, wb) = tf(np.zeros((80, 40, 3), np.uint8))
    assert (ha, wa) == (33, 100)
    assert (hb, wb) == (100, 50)
    assert torch.allclose(_unnormalise_t(a), torch.full_like(a, 255.0), atol=1e-3)
    batch, mask = collate([a, b], stride=tf.stride)
    assert batch.shape == (2, 3, 128, 128) and mask.shape == (2, 128, 128) and mask.dtype == torch.bool
    assert not mask[0, :33, :100].any() and mask[0, 33:].all() and mask[0, :, 100:].all()
    assert not mask[1, :100, :50].any() and mask[1, 100:].all()
    assert torch.equal(batch[0, :, :33, :100], a) and batch[0, :, 33:].abs().sum() == 0
    with pytest.raises(ValueError):
        collate([])


def _unnormalise_t(t: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(_unnormalise(t)).permute(2, 0, 1).float()


def test_low_data_subset_is_the_documented_draw() -> None:
    ids = np.array([9, 3, 7, 1, 5, 11, 13, 2, 4, 6])
    sub = low_data_subset(ids, 0.3)
    expected = np.sort(np.random.default_rng(42).choice(np.sort(ids), 3, replace=False))
    assert np.array_equal(sub, expected) and sub.dtype == np.int64
    assert np.array_equal(low_data_subset(list(ids[::-1]), 0.3), sub)  # input order does not matter
    assert len(low_data_subset(np.arange(1000), 0.01)) == 10
    assert not np.array_equal(low_data_subset(np.arange(1000), 0.1, seed=1), low_data_subset(np.arange(1000), 0.1))
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="fraction"):
            low_data_subset(ids, bad)
    with pytest.raises(ValueError, match="unique"):
        low_data_subset([1, 1, 2], 0.5)


def test_cropped_warp_agrees_with_resize_then_crop() -> None:
    from joindet.pipeline.data.transforms import _resize, _scaled_window

    img = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    for hs, ws, y, x, oh, ow in [(96, 128, 10, 20, 50, 80), (70, 93, 3, 5, 37, 55)]:
        full = _resize(img, hs, ws)[y : y + oh, x : x + ow].astype(int)
        window = _scaled_window(img, hs, ws, y, x, oh, ow).astype(int)
        assert window.shape == full.shape and np.abs(window - full).max() <= 1
