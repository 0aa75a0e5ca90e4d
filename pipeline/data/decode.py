"""Robust image decoding with OpenCV, and cheap image sizes from file headers.

Every decoded image is ``uint8 [H, W, 3]`` RGB: EXIF orientation applied (OpenCV does this for
``IMREAD_COLOR``), grayscale expanded to three channels, 16-bit and float images scaled to 8 bits,
alpha dropped. Anything that cannot be decoded raises :class:`ImageLoadError` with the reason.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from joindet.pipeline.data.errors import ImageLoadError

#: File name suffixes treated as images when listing folders (lower case).
IMAGE_SUFFIXES: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})

_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH
_JPEG_SOI = b"\xff\xd8"
_JPEG_SOS = b"\xff\xda"
_JPEG_EOI = b"\xff\xd9"


def _jpeg_truncated(data: bytes) -> bool:
    """True when a JPEG stream has no end-of-image marker after its last start-of-scan.

    Inside entropy-coded data every 0xFF byte is stuffed (FF 00), so FF D9 after the last scan
    header can only be the real end marker; an EXIF thumbnail's own markers come earlier.
    libjpeg may return a half-grey image for such files instead of failing, hence this check.
    """
    last_scan = data.rfind(_JPEG_SOS)
    return last_scan >= 0 and data.find(_JPEG_EOI, last_scan) < 0


def _to_uint8(img: np.ndarray) -> np.ndarray:
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        # 65535 / 257 = 255 exactly: full-range 16-bit maps onto full-range 8-bit.
        return np.round(img.astype(np.float32) / 257.0).astype(np.uint8)
    if np.issubdtype(img.dtype, np.floating):
        return np.round(np.clip(np.nan_to_num(img), 0.0, 1.0) * 255.0).astype(np.uint8)
    raise ValueError(f"unsupported pixel type {img.dtype}")


def decode_image(
    data: bytes, image_id: int = -1, file: str = "<bytes>", ignore_orientation: bool = False
) -> np.ndarray:
    """Decode encoded image bytes to ``uint8 [H, W, 3]`` RGB.

    Args:
        data: the whole encoded file.
        image_id, file: only used in the error raised.
        ignore_orientation: keep the stored pixel order even when EXIF says to rotate (used when
            annotations were made on the unrotated pixels).

    Raises:
        ImageLoadError: empty input, truncated JPEG, undecodable data, zero-size image.
    """
    if len(data) == 0:
        raise ImageLoadError(image_id, file, "empty file (0 bytes)")
    if data.startswith(_JPEG_SOI) and _jpeg_truncated(data):
        raise ImageLoadError(image_id, file, "truncated JPEG (no end-of-image marker after the last scan)")
    flags = _FLAGS | (cv2.IMREAD_IGNORE_ORIENTATION if ignore_orientation else 0)
    try:
        img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    except cv2.error as exc:  # some codecs raise instead of returning None
        raise ImageLoadError(image_id, file, f"OpenCV could not decode it ({str(exc).strip()[:120]})") from None
    if img is None:
        raise ImageLoadError(image_id, file, "not a decodable image (corrupt, truncated or unsupported format)")
    if img.size == 0 or img.shape[0] == 0 or img.shape[1] == 0:
        raise ImageLoadError(image_id, file, "zero-size image")
    try:
        img = _to_uint8(img)
    except ValueError as exc:
        raise ImageLoadError(image_id, file, str(exc)) from None
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_image(path: Path, image_id: int = -1, file: str | None = None, ignore_orientation: bool = False) -> np.ndarray:
    """Read and decode one image file (see :func:`decode_image`); unreadable files raise ImageLoadError."""
    name = file if file is not None else str(path)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ImageLoadError(image_id, name, "file not found") from None
    except OSError as exc:
        raise ImageLoadError(image_id, name, f"cannot read file ({exc.strerror or exc})") from None
    return decode_image(data, image_id, name, ignore_orientation=ignore_orientation)


_ROTATING_ORIENTATIONS = frozenset({5, 6, 7, 8})  # EXIF orientations that swap width and height


def header_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` in pixels as :func:`read_image` will return them, from the header only.

    Reads the header with Pillow (no pixel decoding) and swaps the sides when the EXIF orientation
    rotates by 90 degrees. Returns ``(0, 0)`` when the header is unreadable: such an image fails
    later in :func:`read_image` and is quarantined then.
    """
    from PIL import Image, UnidentifiedImageError  # Pillow ships with matplotlib; only headers are read

    try:
        with Image.open(path) as im:
            width, height = im.size
            orientation = 1
            if im.format == "JPEG":
                orientation = int(im.getexif().get(0x0112, 1) or 1)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError):
        return (0, 0)
    if orientation in _ROTATING_ORIENTATIONS:
        return (height, width)
    return (width, height)
