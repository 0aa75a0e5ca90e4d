"""Image transforms for mining and training, and batch collation with padding masks.

Inputs are ``uint8 [H, W, 3]`` RGB arrays (from ``Dataset.load``). Outputs are float32 tensors
``[3, h, w]`` normalised with the ImageNet mean/std. Randomness comes only from the
``np.random.Generator`` passed in, so a seeded generator reproduces a transform exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np
import torch
from torchvision.ops import box_convert

from joindet.pipeline.data.copy_paste import paste_small_boxes

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def resized_shape(height: int, width: int, size: int, max_size: int) -> tuple[int, int]:
    """``(h, w)`` after scaling the shorter side to ``size`` unless that makes the longer side
    exceed ``max_size``, in which case the longer side becomes ``max_size``. Aspect ratio kept."""
    if size < 1 or max_size < 1:
        raise ValueError(f"image size and max size must be positive, got {size} and {max_size}.")
    scale = size / min(height, width)
    if max(height, width) * scale > max_size:
        scale = max_size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def _resize(image: np.ndarray, h: int, w: int) -> np.ndarray:
    if image.shape[:2] == (h, w):
        return image
    shrink = h < image.shape[0] and w < image.shape[1]
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


_SCALE = (1.0 / (255.0 * IMAGENET_STD)).astype(np.float32)
_OFFSET = (IMAGENET_MEAN / IMAGENET_STD).astype(np.float32)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """``uint8 [h, w, 3]`` RGB -> float32 ``[3, h, w]`` ImageNet-normalised."""
    out = np.empty((3, image.shape[0], image.shape[1]), dtype=np.float32)
    # Channel planes written straight into the CHW buffer: ~4x faster than whole-array numpy math.
    for c, plane in enumerate(cv2.split(np.ascontiguousarray(image))):
        np.multiply(plane, _SCALE[c], out=out[c], dtype=np.float32)
        out[c] -= _OFFSET[c]
    return torch.from_numpy(out)


def _scaled_window(image: np.ndarray, hs: int, ws: int, y_off: int, x_off: int, oh: int, ow: int) -> np.ndarray:
    """The ``[oh, ow]`` window at ``(y_off, x_off)`` of ``image`` resized to ``(hs, ws)``.

    When the window is a strict part of a moderately scaled image, only the window is computed
    (an affine warp using cv2.resize's pixel-centre convention, so both paths agree); large
    downscales resize the whole image with area averaging to avoid aliasing.
    """
    sy, sx = hs / image.shape[0], ws / image.shape[1]
    if (oh, ow) == (hs, ws) or min(sx, sy) < 0.5:
        return _resize(image, hs, ws)[y_off : y_off + oh, x_off : x_off + ow]
    m = np.array([[sx, 0.0, 0.5 * sx - 0.5 - x_off], [0.0, sy, 0.5 * sy - 0.5 - y_off]], dtype=np.float64)
    return cv2.warpAffine(image, m, (ow, oh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _check_image(image: np.ndarray) -> None:
    if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3):
        raise ValueError(
            f"transforms expect a uint8 [H, W, 3] RGB array, got {getattr(image, 'dtype', type(image))} {getattr(image, 'shape', '')}."
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError("transforms got a zero-size image.")


class MiningTransform:
    """Deterministic resize for mining/evaluation: shorter side to ``size``, longer side capped at
    ``max_size``. Padding to a multiple of ``stride`` happens in :func:`collate`.

    ``__call__(image) -> (tensor [3, h, w], (h, w))``; the whole output is valid image, so boxes
    normalised to ``(h, w)`` are also fractions of the original image.
    """

    def __init__(self, size: int, max_size: int, stride: int = 32) -> None:
        resized_shape(1, 1, size, max_size)  # validates
        self.size, self.max_size, self.stride = int(size), int(max_size), int(stride)

    def __call__(self, image: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        _check_image(image)
        h, w = resized_shape(image.shape[0], image.shape[1], self.size, self.max_size)
        return to_tensor(_resize(image, h, w)), (h, w)


class TrainTransform:
    """Large-scale jittering + horizontal flip (+ optional copy-paste of small boxes).

    The target canvas is the mining resize of the image (``size`` / ``max_size``). The image is
    scaled by ``r * canvas`` with ``r ~ U(scale_range)``; where it is larger than the canvas a
    random canvas-sized window is cropped, where smaller it is kept whole (the batch padding of
    :func:`collate` plays the role of the pad, masked out). Boxes follow the crop and flip, are
    clipped to the output, and those narrower or lower than ``min_box_size`` output pixels are
    dropped. An image may end with no box: it is still returned (empty target), so epoch length
    never depends on the random draw; the set loss then only pushes predictions to background.

    With ``copy_paste``, up to ``paste_max`` boxes whose area is below ``paste_max_area`` of the
    output image are copied (pixels and box) to random free places of the same image (the paper's
    Table 7); pasted boxes are appended and their ``keep`` entry is the source box's index.

    ``__call__(image uint8 [H, W, 3], boxes [n, 4] normalised xyxy of the input, rng)`` returns
    ``(image float32 [3, h, w], boxes float32 [m, 4] normalised cxcywh of the output (h, w),
    keep int64 [m] indices into the input boxes)``.
    """

    def __init__(
        self,
        size: int,
        max_size: int,
        scale_range: tuple[float, float] = (0.1, 2.0),
        flip: float = 0.5,
        min_box_size: float = 2.0,
        copy_paste: bool = False,
        paste_max_area: float = 0.02,
        paste_max: int = 3,
    ) -> None:
        resized_shape(1, 1, size, max_size)
        lo, hi = scale_range
        if not 0.0 < lo <= hi:
            raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range}.")
        if not 0.0 <= flip <= 1.0:
            raise ValueError(f"flip probability must be in [0, 1], got {flip}.")
        self.size, self.max_size = int(size), int(max_size)
        self.scale_range = (float(lo), float(hi))
        self.flip, self.min_box_size = float(flip), float(min_box_size)
        self.copy_paste, self.paste_max_area, self.paste_max = bool(copy_paste), float(paste_max_area), int(paste_max)

    def __call__(
        self, image: np.ndarray, boxes: np.ndarray | torch.Tensor, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        _check_image(image)
        b = boxes.detach().cpu().numpy() if isinstance(boxes, torch.Tensor) else np.asarray(boxes)
        b = b.astype(np.float64).reshape(-1, 4)
        h0, w0 = resized_shape(image.shape[0], image.shape[1], self.size, self.max_size)
        r = rng.uniform(*self.scale_range)
        hs, ws = max(1, round(h0 * r)), max(1, round(w0 * r))
        oh, ow = min(hs, h0), min(ws, w0)
        y_off, x_off = int(rng.integers(0, hs - oh + 1)), int(rng.integers(0, ws - ow + 1))
        out = _scaled_window(image, hs, ws, y_off, x_off, oh, ow)
        px = b * np.array([ws, hs, ws, hs]) - np.array([x_off, y_off, x_off, y_off])
        px = np.clip(px, 0.0, np.array([ow, oh, ow, oh], dtype=np.float64))
        keep = np.nonzero((px[:, 2] - px[:, 0] >= self.min_box_size) & (px[:, 3] - px[:, 1] >= self.min_box_size))[0]
        px = px[keep]
        if rng.random() < self.flip:
            out = out[:, ::-1]
            px = np.stack([ow - px[:, 2], px[:, 1], ow - px[:, 0], px[:, 3]], axis=1)
        out = np.ascontiguousarray(out)
        if self.copy_paste and len(px):
            out, px, keep = paste_small_boxes(out, px, keep, rng, self.paste_max_area, self.paste_max)
        norm = torch.from_numpy((px / np.array([ow, oh, ow, oh])).astype(np.float32)).reshape(-1, 4)
        return to_tensor(out), box_convert(norm, "xyxy", "cxcywh"), torch.from_numpy(keep.astype(np.int64))


#: DETR's training scales (shorter side, pixels) at full size, its crop branch's pre-resize sizes
#: and crop side range; :class:`DetrTransform` scales them by ``max(sizes) / 800``.
DETR_SCALES = (480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800)
DETR_CROP_RESIZE = (400, 500, 600)
DETR_CROP_SIDE = (384, 600)


class DetrTransform:
    """DETR's training augmentation (used by DETReg's finetuning), not large-scale jittering.

    Horizontal flip (p = 0.5), then with p = 0.5 either a resize of the shorter side to one of
    ``sizes`` (longer side capped at ``max_size``), or: shorter side to one of the crop-branch
    sizes, a random crop with sides uniform in the crop range (capped by the image), boxes cut to
    it, then the resize to one of ``sizes``. The crop-branch sizes and range are DETR's 400/500/600
    and 384-600 at an 800-pixel scale, multiplied by ``max(sizes) / 800`` for smaller presets.
    Boxes narrower or lower than ``min_box_size`` output pixels are dropped.

    ``__call__(image uint8 [H, W, 3], boxes [n, 4] normalised xyxy, rng)`` returns ``(image
    float32 [3, h, w], boxes float32 [m, 4] normalised cxcywh of the output, keep int64 [m])``.
    """

    def __init__(self, sizes: Sequence[int], max_size: int, flip: float = 0.5, min_box_size: float = 2.0) -> None:
        if not sizes:
            raise ValueError("DetrTransform needs at least one training size")
        self.sizes = tuple(int(s) for s in sizes)
        self.max_size, self.flip, self.min_box_size = int(max_size), float(flip), float(min_box_size)
        f = max(self.sizes) / DETR_SCALES[-1]
        self.crop_resize = tuple(max(1, round(s * f)) for s in DETR_CROP_RESIZE)
        self.crop_side = tuple(max(1, round(s * f)) for s in DETR_CROP_SIDE)

    def __call__(
        self, image: np.ndarray, boxes: np.ndarray | torch.Tensor, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        _check_image(image)
        b = boxes.detach().cpu().numpy() if isinstance(boxes, torch.Tensor) else np.asarray(boxes)
        b = b.astype(np.float64).reshape(-1, 4)
        keep = np.arange(len(b))
        flip = rng.random() < self.flip
        if rng.random() < 0.5:  # crop branch
            s = self.crop_resize[int(rng.integers(len(self.crop_resize)))]
            h1, w1 = resized_shape(image.shape[0], image.shape[1], s, 1 << 30)
            ch = int(rng.integers(min(self.crop_side[0], h1), min(h1, self.crop_side[1]) + 1))
            cw = int(rng.integers(min(self.crop_side[0], w1), min(w1, self.crop_side[1]) + 1))
            y0, x0 = int(rng.integers(0, h1 - ch + 1)), int(rng.integers(0, w1 - cw + 1))
            win = np.array([x0 / w1, y0 / h1, (x0 + cw) / w1, (y0 + ch) / h1])
            H, W = image.shape[:2]
            iy0, iy1 = int(round(win[1] * H)), max(int(round(win[3] * H)), int(round(win[1] * H)) + 1)
            ix0, ix1 = int(round(win[0] * W)), max(int(round(win[2] * W)), int(round(win[0] * W)) + 1)
            image = image[iy0:iy1, ix0:ix1]
            span = np.array([win[2] - win[0], win[3] - win[1]] * 2)
            b = np.clip((b - np.array([win[0], win[1]] * 2)) / span, 0.0, 1.0)
            inside = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
            b, keep = b[inside], keep[inside]
        s = self.sizes[int(rng.integers(len(self.sizes)))]
        oh, ow = resized_shape(image.shape[0], image.shape[1], s, self.max_size)
        out = _resize(np.ascontiguousarray(image), oh, ow)
        px = b * np.array([ow, oh, ow, oh])
        big = (px[:, 2] - px[:, 0] >= self.min_box_size) & (px[:, 3] - px[:, 1] >= self.min_box_size)
        px, keep = px[big], keep[big]
        if flip:
            out = out[:, ::-1]
            px = np.stack([ow - px[:, 2], px[:, 1], ow - px[:, 0], px[:, 3]], axis=1).reshape(-1, 4)
        norm = torch.from_numpy((px / np.array([ow, oh, ow, oh])).astype(np.float32)).reshape(-1, 4)
        out = np.ascontiguousarray(out)
        return to_tensor(out), box_convert(norm, "xyxy", "cxcywh"), torch.from_numpy(keep.astype(np.int64))


def collate(images: Sequence[torch.Tensor], stride: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``[3, h_i, w_i]`` images into ``batch [B, 3, H, W]`` padded with zeros bottom/right
    to the largest size rounded up to a multiple of ``stride``; ``pad_mask [B, H, W]`` bool is
    True on padding (DETR convention)."""
    if len(images) == 0:
        raise ValueError("collate needs at least one image.")
    if stride < 1:
        raise ValueError(f"stride must be positive, got {stride}.")
    H = math.ceil(max(int(im.shape[1]) for im in images) / stride) * stride
    W = math.ceil(max(int(im.shape[2]) for im in images) / stride) * stride
    first = images[0]
    batch = first.new_zeros((len(images), 3, H, W))
    mask = torch.ones((len(images), H, W), dtype=torch.bool, device=first.device)
    for i, im in enumerate(images):
        if im.ndim != 3 or im.shape[0] != 3:
            raise ValueError(f"collate expects [3, h, w] images, got shape {tuple(im.shape)} at position {i}.")
        batch[i, :, : im.shape[1], : im.shape[2]] = im
        mask[i, : im.shape[1], : im.shape[2]] = False
    return batch, mask
