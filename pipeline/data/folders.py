"""Unlabelled image directories: ``folder`` (any tree of images) and ``imagenet`` (class folders).

Image ids are 1..N in the sorted order of the POSIX paths relative to the root, so the same tree
always gets the same ids. Sizes come from image headers (no pixel decoding).
"""

from __future__ import annotations

import functools
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from joindet.pipeline.data.dataset import Dataset, make_index
from joindet.pipeline.data.decode import IMAGE_SUFFIXES, header_size
from joindet.pipeline.data.errors import AnnotationError, DatasetNotFoundError


def list_images(root: Path, sub: str = "") -> list[str]:
    """Sorted POSIX paths, relative to ``root``, of every image file under ``root / sub``.

    Symbolic links to directories are followed (datasets are often assembled from links);
    hidden files and folders (``.name``) are skipped.
    """
    base = Path(root) / sub if sub else Path(root)
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(base, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel_dir = Path(dirpath).relative_to(root)
        for fn in filenames:
            if not fn.startswith(".") and Path(fn).suffix.lower() in IMAGE_SUFFIXES:
                found.append((rel_dir / fn).as_posix())
    return sorted(found)


_SIZE_CACHE_SCHEMA = pa.schema(
    [
        ("file", pa.string()),
        ("bytes", pa.int64()),
        ("mtime_ns", pa.int64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
    ]
)


def _read_sizes(root: Path, files: list[str], cache_dir: Path | None) -> list[tuple[int, int]]:
    """Header sizes of ``files``; with ``cache_dir``, sizes of files whose byte size and mtime are
    unchanged since the last call are reused (a million ImageNet headers take minutes to read)."""
    stats = [os.stat(Path(root) / f) for f in files] if cache_dir is not None else None
    known: dict[str, tuple[int, int, int, int]] = {}
    cache = None
    if cache_dir is not None:
        key = hashlib.sha256(str(Path(root).resolve()).encode("utf-8")).hexdigest()[:24]
        cache = Path(cache_dir) / f"image-sizes-{key}.parquet"
        if cache.is_file():
            try:
                t = pq.read_table(cache).to_pydict()
                known = {
                    f: (b, m, w, h)
                    for f, b, m, w, h in zip(t["file"], t["bytes"], t["mtime_ns"], t["width"], t["height"])
                }
            except (OSError, pa.ArrowInvalid, KeyError):
                known = {}  # a damaged cache is rebuilt
    todo = [
        i for i, f in enumerate(files)
        if stats is None or known.get(f, (-1, -1))[:2] != (stats[i].st_size, stats[i].st_mtime_ns)
    ]  # fmt: skip
    sizes: list[tuple[int, int]] = [(known[f][2], known[f][3]) if f in known else (0, 0) for f in files]
    # Header reads are I/O bound: threads overlap the file system latency.
    with ThreadPoolExecutor(max_workers=8) as pool:
        for i, wh in zip(todo, pool.map(lambda i: header_size(Path(root) / files[i]), todo)):
            sizes[i] = wh
    if cache is not None and stats is not None and todo:
        # Merged with what was cached, so splits or class lists sharing a root share the cache.
        known.update({f: (st.st_size, st.st_mtime_ns, w, h) for f, st, (w, h) in zip(files, stats, sizes)})
        names = sorted(known)
        table = pa.table(
            {
                "file": names,
                "bytes": [known[f][0] for f in names],
                "mtime_ns": [known[f][1] for f in names],
                "width": [known[f][2] for f in names],
                "height": [known[f][3] for f in names],
            },
            schema=_SIZE_CACHE_SCHEMA,
        )
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f"{cache.name}.tmp-{os.getpid()}")
        pq.write_table(table, tmp)
        tmp.replace(cache)
    return sizes


def index_of_files(root: Path, files: list[str], cache_dir: Path | None = None) -> pa.Table:
    """Index with ids 1..N over ``files`` (already sorted), sizes read from headers."""
    sizes = _read_sizes(root, files, cache_dir)
    return make_index(range(1, len(files) + 1), files, [s[0] for s in sizes], [s[1] for s in sizes])


def _folder_index(root: Path, cache_dir: Path | None = None) -> pa.Table:
    return index_of_files(root, list_images(root), cache_dir)


def folder_dataset(root: Path, split: str = "train", cache_dir: Path | None = None) -> Dataset:
    """Every image under ``root`` (recursively), unlabelled; ``split`` is only a label.
    ``cache_dir`` keeps header sizes between openings (see :func:`index_of_files`)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFoundError(f"image folder {root} does not exist; pass an existing directory with --data-root.")
    return Dataset("folder", root, split, index_fn=functools.partial(_folder_index, root, cache_dir))


def read_class_list(path: Path) -> list[str]:
    """Class folder names, one per line (blank lines and ``#`` comments ignored)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise FileNotFoundError(
            f"class list {path} does not exist; give a text file with one class folder name per line."
        ) from None
    names = [ln.split("#", 1)[0].strip() for ln in lines]
    names = [n for n in names if n]
    if not names:
        raise AnnotationError(f"{path}: the class list is empty; put one class folder name (e.g. n01440764) per line.")
    bad = [n for n in names if "/" in n or "\\" in n or n in (".", "..")]
    if bad:
        raise AnnotationError(f"{path}: class name {bad[0]!r} is not a plain folder name.")
    return names


def _imagenet_classes(split_dir: Path, class_list: Path | None) -> list[str]:
    if class_list is not None:
        return read_class_list(class_list)
    return sorted(d.name for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith("."))


def _imagenet_index(root: Path, split: str, class_list: Path | None, cache_dir: Path | None = None) -> pa.Table:
    split_dir = root / split
    classes = _imagenet_classes(split_dir, class_list)
    if not classes:
        # The original ImageNet val layout is flat (labels in a separate file); labels are unused.
        return index_of_files(root, list_images(root, split), cache_dir)
    missing = [c for c in classes if not (split_dir / c).is_dir()]
    if missing:
        raise AnnotationError(
            f"{class_list}: class folder {missing[0]!r} is not in {split_dir} ({len(missing)} missing); check the class list or the split."
        )
    files = sorted(f for c in classes for f in list_images(root, f"{split}/{c}"))
    return index_of_files(root, files, cache_dir)


def _imagenet_categories(root: Path, split: str, class_list: Path | None) -> list[dict]:
    return [{"id": i + 1, "name": c} for i, c in enumerate(_imagenet_classes(root / split, class_list))]


def imagenet_dataset(
    root: Path, split: str = "train", class_list: Path | None = None, cache_dir: Path | None = None
) -> Dataset:
    """ImageNet class-folder layout ``root/{split}/{wnid}/*.JPEG``; labels are not used.

    ``class_list`` restricts to the listed class folders (ImageNet-100). Categories are the class
    folders; there are no boxes, so ``coco_ground_truth()`` is None.
    """
    root = Path(root)
    if not (root / split).is_dir():
        raise DatasetNotFoundError(
            f"ImageNet split folder {root / split} does not exist; expected {root}/{split}/<class>/*.JPEG (point --data-root at the ImageNet root)."
        )
    cl = Path(class_list) if class_list is not None else None
    return Dataset(
        "imagenet",
        root,
        split,
        index_fn=functools.partial(_imagenet_index, root, split, cl, cache_dir),
        categories_fn=functools.partial(_imagenet_categories, root, split, cl),
    )
