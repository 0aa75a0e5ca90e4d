"""The built-in synthetic scenes dataset: salient objects with exact ground truth, no download.

Each scene has 1-8 objects (see ``synthetic_draw.SHAPES``) of varied size (about 8 % to 55 % of
the image side), colour and fill, drawn in turn so that later objects occlude earlier ones; a
placement that would hide more than half of an earlier object is retried elsewhere or skipped, so
every annotated object keeps at least half of its area visible. Boxes are those of the visible
pixels. Backgrounds are muted gradients, blotches and faint stripes; objects are saturated colours
chosen far from the local background, with light blur and sensor noise on top.

Layout written by :func:`generate_synthetic` (COCO format, file names relative to the split
folder, image ids 1..N per split)::

    OUT/train/000001.jpg ...   OUT/val/000001.jpg ...
    OUT/annotations/instances_train.json   OUT/annotations/instances_val.json
    OUT/synthetic.json         the generation parameters (present only once complete)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from joindet.pipeline.data.synthetic_draw import SHAPES, background, fill, object_colour, shape_mask
from joindet.pipeline.progress import NULL_PROGRESS, Progress

_SPLIT_CODES = {"train": 0, "val": 1}
GENERATOR_VERSION = 1


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate. The defaults suit a CPU demo (seconds to generate and to train on)."""

    images: int = 96
    val_images: int = 32
    size: int = 160
    seed: int = 0
    image_format: str = "jpg"

    def slug(self) -> str:
        """Folder name that identifies these parameters (used for the cache)."""
        return (
            f"n{self.images}-v{self.val_images}-s{self.size}-seed{self.seed}-{self.image_format}-g{GENERATOR_VERSION}"
        )


@dataclass
class Scene:
    """One rendered scene.

    image: uint8 [S, S, 3] RGB, the final picture.
    background: float32 [S, S, 3] RGB 0..255, the same scene without objects, blur or noise.
    masks: bool [K, S, S], the visible pixels of each annotated object (in drawing order).
    categories: int [K], COCO category ids (1-based index into SHAPES).
    """

    image: np.ndarray
    background: np.ndarray
    masks: np.ndarray
    categories: np.ndarray


def categories() -> list[dict]:
    """COCO categories of the synthetic scenes."""
    return [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(SHAPES)]


