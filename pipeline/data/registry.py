"""``open_dataset``: the one entry point from a dataset name (``--dataset``) to a :class:`Dataset`.

Roots are resolved as: the ``root`` argument (``--data-root``), else ``$JOINDET_DATA/<name>``,
else ``./datasets/<name>``. A ``root`` that was given must exist: a mistyped ``--data-root``
is an error naming it, never an empty dataset or a new one.

The synthetic dataset is generated only into its cache folder (``$JOINDET_CACHE/synthetic/<params>``,
default ``~/.cache/joindet/synthetic/<params>``) on first use, or by ``joindet data synth OUT``;
``--data-root`` must point to one that ``data synth`` wrote.
"""

from __future__ import annotations

import os
from pathlib import Path

from joindet.pipeline.data.coco_json import coco_json_dataset
from joindet.pipeline.data.dataset import Dataset
from joindet.pipeline.data.errors import DatasetNotFoundError
from joindet.pipeline.data.folders import folder_dataset, imagenet_dataset
from joindet.pipeline.data.synthetic import SyntheticSpec, ensure_synthetic
from joindet.pipeline.data.voc import voc_dataset

DATASET_NAMES: tuple[str, ...] = ("coco", "voc", "imagenet", "coco-json", "folder", "synthetic")

_HINT = "pass --data-root PATH or set JOINDET_DATA (joindet looks in $JOINDET_DATA/<name>), or use --dataset synthetic, which needs no download"


def cache_root() -> Path:
    """joindet's cache folder: ``$JOINDET_CACHE`` or ``~/.cache/joindet``."""
    env = os.environ.get("JOINDET_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "joindet"


def candidate_roots(name: str, root: Path | str | None) -> list[Path]:
    """Where a dataset is looked for, in order (only ``root`` when it is given)."""
    if root is not None:
        return [Path(root).expanduser()]
    found = []
    env = os.environ.get("JOINDET_DATA")
    if env:
        found.append(Path(env).expanduser() / name)
    found.append(Path("datasets") / name)
    return found


def _not_found(name: str, looked: list[str]) -> DatasetNotFoundError:
    return DatasetNotFoundError(f"dataset {name!r} not found (looked in {'; '.join(looked)}); {_HINT}.")


def _coco(root: Path, split: str, annotations: Path | None, cache_dir: Path | None) -> Dataset:
    ann = annotations or root / "annotations" / f"instances_{split}2017.json"
    if not ann.is_file():
        raise FileNotFoundError(str(ann))
    if not (root / f"{split}2017").is_dir():
        raise FileNotFoundError(str(root / f"{split}2017"))
    return coco_json_dataset("coco", ann, root, split, prefix=f"{split}2017/", cache_dir=cache_dir)


def synthetic_dataset(
    root: Path, split: str = "train", spec: SyntheticSpec | None = None, generate: bool = False
) -> Dataset:
    """The synthetic dataset under ``root``; with ``generate`` (the default cache folder only) it
    is generated there with ``spec`` (default: SyntheticSpec()) when absent."""
    spec = SyntheticSpec() if spec is None else spec
    if split not in ("train", "val"):
        raise ValueError(f"the synthetic dataset has splits train and val, not {split!r}.")
    ann = root / "annotations" / f"instances_{split}.json"
    generated = (root / "synthetic.json").is_file()
    if not generate and not root.is_dir():
        raise DatasetNotFoundError(
            f"--data-root {root} does not exist; write a synthetic dataset there first with "
            f"`joindet data synth {root}`, or omit --data-root to use the cached one."
        )
    if not generated and not ann.is_file() and (not generate or (root.is_dir() and any(root.iterdir()))):
        raise DatasetNotFoundError(
            f"{root} is not a synthetic dataset (no synthetic.json or {ann.relative_to(root)}); "
            f"write one with `joindet data synth {root}` (into a new folder), or omit --data-root."
        )
    if not generated and not ann.is_file():
        ensure_synthetic(root, spec)
    if not ann.is_file():
        raise DatasetNotFoundError(
            f"{ann} is missing (the dataset at {root} has no {split} split); regenerate it with joindet data synth."
        )
    return coco_json_dataset("synthetic", ann, root, split, prefix=f"{split}/")


def open_dataset(
    name: str,
    root: Path | str | None = None,
    split: str = "train",
    annotations: Path | str | None = None,
    cache_dir: Path | str | None = None,
    class_list: Path | str | None = None,
) -> Dataset:
    """Open one split of a dataset.

    Args:
        name: one of ``DATASET_NAMES``.
        root: data root (``--data-root``); see the module docstring for the fallbacks. For
            ``coco-json`` it is the folder the JSON's file names are relative to (default: the
            JSON's folder); for ``synthetic`` the folder to use or generate into.
        split: ``train`` / ``val`` (coco, synthetic, imagenet), ``train`` / ``test`` / ``YEAR-SET``
            (voc); a free label for folder and coco-json.
        annotations: COCO JSON file (required for coco-json; overrides the COCO default path).
        cache_dir: where to keep parsed indexes of large annotation files (coco, coco-json) and
            image header sizes (folder, imagenet), so that re-opening a big dataset is quick.
        class_list: imagenet only: text file of class folders to keep (ImageNet-100).

    Raises:
        DatasetNotFoundError: the files are not there; the message says where joindet looked.
        AnnotationError: malformed or unsafe annotations (names the file).
        ValueError: unknown dataset name or split.
    """
    cache = Path(cache_dir).expanduser() if cache_dir is not None else None
    ann = Path(annotations).expanduser() if annotations is not None else None
    if name == "synthetic":
        spec = SyntheticSpec()
        if root is not None:
            return synthetic_dataset(Path(root).expanduser(), split, spec)
        return synthetic_dataset(cache_root() / "synthetic" / spec.slug(), split, spec, generate=True)
    if name == "coco-json":
        if ann is None:
            raise ValueError(
                "--dataset coco-json needs --annotations FILE (a COCO-format JSON) and --data-root IMAGE_ROOT."
            )
        if not ann.is_file():
            raise DatasetNotFoundError(f"annotation file {ann} does not exist; check --annotations.")
        image_root = Path(root).expanduser() if root is not None else ann.parent
        if not image_root.is_dir():
            raise DatasetNotFoundError(
                f"image root {image_root} does not exist; pass the folder the JSON's file names are relative to as --data-root."
            )
        return coco_json_dataset("coco-json", ann, image_root, split, cache_dir=cache)
    if name not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}.")
    if root is not None and not Path(root).expanduser().is_dir():
        raise DatasetNotFoundError(f"--data-root {root} does not exist (dataset {name!r}); check the path.")
    looked: list[str] = []
    for base in candidate_roots(name, root):
        try:
            if name == "coco":
                return _coco(base, split, ann, cache)
            if name == "voc":
                return voc_dataset(base, split)
            if name == "imagenet":
                return imagenet_dataset(base, split, Path(class_list).expanduser() if class_list else None, cache)
            return folder_dataset(base, split, cache)
        except DatasetNotFoundError:
            looked.append(str(base))
        except FileNotFoundError as exc:  # _coco names the missing file itself
            looked.append(str(exc))
    raise _not_found(name, looked)
