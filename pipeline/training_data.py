"""The torch Dataset the train stage iterates: run images with their committed priors as targets.

Image ids are the run's index minus the quarantine (optionally capped). Each item loads one image
through the run's :class:`pipeline.data.Dataset`, looks up its prior boxes in a :class:`BoxSet`
read once from the store (normalised xyxy of the original image), applies the training transform
and returns the image tensor with a DETR target whose boxes are normalised **cxcywh** of the
transformed, unpadded image and whose labels are all 1 (foreground).

Randomness: each item's augmentation draws from its own ``np.random.default_rng([seed, epoch,
image_id])``; the shuffle order and DataLoader worker seeds come from :func:`epoch_generator`
(a function of seed, epoch and rank only), and ``seed_worker`` / :func:`seed_epoch` fix the global
RNGs of workers and of the main process. So an epoch replays identically after a resume.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import torch
from torch import Tensor

from joindet.pipeline.data import ImageLoadError, TrainTransform, collate
from joindet.priors import BoxSet

Item = tuple[Tensor, dict[str, Tensor]]


class LoadFailure(NamedTuple):
    """An image that could not be loaded while training: it goes to the run's quarantine."""

    image_id: int
    file: str
    reason: str


class TrainBatch(NamedTuple):
    """A collated batch: images [B, 3, H, W] and pad_mask [B, H, W] (True on padding; both None
    when no image of the batch loaded), DETR targets, and the images that failed to load."""

    images: Tensor | None
    pad_mask: Tensor | None
    targets: list[dict[str, Tensor]]
    failed: list[LoadFailure]


def make_train_transforms(
    model_cfg: Any, copy_paste: bool = False, scale_range: tuple[float, float] = (0.1, 2.0)
) -> list[TrainTransform]:
    """One :class:`TrainTransform` per shorter-side size of ``model_cfg.train_size`` (multi-scale
    training draws one per image), longer side capped at ``model_cfg.max_size`` (pixels);
    ``scale_range`` is the large-scale-jittering range (fractions of the target size)."""
    lo, hi = (float(v) for v in scale_range)
    return [
        TrainTransform(int(s), int(model_cfg.max_size), scale_range=(lo, hi), copy_paste=copy_paste)
        for s in model_cfg.train_size
    ]


def training_image_ids(
    images: pa.Table, quarantined: set[int] | frozenset[int], max_images: int | None = None
) -> np.ndarray:
    """int64 [N]: sorted image ids of ``images`` (IMAGES_SCHEMA) not in ``quarantined``, first ``max_images``."""
    ids = images.column("image_id").to_numpy().astype(np.int64)
    if quarantined:
        ids = ids[~np.isin(ids, np.fromiter(quarantined, np.int64, len(quarantined)))]
    ids = np.sort(ids)
    if max_images is not None:
        if max_images < 1:
            raise ValueError(f"train.max_images={max_images} must be at least 1 (or None for all images)")
        ids = ids[:max_images]
    return ids


class PriorTrainingSet(torch.utils.data.Dataset):
    """Items ``(image [3, h, w], {"boxes" [m, 4] cxcywh, "labels" [m] int64, "image_id" []})``.

    ``boxes`` is a BoxSet (normalised xyxy of the original images); ``labels`` (int64, one per row
    of ``boxes``) defaults to 1 = foreground. The transform of item i in epoch e draws from
    ``np.random.default_rng([seed, e, image_id])``, so augmentation does not depend on worker
    count, batch layout or resume point; call :meth:`set_epoch` before each epoch's loader.

    An image that fails to load yields a :class:`LoadFailure` (dropped from the batch by
    :func:`collate_train`, which hands it on for the quarantine): a file that vanishes mid-run
    must not kill an epoch, and the batch shrinks by one instead.
    """

    def __init__(
        self,
        dataset: Any,
        image_ids: np.ndarray,
        boxes: BoxSet,
        transforms: Sequence[TrainTransform],
        seed: int = 0,
        labels: np.ndarray | None = None,
    ) -> None:
        if not transforms:
            raise ValueError("PriorTrainingSet needs at least one transform (model.train_size is empty)")
        if labels is not None and len(labels) != len(boxes):
            raise ValueError(f"{len(labels)} labels for {len(boxes)} boxes")
        self.dataset = dataset
        self.image_ids = np.asarray(image_ids, np.int64)
        self.boxes = boxes
        self.labels = None if labels is None else np.asarray(labels, np.int64)
        self.transforms = list(transforms)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return int(self.image_ids.shape[0])

    def __getitem__(self, index: int) -> Item | LoadFailure:
        image_id = int(self.image_ids[index])
        try:
            image = self.dataset.load(image_id)
        except ImageLoadError as exc:
            return LoadFailure(image_id, str(exc.file), str(exc.reason))
        lo, hi = self.boxes.span(image_id)
        rng = np.random.default_rng([self.seed, self.epoch, image_id])
        transform = self.transforms[int(rng.integers(len(self.transforms)))]
        tensor, boxes_cxcywh, keep = transform(image, self.boxes.boxes[lo:hi], rng)
        labels = (
            torch.ones(len(keep), dtype=torch.int64)
            if self.labels is None
            else torch.from_numpy(self.labels[lo:hi][keep.numpy()])
        )
        return tensor, {
            "boxes": boxes_cxcywh.float(),
            "labels": labels,
            "image_id": torch.tensor(image_id, dtype=torch.int64),
        }


def collate_train(items: list[Item | LoadFailure | None]) -> TrainBatch:
    """The :class:`TrainBatch` of the items that loaded, with the failures of the others."""
    failed = [it for it in items if isinstance(it, LoadFailure)]
    kept = [it for it in items if it is not None and not isinstance(it, LoadFailure)]
    if not kept:
        return TrainBatch(None, None, [], failed)
    images, pad_mask = collate([t for t, _ in kept])
    return TrainBatch(images, pad_mask, [tgt for _, tgt in kept], failed)


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: numpy and python RNGs follow torch's per-worker seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """A 63-bit seed that depends only on (run seed, epoch, rank)."""
    ss = np.random.SeedSequence([int(seed), int(epoch), int(rank)])
    return int(ss.generate_state(1, np.uint64)[0] >> np.uint64(1))


def epoch_generator(seed: int, epoch: int, rank: int = 0) -> torch.Generator:
    """The DataLoader generator of one epoch (shuffle order and worker base seeds)."""
    return torch.Generator().manual_seed(epoch_seed(seed, epoch, rank))


def seed_epoch(seed: int, epoch: int, rank: int = 0) -> None:
    """Seed the main process's global RNGs for one epoch (transforms run here when num_workers=0)."""
    s = epoch_seed(seed, epoch, rank)
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)


__all__ = [
    "PriorTrainingSet",
    "collate_train",
    "epoch_generator",
    "epoch_seed",
    "make_train_transforms",
    "seed_epoch",
    "seed_worker",
    "training_image_ids",
]
