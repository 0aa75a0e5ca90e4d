"""Robust loading: every awkward file either loads as uint8 RGB or raises ImageLoadError with a reason."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from joindet.pipeline.data import ImageLoadError, decode_image, header_size, open_dataset, read_image


def _rgb(h: int = 24, w: int = 36) -> np.ndarray:
    rng = np.random.default_rng(0)
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = np.linspace(0, 250, w).astype(np.uint8)[None, :]
    img[..., 1] = 128
    img[: h // 2, : w // 3, 2] = 245  # a marker in the top-left corner, to see rotations
    img += rng.integers(0, 5, img.shape, dtype=np.uint8)
    return img


def _write(path: Path, rgb: np.ndarray, ext: str = ".png") -> Path:
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    path.write_bytes(buf.tobytes())
    return path


@pytest.fixture()
def awkward(tmp_path: Path) -> Path:
    """A coco-json dataset holding every awkward case of the issue, one image each."""
    img = _rgb()
    _write(tmp_path / "ok.jpg", img, ".jpg")
    full = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(full[: len(full) // 2])
    (tmp_path / "zero.jpg").write_bytes(b"")
    rgba = np.dstack([img, np.full(img.shape[:2], 7, np.uint8)])
    cv2.imwrite(str(tmp_path / "alpha.png"), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    deep = (np.linspace(0, 65535, 24 * 36).reshape(24, 36)).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "deep16.png"), deep)
    cv2.imwrite(str(tmp_path / "gray.jpg"), img[..., 1])
    _write(tmp_path / "ünïcødé 图像.png", img)
    (tmp_path / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png at all")
    names = [
        "ok.jpg",
        "truncated.jpg",
        "zero.jpg",
        "alpha.png",
        "deep16.png",
        "gray.jpg",
        "ünïcødé 图像.png",
        "garbage.png",
        "missing.jpg",
    ]
    images = [{"id": i + 1, "file_name": n, "width": 36, "height": 24} for i, n in enumerate(names)]
    (tmp_path / "ann.json").write_text(json.dumps({"images": images}, ensure_ascii=False), encoding="utf-8")
    return tmp_path


def test_each_awkward_file_loads_or_fails_with_a_reason(awkward: Path) -> None:
    ds = open_dataset("coco-json", root=awkward, annotations=awkward / "ann.json")
    by_name = {ds.file(int(i)): int(i) for i in ds.image_ids()}
    reference = _rgb()
    for name in ["ok.jpg", "alpha.png", "deep16.png", "gray.jpg", "ünïcødé 图像.png"]:
        img = ds.load(by_name[name])
        assert img.dtype == np.uint8 and img.shape == (24, 36, 3), name
    assert np.array_equal(ds.load(by_name["alpha.png"]), reference)  # alpha dropped, colours exact
    assert np.array_equal(ds.load(by_name["ünïcødé 图像.png"]), reference)
    gray = ds.load(by_name["gray.jpg"])
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 1], gray[..., 2])
    deep = ds.load(by_name["deep16.png"])
    assert deep[0, 0, 0] == 0 and deep[-1, -1, 0] == 255  # full 16-bit range -> full 8-bit range
    expected = {
        "truncated.jpg": "truncated",
        "zero.jpg": "empty file",
        "garbage.png": "not a decodable image",
        "missing.jpg": "file not found",
    }
    for name, reason in expected.items():
        with pytest.raises(ImageLoadError) as info:
            ds.load(by_name[name])
        err = info.value
        assert err.image_id == by_name[name] and err.file == name and reason in err.reason
        assert name in str(err)


def test_image_load_error_survives_pickling() -> None:
    err = pickle.loads(pickle.dumps(ImageLoadError(7, "a/b.jpg", "empty file (0 bytes)")))
    assert (err.image_id, err.file, err.reason) == (7, "a/b.jpg", "empty file (0 bytes)")


def test_truncated_jpeg_detected_at_any_cut(tmp_path: Path) -> None:
    ok, buf = cv2.imencode(".jpg", _rgb(64, 64))
    data = buf.tobytes()
    for cut in range(len(data) // 3, len(data) - 2, max(1, len(data) // 17)):
        with pytest.raises(ImageLoadError):
            decode_image(data[:cut])
    assert decode_image(data).shape == (64, 64, 3)


def test_exif_orientation_is_applied_and_header_size_agrees(tmp_path: Path) -> None:
    img = _rgb(20, 40)
    pil = Image.fromarray(img)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    pil.save(path, exif=exif.tobytes(), quality=95)
    loaded = read_image(path)
    assert loaded.shape == (40, 20, 3)
    # the blue marker stored top-left is displayed top-right after a clockwise rotation
    assert loaded[:5, -5:, 2].mean() > 200 and loaded[:5, :5, 2].mean() < 60
    assert header_size(path) == (20, 40)
    assert read_image(path, ignore_orientation=True).shape == (20, 40, 3)


def test_annotation_size_on_unrotated_pixels_wins(tmp_path: Path) -> None:
    """COCO-style sizes made on the stored pixel grid: the rotation is skipped to keep boxes valid."""
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(_rgb(20, 40)).save(tmp_path / "r.jpg", exif=exif.tobytes())
    (tmp_path / "a.json").write_text(
        json.dumps({"images": [{"id": 1, "file_name": "r.jpg", "width": 40, "height": 20}]})
    )
    ds = open_dataset("coco-json", root=tmp_path, annotations=tmp_path / "a.json")
    assert ds.load(1).shape == (20, 40, 3)


def test_size_mismatch_with_annotation_is_an_image_load_error(tmp_path: Path) -> None:
    _write(tmp_path / "x.png", _rgb(10, 10))
    (tmp_path / "a.json").write_text(
        json.dumps({"images": [{"id": 3, "file_name": "x.png", "width": 50, "height": 20}]})
    )
    ds = open_dataset("coco-json", root=tmp_path, annotations=tmp_path / "a.json")
    with pytest.raises(ImageLoadError, match="size mismatch"):
        ds.load(3)


def test_header_size_of_unreadable_file_is_zero(tmp_path: Path) -> None:
    (tmp_path / "z.jpg").write_bytes(b"")
    assert header_size(tmp_path / "z.jpg") == (0, 0)
