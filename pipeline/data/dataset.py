"""The ``Dataset`` every stage reads images through: an image index, image loading, and (when the
dataset has boxes) COCO ground truth.

The index is an Arrow table with ``storage_schema.IMAGES_SCHEMA``: ``image_id`` int64 (sorted,
unique), ``file`` (POSIX path relative to ``root``), ``width`` and ``height`` int32 in pixels of
the image as :meth:`Dataset.load` returns it (``0`` when a header could not be read: loading such
an image raises :class:`ImageLoadError`). :meth:`Dataset.unreadable` lists the images known to be
unreadable from the index alone (unreadable header, "too large (W x H)"), which a run quarantines
at indexing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np
import pyarrow as pa

from joindet.pipeline.data.decode import MAX_IMAGE_PIXELS, header_problem, read_image
from joindet.pipeline.data.errors import AnnotationError, ImageLoadError
from joindet.storage_schema import IMAGES_SCHEMA

#: Key of a COCO ground-truth dict counting the boxes dropped for zero or negative width/height.
DROPPED_KEY = "joindet_dropped_boxes"


def safe_relative(file_name: str, source: Path | str) -> str:
    """``file_name`` as a clean POSIX path relative to a data root, or an error naming ``source``.

    Absolute paths, drive letters and ``..`` components would let an annotation file read outside
    the data root, so they are refused.
    """
    if not isinstance(file_name, str) or not file_name.strip():
        raise AnnotationError(
            f"{source}: an image has an empty or non-string file name; give every image a relative file name."
        )
    posix = file_name.replace("\\", "/")
    if PurePosixPath(posix).is_absolute() or PureWindowsPath(file_name).drive:
        raise AnnotationError(
            f"{source}: image file name {file_name!r} is absolute; file names must be relative to the data root (--data-root)."
        )
    parts = [p for p in PurePosixPath(posix).parts if p not in ("", ".")]
    if ".." in parts:
        raise AnnotationError(
            f"{source}: image file name {file_name!r} contains '..' and would escape the data root; use paths inside --data-root."
        )
    return "/".join(parts)


def make_index(image_ids: Any, files: list[str], widths: Any, heights: Any) -> pa.Table:
    """Build an IMAGES_SCHEMA table sorted by image_id; duplicate ids raise ValueError."""
    ids = np.asarray(image_ids, dtype=np.int64)
    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    if ids.size and np.any(ids[1:] == ids[:-1]):
        dup = int(ids[1:][ids[1:] == ids[:-1]][0])
        raise ValueError(f"image id {dup} appears more than once in the dataset index; image ids must be unique.")
    files_sorted = [files[i] for i in order]
    return pa.table(
        {
            "image_id": pa.array(ids, pa.int64()),
            "file": pa.array(files_sorted, pa.string()),
            "width": pa.array(np.asarray(widths, dtype=np.int32)[order], pa.int32()),
            "height": pa.array(np.asarray(heights, dtype=np.int32)[order], pa.int32()),
        },
        schema=IMAGES_SCHEMA,
    )


def index_fingerprint(index: pa.Table) -> str:
    """sha256 hex digest over the index rows (image_id, file, width, height), in index order.

    Built from the row values themselves, not from an Arrow/Parquet encoding, so it is stable
    across library versions and equal for equal indexes however they were produced.
    """
    h = hashlib.sha256()
    cols = index.to_pydict()
    for row in zip(cols["image_id"], cols["file"], cols["width"], cols["height"]):
        h.update("{:d}\t{}\t{:d}\t{:d}\n".format(*row).encode("utf-8"))
    return h.hexdigest()


class Dataset:
    """One split of one dataset: index, loading, categories, optional COCO ground truth.

    Built by :func:`pipeline.data.open_dataset`; the index and ground truth are computed on first
    use and memoised. Plain object, safe to pickle to worker processes (loaders are module-level
    callables or functools.partial of them).
    """

    def __init__(
        self,
        name: str,
        root: Path,
        split: str,
        index_fn: Callable[[], pa.Table],
        ground_truth_fn: Callable[[], dict | None] | None = None,
        categories_fn: Callable[[], list[dict]] | None = None,
        ignore_orientation: bool = False,
    ) -> None:
        self.name = name
        self.root = Path(root)
        self.split = split
        self._index_fn = index_fn
        self._gt_fn = ground_truth_fn
        self._categories_fn = categories_fn
        # Box annotations are made on the stored pixel grid; see load().
        self._ignore_orientation = ignore_orientation
        self._index: pa.Table | None = None
        self._lookup: tuple[np.ndarray, pa.Array, np.ndarray, np.ndarray] | None = None
        self._gt: dict | None = None
        self._gt_loaded = False

    def __repr__(self) -> str:
        return f"Dataset(name={self.name!r}, root={str(self.root)!r}, split={self.split!r})"

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_lookup"] = None  # rebuilt on demand from the index
        return state

    def index(self) -> pa.Table:
        """The image index (IMAGES_SCHEMA, sorted by image_id)."""
        if self._index is None:
            table = self._index_fn()
            if not table.schema.equals(IMAGES_SCHEMA):
                table = table.select(IMAGES_SCHEMA.names).cast(IMAGES_SCHEMA)
            self._index = table
        return self._index

    def __len__(self) -> int:
        return self.index().num_rows

    def unreadable(self) -> list[tuple[int, str, str]]:
        """``(image_id, file, reason)`` of the images the index shows cannot be read: no readable
        header (size 0: missing, empty, not an image) or more than ``MAX_IMAGE_PIXELS`` pixels
        ("too large (W x H)"). Decided from the index and file headers, never by decoding."""
        t = self.index()
        w = t.column("width").to_numpy().astype(np.int64)
        h = t.column("height").to_numpy().astype(np.int64)
        rows = np.flatnonzero((w <= 0) | (h <= 0) | (w * h > MAX_IMAGE_PIXELS))
        if not len(rows):
            return []
        ids, files = t.column("image_id").to_numpy(), t.column("file")
        out = []
        for i in rows:
            file = files[int(i)].as_py()
            out.append((int(ids[i]), file, header_problem(self.root / file, int(w[i]), int(h[i])) or "unreadable"))
        return out

    def image_ids(self) -> np.ndarray:
        """int64 [N] image ids, sorted."""
        return self.index().column("image_id").to_numpy()

    def _row(self, image_id: int) -> tuple[str, int, int]:
        if self._lookup is None:
            # Sorted ids + binary search: no per-image Python objects, so millions of images are cheap.
            t = self.index()
            self._lookup = (
                t.column("image_id").to_numpy(),
                t.column("file").combine_chunks(),
                t.column("width").to_numpy(),
                t.column("height").to_numpy(),
            )
        ids, files, widths, heights = self._lookup
        pos = int(np.searchsorted(ids, int(image_id)))
        if pos >= len(ids) or ids[pos] != int(image_id):
            raise KeyError(f"image id {image_id} is not in dataset {self.name!r} ({self.split}).")
        return files[pos].as_py(), int(widths[pos]), int(heights[pos])

    def file(self, image_id: int) -> str:
        """The image's file, relative to ``root`` (POSIX separators)."""
        return self._row(image_id)[0]

    def path(self, image_id: int) -> Path:
        """The image's absolute path."""
        return self.root / self.file(image_id)

    def load(self, image_id: int) -> np.ndarray:
        """The image as ``uint8 [H, W, 3]`` RGB (EXIF orientation applied).

        When the index gives a size (from annotations) that matches the stored pixel grid only
        before rotation, the EXIF rotation is skipped so that annotated boxes still fit.

        Raises:
            ImageLoadError: unreadable, empty, truncated, undecodable or zero-size image, or an
                image whose size disagrees with its annotation.
            KeyError: unknown image id.
        """
        file, width, height = self._row(image_id)
        path = self.root / file
        img = read_image(path, image_id, file, ignore_orientation=self._ignore_orientation)
        if width > 0 and height > 0 and img.shape[:2] != (height, width):
            if img.shape[:2] == (width, height) and not self._ignore_orientation:
                img = read_image(path, image_id, file, ignore_orientation=True)
            if img.shape[:2] != (height, width):
                raise ImageLoadError(
                    image_id,
                    file,
                    f"size mismatch: the index says {width}x{height} but the file is {img.shape[1]}x{img.shape[0]}",
                )
        return img

    def coco_ground_truth(self) -> dict | None:
        """COCO annotations dict (``images``, ``annotations``, ``categories``) whose image ids are
        the index's ids, boxes in pixels ``[x, y, w, h]``; None when the dataset has no boxes."""
        if not self._gt_loaded:
            self._gt = self._gt_fn() if self._gt_fn is not None else None
            self._gt_loaded = True
        return self._gt

    def dropped_boxes(self) -> int:
        """Ground-truth boxes left out for zero or negative width or height (0 when unlabelled)."""
        gt = self.coco_ground_truth()
        return int(gt.get(DROPPED_KEY, 0)) if gt else 0

    def categories(self) -> list[dict]:
        """COCO-style categories ``[{"id": int, "name": str, ...}]`` (empty when unlabelled)."""
        return list(self._categories_fn()) if self._categories_fn is not None else []

    def fingerprint(self) -> str:
        """sha256 hex digest of the index rows (see :func:`index_fingerprint`)."""
        return index_fingerprint(self.index())
