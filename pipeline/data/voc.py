"""PASCAL VOC 2007/2012 (``VOCdevkit/VOC20xx/{JPEGImages, Annotations, ImageSets/Main}``).

Splits: ``train`` / ``trainval`` = VOC2007 trainval + VOC2012 trainval (whichever are present),
``test`` / ``val`` = VOC2007 test, or an explicit ``2007-trainval``, ``2012-val``, ...
Image ids: the image name's digits with the year in front for VOC2007 (``000005`` ->
2007000005, ``2008_000008`` -> 2008000008), so ids do not depend on which years are present;
names that are not numeric fall back to 1..N in sorted order. Ground truth boxes come from the XML
files (pixels, VOC's 1-based inclusive corners turned into COCO ``[x, y, w, h]``); objects marked
``difficult`` become ``iscrowd=1`` so that COCO evaluation ignores them, as the VOC protocol does.
"""

from __future__ import annotations

import functools
import xml.etree.ElementTree as ET
from pathlib import Path

import pyarrow as pa

from joindet.pipeline.data.dataset import Dataset, make_index
from joindet.pipeline.data.decode import header_size
from joindet.pipeline.data.errors import AnnotationError, DatasetNotFoundError

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)  # fmt: skip

_SPLITS = {
    "train": [("2007", "trainval"), ("2012", "trainval")],
    "trainval": [("2007", "trainval"), ("2012", "trainval")],
    "test": [("2007", "test")],
    "val": [("2007", "test")],
}


def _devkit(root: Path) -> Path:
    return root / "VOCdevkit" if (root / "VOCdevkit").is_dir() else root


def voc_parts(root: Path, split: str) -> list[tuple[str, str]]:
    """The (year, image set) pairs a split reads that exist under ``root``."""
    if split in _SPLITS:
        wanted = _SPLITS[split]
    elif "-" in split:
        year, image_set = split.split("-", 1)
        wanted = [(year, image_set)]
    else:
        raise ValueError(f"unknown VOC split {split!r}; use train, trainval, test, val or YEAR-SET such as 2012-val.")
    dk = _devkit(root)
    return [(y, s) for y, s in wanted if (dk / f"VOC{y}" / "ImageSets" / "Main" / f"{s}.txt").is_file()]


def _text(node: ET.Element | None, tag: str, xml_path: Path) -> str:
    child = node.find(tag) if node is not None else None
    if child is None or child.text is None:
        raise AnnotationError(
            f"{xml_path}: missing <{tag}>; every object needs a name and a bndbox with xmin, ymin, xmax, ymax."
        )
    return child.text.strip()


@functools.lru_cache(maxsize=4)
def _parse(root: Path, split: str) -> tuple[list[tuple[int, str, int, int]], list[dict]]:
    """Rows (image_id, file, width, height) and COCO annotations of a VOC split."""
    dk = _devkit(root)
    entries: list[tuple[str, str]] = []  # (year, name)
    for year, image_set in voc_parts(root, split):
        names = (dk / f"VOC{year}" / "ImageSets" / "Main" / f"{image_set}.txt").read_text().split()
        entries += [(year, n) for n in names]
    entries = sorted(set(entries))
    numeric = all(n.replace("_", "").isdigit() for _, n in entries)
    rows, anns = [], []
    for seq, (year, name) in enumerate(entries, start=1):
        if numeric:
            image_id = int(name.replace("_", "")) if "_" in name else int(year + name)
        else:
            image_id = seq
        rel = f"{dk.relative_to(root).as_posix() + '/' if dk != root else ''}VOC{year}/JPEGImages/{name}.jpg"
        xml_path = dk / f"VOC{year}" / "Annotations" / f"{name}.xml"
        width = height = 0
        if xml_path.is_file():
            try:
                tree = ET.parse(xml_path).getroot()
            except ET.ParseError as exc:
                raise AnnotationError(f"{xml_path}: malformed XML ({exc}); fix or restore the file.") from None
            size = tree.find("size")
            if size is not None:
                width, height = int(float(_text(size, "width", xml_path))), int(float(_text(size, "height", xml_path)))
            for obj in tree.findall("object"):
                cls = _text(obj, "name", xml_path)
                if cls not in VOC_CLASSES:
                    raise AnnotationError(
                        f"{xml_path}: unknown class {cls!r}; VOC classes are {', '.join(VOC_CLASSES)}."
                    )
                bb = obj.find("bndbox")
                x0, y0, x1, y1 = (float(_text(bb, t, xml_path)) for t in ("xmin", "ymin", "xmax", "ymax"))
                difficult = obj.find("difficult")
                hard = difficult is not None and (difficult.text or "0").strip() == "1"
                w, h = x1 - x0 + 1.0, y1 - y0 + 1.0
                anns.append(
                    {
                        "id": len(anns) + 1,
                        "image_id": image_id,
                        "category_id": VOC_CLASSES.index(cls) + 1,
                        "bbox": [x0 - 1.0, y0 - 1.0, w, h],
                        "area": w * h,
                        "iscrowd": int(hard),
                    }
                )
        if width <= 0 or height <= 0:
            width, height = header_size(root / rel)
        rows.append((image_id, rel, width, height))
    return rows, anns


def _voc_index(root: Path, split: str) -> pa.Table:
    rows, _ = _parse(root, split)
    return make_index([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows])


def voc_categories() -> list[dict]:
    return [{"id": i + 1, "name": c} for i, c in enumerate(VOC_CLASSES)]


def _voc_ground_truth(root: Path, split: str) -> dict:
    rows, anns = _parse(root, split)
    images = [{"id": i, "file_name": f, "width": w, "height": h} for i, f, w, h in sorted(rows)]
    return {"info": {}, "images": images, "annotations": anns, "categories": voc_categories()}


def voc_dataset(root: Path, split: str = "train") -> Dataset:
    """A VOC split (see the module docstring for splits, ids and ground truth)."""
    root = Path(root)
    if not voc_parts(root, split):
        raise DatasetNotFoundError(
            f"no VOC image set for split {split!r} under {root} (looked for VOCdevkit/VOC2007|VOC2012/ImageSets/Main/*.txt)"
            "; point --data-root or JOINDET_DATA at the folder holding VOCdevkit."
        )
    return Dataset(
        "voc",
        root,
        split,
        index_fn=functools.partial(_voc_index, root, split),
        ground_truth_fn=functools.partial(_voc_ground_truth, root, split),
        categories_fn=voc_categories,
    )