def render_scene(rng: np.random.Generator, size: int, max_objects: int = 8) -> Scene:
    """Render one scene of ``size`` x ``size`` pixels with 1..``max_objects`` objects."""
    if size < 16:
        raise ValueError(f"synthetic image size must be at least 16 pixels, got {size}.")
    bg = background(rng, size)
    img = bg.copy()
    owner = np.full((size, size), -1, dtype=np.int16)
    full_area: list[int] = []
    cats: list[int] = []
    min_pixels = max(12, size * size // 2000)
    for _ in range(int(rng.integers(1, max_objects + 1))):
        k = len(cats)
        shape_id = int(rng.integers(len(SHAPES)))
        extent = size * float(np.exp(rng.uniform(np.log(0.08), np.log(0.55))))
        for _attempt in range(6):
            cx, cy = rng.uniform(extent / 4, size - extent / 4, 2)
            m = shape_mask(rng, SHAPES[shape_id], size, cx, cy, extent)
            area = int(m.sum())
            if area < min_pixels:
                continue
            covered = np.bincount(owner[m].astype(np.int64) + 1, minlength=k + 1)[1:]
            still = np.bincount(owner.ravel().astype(np.int64) + 1, minlength=k + 1)[1:] - covered
            if k == 0 or np.all(still >= 0.5 * np.asarray(full_area)):
                break
        else:
            continue  # no placement keeps the others visible enough: skip this object
        ys, xs = np.nonzero(m)
        local = bg[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].reshape(-1, 3).mean(axis=0)
        colour = object_colour(rng, local)
        pattern = fill(rng, size, colour, textured=SHAPES[shape_id] == "textured blob")
        if rng.random() < 0.3:  # a darker rim, as objects often have an outline
            rim = m & ~cv2.erode(m.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
            pattern[rim] *= 0.55
        img[m] = pattern[m]
        owner[m] = k
        full_area.append(area)
        cats.append(shape_id + 1)
    if rng.random() < 0.5:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 0.8))
    img += rng.normal(0.0, rng.uniform(1.0, 6.0), img.shape).astype(np.float32)
    masks = np.stack([owner == k for k in range(len(cats))]) if cats else np.zeros((0, size, size), bool)
    return Scene(np.clip(np.round(img), 0, 255).astype(np.uint8), bg, masks, np.asarray(cats, dtype=np.int64))


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of image ``index`` of ``split``: independent of how many images are made."""
    return np.random.default_rng([int(seed), _SPLIT_CODES[split], int(index)])


def mask_annotation(mask: np.ndarray) -> tuple[list[float], float, dict]:
    """COCO ``bbox`` [x, y, w, h] (pixel edges), ``area`` (pixels) and RLE of a bool mask."""
    ys, xs = np.nonzero(mask)
    bbox = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return bbox, float(mask.sum()), rle


def _write_split(out: Path, split: str, spec: SyntheticSpec, count: int, progress: Progress) -> None:
    (out / split).mkdir(parents=True)
    images, anns = [], []
    ext = ".png" if spec.image_format == "png" else ".jpg"
    params = [cv2.IMWRITE_JPEG_QUALITY, 93] if ext == ".jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 1]
    progress.start(f"synthetic {split}", count)
    for i in range(1, count + 1):
        scene = render_scene(scene_rng(spec.seed, split, i), spec.size)
        name = f"{i:06d}{ext}"
        ok, buf = cv2.imencode(ext, cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR), params)
        if not ok:
            raise OSError(f"OpenCV could not encode synthetic image {split}/{name}.")
        (out / split / name).write_bytes(buf.tobytes())
        images.append({"id": i, "file_name": name, "width": spec.size, "height": spec.size})
        for mask, cat in zip(scene.masks, scene.categories):
            bbox, area, rle = mask_annotation(mask)
            anns.append(
                {"id": len(anns) + 1, "image_id": i, "category_id": int(cat), "bbox": bbox, "area": area,
                 "iscrowd": 0, "segmentation": rle}
            )  # fmt: skip
        progress.advance(1)
    coco = {
        "info": {"description": "joindet synthetic scenes", "version": str(GENERATOR_VERSION)},
        "images": images,
        "annotations": anns,
        "categories": categories(),
    }
    (out / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))
    progress.end({"images": count, "objects": len(anns)})


def generate_synthetic(
    out_dir: Path | str,
    num_images: int = 96,
    size: int = 160,
    seed: int = 0,
    val_images: int | None = None,
    image_format: str = "jpg",
    progress: Progress | None = None,
) -> Path:
    """Write a synthetic scenes dataset into ``out_dir`` (which must not exist or be empty).

    Deterministic for ``(seed, size, image_format)``: image i of a split is the same whatever
    ``num_images``. ``val_images`` defaults to a third of ``num_images`` (at least 1). Files are
    written into a temporary sibling folder that is renamed into place at the end, so concurrent
    or interrupted generation never leaves a half dataset under ``out_dir``.
    Returns ``out_dir``.
    """
    out = Path(out_dir)
    if num_images < 1:
        raise ValueError(f"--images must be at least 1, got {num_images}.")
    if image_format not in ("jpg", "png"):
        raise ValueError(f"image format must be jpg or png, got {image_format!r}.")
    if size < 16:
        raise ValueError(f"--size must be at least 16 pixels, got {size}.")
    n_val = max(1, num_images // 3) if val_images is None else int(val_images)
    if n_val < 0:
        raise ValueError(f"--val-images must be 0 or more, got {n_val}.")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} already exists and is not empty; choose a new output folder or delete it.")
    spec = SyntheticSpec(num_images, n_val, size, seed, image_format)
    progress = progress or NULL_PROGRESS
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        (tmp / "annotations").mkdir()
        _write_split(tmp, "train", spec, num_images, progress)
        if n_val:
            _write_split(tmp, "val", spec, n_val, progress)
        (tmp / "synthetic.json").write_text(
            json.dumps({**asdict(spec), "generator_version": GENERATOR_VERSION}, indent=1)
        )
        if out.exists():
            out.rmdir()  # empty (checked above); rename needs the name free
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def ensure_synthetic(out_dir: Path, spec: SyntheticSpec = SyntheticSpec()) -> Path:
    """``out_dir`` holding a complete synthetic dataset, generated now if it is absent.

    A concurrent generator that wins the race is fine: its complete copy is used.
    """
    out = Path(out_dir)
    if (out / "synthetic.json").is_file():
        return out
    try:
        generate_synthetic(out, spec.images, spec.size, spec.seed, spec.val_images, spec.image_format)
    except (FileExistsError, OSError):
        if not (out / "synthetic.json").is_file():
            raise
    return out
