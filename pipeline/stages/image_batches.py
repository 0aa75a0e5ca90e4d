"""Inference batches over a list of image ids, with unreadable images set aside.

Shared by init_priors, mine and proposals evaluation: images are loaded in the given order,
transformed with the deterministic ``MiningTransform`` (shorter side to ``size``, longer side
capped at ``max_size``) and collated (padding bottom/right). The order and the batch boundaries
depend only on the ids and the batch size, so the same call always builds the same batches.
With ``aligned`` (init, mine), batch ``k`` is drawn from ``image_ids[k * batch_size:(k + 1) *
batch_size]`` alone, so lists cut between such runs (the shards of ``schedule.shard_ranges``)
give the same batches as the whole list.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from joindet.pipeline.data import ImageLoadError, MiningTransform, collate


@dataclass
class Batch:
    """One collated batch.

    Attributes:
        image_ids: int64 [B], in input order.
        images: float [B, 3, H, W], ImageNet-normalised, padded bottom/right.
        pad_mask: bool [B, H, W], True on padding.
    """

    image_ids: np.ndarray
    images: torch.Tensor
    pad_mask: torch.Tensor


@dataclass
class ImageBatches:
    """Iterate :class:`Batch` es; images that raise ``ImageLoadError`` land in ``failed``.

    ``failed`` holds ``(image_id, file, reason)`` in input order once iteration has passed them.
    Ids in ``skip`` (e.g. quarantined images) are left out silently. ``aligned`` False: batches
    of ``batch_size`` loaded images (a skipped or unreadable image's place goes to the next one);
    True: one batch per run of ``batch_size`` input ids, less its skipped and unreadable images
    (a short batch; none when all are), so no image crosses into another run's batch.
    """

    dataset: Any
    image_ids: np.ndarray
    size: int
    max_size: int
    batch_size: int
    skip: frozenset[int] = frozenset()
    aligned: bool = False
    failed: list[tuple[int, str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size} must be at least 1 (mine.batch_size in the config)")
        self.transform = MiningTransform(self.size, self.max_size)

    def todo(self) -> np.ndarray:
        """int64 ids that will be attempted (input order, ``skip`` removed)."""
        ids = np.asarray(self.image_ids, np.int64)
        return ids[[int(i) not in self.skip for i in ids]] if self.skip else ids

    def __iter__(self) -> Iterator[Batch]:
        ids = np.asarray(self.image_ids, np.int64).tolist()
        if not self.aligned:
            yield from self._batches(ids)
            return
        for lo in range(0, len(ids), self.batch_size):  # a run gives at most one batch
            yield from self._batches(ids[lo : lo + self.batch_size])

    def _batches(self, image_ids: list[int]) -> Iterator[Batch]:
        """Batches of ``batch_size`` readable, non-skipped images of ``image_ids`` (the last short)."""
        ids: list[int] = []
        tensors: list[torch.Tensor] = []
        for image_id in image_ids:
            if image_id in self.skip:
                continue
            try:
                image = self.dataset.load(image_id)
            except ImageLoadError as exc:
                self.failed.append((exc.image_id, exc.file, exc.reason))
                continue
            tensor, _ = self.transform(image)
            ids.append(image_id)
            tensors.append(tensor)
            if len(ids) == self.batch_size:
                yield _collated(ids, tensors)
                ids, tensors = [], []
        if ids:
            yield _collated(ids, tensors)


def _collated(ids: list[int], tensors: list[torch.Tensor]) -> Batch:
    images, pad_mask = collate(tensors)
    return Batch(np.asarray(ids, np.int64), images, pad_mask)
