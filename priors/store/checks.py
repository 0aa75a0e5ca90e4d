"""Checks of what a writer hands the prior store (kinds, coordinate range, known images)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from joindet.priors.boxset import BoxSet
from joindet.priors.store.errors import StoreError
from joindet.priors.store.images import IMAGES_FILE
from joindet.storage_schema import KINDS

#: Coordinates within this distance outside [0, 1] are float noise and clipped at commit.
_RANGE_TOLERANCE = 1e-4


def check_kinds(kinds: Mapping[str, BoxSet]) -> None:
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise StoreError(f"unknown kind(s) {unknown}; expected some of {list(KINDS)}")
    for k, bs in kinds.items():
        if not isinstance(bs, BoxSet):
            raise TypeError(f"kind {k!r}: expected a BoxSet, got {type(bs).__name__}")


def check_range(bs: BoxSet, kind: str) -> BoxSet:
    if not len(bs):
        return bs
    lo, hi = float(bs.boxes.min()), float(bs.boxes.max())
    if lo < -_RANGE_TOLERANCE or hi > 1 + _RANGE_TOLERANCE:
        raise StoreError(
            f"{kind} boxes must be normalised to [0, 1] of the image (found coordinates from {lo:.4g} "
            f"to {hi:.4g}); clip or normalise them before committing"
        )
    if lo < 0 or hi > 1:
        return BoxSet(bs.image_ids, np.clip(bs.boxes, 0.0, 1.0), bs.scores, bs.kinds)
    return bs


def check_known_images(kinds: Mapping[str, BoxSet], known: np.ndarray, run_dir: object) -> None:
    known = np.sort(known)
    for k, bs in kinds.items():
        ids = bs.unique_image_ids()
        pos = np.clip(np.searchsorted(known, ids), 0, max(len(known) - 1, 0))
        missing = ids[known[pos] != ids] if len(known) else ids
        if len(missing):
            raise StoreError(
                f"{k} boxes reference {len(missing)} image_id(s) not in {run_dir}/{IMAGES_FILE} "
                f"(e.g. {int(missing[0])}); priors must refer to the run's images"
            )
