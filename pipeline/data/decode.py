"""Robust image decoding with OpenCV, and cheap image sizes from file headers.

Every decoded image is ``uint8 [H, W, 3]`` RGB: EXIF orientation applied (OpenCV does this for
``IMREAD_COLOR``), grayscale expanded to three channels, 16-bit and float images scaled to 8 bits,
alpha dropped. Anything that cannot be decoded raises :class:`ImageLoadError` with the reason.
An image whose header claims more than :data:`MAX_IMAGE_PIXELS` pixels (a decompression bomb, or
a scan far beyond what a detector reads) is refused as "too large (W x H)" before any decoding.
"""

from __future__ import annotations

import io
import threading
from pathlib import Path

import cv2
import numpy as np

from joindet.pipeline.data.errors import ImageLoadError

#: File name suffixes treated as images when listing folders (lower case).
IMAGE_SUFFIXES: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})

#: Images with more pixels than this are refused without decoding (16384 x 16384; a 3-channel
#: uint8 decode of it takes 768 MiB).
MAX_IMAGE_PIXELS = 16384 * 16384

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
    size = _pillow_size(io.BytesIO(data))
    if size is not None and (problem := size_problem(*size)) is not None:
        raise ImageLoadError(image_id, file, problem)
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


def size_problem(width: int, height: int) -> str | None:
    """``"too large (W x H)"`` when ``width * height`` exceeds :data:`MAX_IMAGE_PIXELS`, else None."""
    if width * height > MAX_IMAGE_PIXELS:
        return f"too large ({width} x {height}); images over {MAX_IMAGE_PIXELS} pixels are not decoded"
    return None


#: Pillow's bomb limit is a module global; lifting it to read a huge header is serialised.
_BOMB_MUTEX = threading.Lock()


def _pillow_size(source: Path | io.BytesIO, with_orientation: bool = False) -> tuple[int, ...] | None:
    """``(width, height[, exif orientation])`` from the header (no pixels decoded), or None when
    Pillow cannot read it. Headers beyond Pillow's decompression-bomb limit are read too (only the
    header: the caller refuses them by :func:`size_problem`)."""
    from PIL import Image, UnidentifiedImageError  # Pillow ships with matplotlib; only headers are read

    def read() -> tuple[int, ...]:
        with Image.open(source) as im:
            orientation = int(im.getexif().get(0x0112, 1) or 1) if with_orientation and im.format == "JPEG" else 1
            return (*im.size, orientation) if with_orientation else tuple(im.size)

    try:
        try:
            return read()
        except Image.DecompressionBombError:
            with _BOMB_MUTEX:
                limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
                try:
                    if isinstance(source, io.BytesIO):
                        source.seek(0)
                    return read()
                finally:
                    Image.MAX_IMAGE_PIXELS = limit
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def header_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` in pixels as :func:`read_image` will return them, from the header only.

    Reads the header with Pillow (no pixel decoding) and swaps the sides when the EXIF orientation
    rotates by 90 degrees. Returns ``(0, 0)`` when the header is unreadable (:func:`header_problem`
    says why); a huge size is returned as it is (:func:`size_problem` refuses it).
    """
    found = _pillow_size(Path(path), with_orientation=True)
    if found is None:
        return (0, 0)
    width, height, orientation = found
    if orientation in _ROTATING_ORIENTATIONS:
        return (height, width)
    return (width, height)


def header_problem(path: Path, width: int, height: int) -> str | None:
    """Why an image indexed with ``(width, height)`` cannot be read, without decoding it, or None.

    ``(0, 0)`` (an unreadable header) is explained from the file: missing, empty, or not an image.
    """
    if width > 0 and height > 0:
        return size_problem(width, height)
    try:
        size = Path(path).stat().st_size
    except FileNotFoundError:
        return "file not found"
    except OSError as exc:
        return f"cannot read file ({exc.strerror or exc})"
    if size == 0:
        return "empty file (0 bytes)"
    return "not a readable image (its header is not one of a known image format)"
