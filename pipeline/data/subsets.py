"""Low-data subsets for finetuning (the paper's 1 % / 10 % COCO protocol)."""

from __future__ import annotations

import numpy as np


def low_data_subset(image_ids: np.ndarray | list[int], fraction: float, seed: int = 42) -> np.ndarray:
    """The image ids of a ``fraction`` subset, identical on every process and machine.

    Exactly ``np.random.default_rng(seed).choice(sorted ids, round(fraction * N), replace=False)``,
    returned sorted (int64 [round(fraction * N)]). ``fraction`` must be in (0, 1].
    """
    ids = np.sort(np.unique(np.asarray(image_ids, dtype=np.int64)))
    if len(ids) != len(np.asarray(image_ids).ravel()):
        raise ValueError("image ids given to low_data_subset must be unique.")
    if not 0.0 < float(fraction) <= 1.0:
        raise ValueError(f"the low-data fraction must be in (0, 1], got {fraction}; e.g. 0.01 for 1 %.")
    k = round(float(fraction) * len(ids))
    chosen = np.random.default_rng(seed).choice(ids, k, replace=False)
    return np.sort(chosen).astype(np.int64)
