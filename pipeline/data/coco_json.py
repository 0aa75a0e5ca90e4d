"""COCO-format datasets: the COCO layout, any COCO JSON (``coco-json``), and the synthetic scenes.

File names in the JSON are relative to an image directory (``root / prefix``) and may contain
sub-folders; absolute names and ``..`` are refused. Widths and heights come from the JSON, or from
the image header when the JSON lacks them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from joindet.pipeline.data.dataset import DROPPED_KEY, Dataset, make_index, safe_relative
from joindet.pipeline.data.decode import header_size
from joindet.pipeline.data.errors import AnnotationError


def read_json(path: Path) -> Any:
    """Parse a JSON file; a missing file raises FileNotFoundError, bad JSON an AnnotationError
    naming the file, the line and the column."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"annotation file {path} does not exist; check --annotations.") from None
    except UnicodeDecodeError as exc:
        raise AnnotationError(
            f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8 JSON."
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise AnnotationError(
            f"{path}: malformed JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); fix the file or regenerate it."
        ) from None


def _int_field(obj: dict, key: str, where: str, path: Path) -> int:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
        raise AnnotationError(
            f"{path}: {where} has no integer {key!r} (got {value!r}); every {where.split()[0]} needs one."
        )
    return int(value)


def validate_coco(data: Any, path: Path) -> dict:
    """Check the parts of a COCO dict joindet uses; returns it. Errors name the file and field."""
    if not isinstance(data, dict):
        raise AnnotationError(
            f"{path}: the top level must be a JSON object with an 'images' list, got {type(data).__name__}."
        )
    images = data.get("images")
    if not isinstance(images, list):
        raise AnnotationError(
            f"{path}: missing 'images' list; a COCO file needs 'images' (and 'annotations', 'categories' for boxes)."
        )
    for i, img in enumerate(images):
        if not isinstance(img, dict):
            raise AnnotationError(f"{path}: images[{i}] is not an object.")
        _int_field(img, "id", f"image entry images[{i}]", path)
        if "file_name" not in img:
            raise AnnotationError(f"{path}: images[{i}] has no 'file_name'; every image needs one.")
    for key in ("annotations", "categories"):
        if key in data and not isinstance(data[key], list):
            raise AnnotationError(f"{path}: {key!r} must be a list, got {type(data[key]).__name__}.")
    for j, ann in enumerate(data.get("annotations", [])):
        if not isinstance(ann, dict):
            raise AnnotationError(f"{path}: annotations[{j}] is not an object.")
        _int_field(ann, "image_id", f"annotation annotations[{j}]", path)
        bbox = ann.get("bbox")
        if (
            not isinstance(bbox, list)
            or len(bbox) != 4
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bbox)
        ):
            raise AnnotationError(
                f"{path}: annotations[{j}] has bbox {bbox!r}; it must be [x, y, width, height] in pixels."
            )
    for k, cat in enumerate(data.get("categories", [])):
        if not isinstance(cat, dict):
            raise AnnotationError(f"{path}: categories[{k}] is not an object.")
        _int_field(cat, "id", f"category categories[{k}]", path)
    return data


def _index_from_coco(data: dict, json_path: Path, root: Path, prefix: str) -> pa.Table:
    ids, files, widths, heights = [], [], [], []
    for img in data["images"]:
        rel = safe_relative(img["file_name"], json_path)
        file = safe_relative(prefix + rel, json_path) if prefix else rel
        w, h = img.get("width"), img.get("height")
        if not (isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0):
            w, h = header_size(root / file)
        ids.append(int(img["id"]))
        files.append(file)
        widths.append(w)
        heights.append(h)
    try:
        return make_index(ids, files, widths, heights)
    except ValueError as exc:
        raise AnnotationError(f"{json_path}: {exc}") from None


def _cache_key(json_path: Path, prefix: str) -> str:
    st = json_path.stat()
    raw = f"{json_path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{prefix}"
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:24]


def coco_index(json_path: Path, root: Path, prefix: str = "", cache_dir: Path | None = None) -> pa.Table:
    """The IMAGES_SCHEMA index of a COCO JSON. With ``cache_dir``, the index is kept there as
    Parquet keyed by the JSON's path, size and mtime, so large JSONs are parsed only once."""
    cached = None
    if cache_dir is not None:
        cached = Path(cache_dir) / f"coco-index-{_cache_key(json_path, prefix)}.parquet"
        if cached.is_file():
            try:
                return pq.read_table(cached)
            except (OSError, pa.ArrowInvalid):
                pass  # a damaged cache is rebuilt below
    data = validate_coco(read_json(json_path), json_path)
    table = _index_from_coco(data, json_path, root, prefix)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".tmp-{id(table)}")
        pq.write_table(table, tmp)
        tmp.replace(cached)
    return table


def coco_ground_truth(json_path: Path) -> dict | None:
    """The validated COCO dict, or None when it holds no 'annotations' key (an unlabelled set).

    Boxes with zero or negative width or height are dropped; ``data[DROPPED_KEY]`` counts them."""
    data = validate_coco(read_json(json_path), json_path)
    if "annotations" not in data:
        return None
    data.setdefault("categories", [])
    data.setdefault("info", {})
    kept = [ann for ann in data["annotations"] if ann["bbox"][2] > 0 and ann["bbox"][3] > 0]
    # Zero or negative width/height boxes cannot be matched or scored: dropped, and counted
    # (``Dataset.dropped_boxes``; ``joindet data check`` and the run's logs/dataset.log say how many).
    data[DROPPED_KEY] = len(data["annotations"]) - len(kept)
    data["annotations"] = kept
    for ann in kept:
        ann.setdefault("iscrowd", 0)
        ann.setdefault("area", float(ann["bbox"][2] * ann["bbox"][3]))
    return data


def coco_categories(json_path: Path) -> list[dict]:
    data = validate_coco(read_json(json_path), json_path)
    return list(data.get("categories", []))


def coco_json_dataset(
    name: str, json_path: Path, root: Path, split: str, prefix: str = "", cache_dir: Path | None = None
) -> Dataset:
    """A Dataset over one COCO JSON whose file names are relative to ``root / prefix``."""
    json_path = Path(json_path)
    if not json_path.is_file():
        raise FileNotFoundError(f"annotation file {json_path} does not exist; check --annotations or the dataset root.")
    return Dataset(
        name,
        Path(root),
        split,
        index_fn=functools.partial(coco_index, json_path, Path(root), prefix, cache_dir),
        ground_truth_fn=functools.partial(coco_ground_truth, json_path),
        categories_fn=functools.partial(coco_categories, json_path),
    )
