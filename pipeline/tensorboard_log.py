"""TensorBoard event files of a run (``--set train.tensorboard=true``), under ``RUN/tensorboard/``.

Watch them with ``tensorboard --logdir RUN/tensorboard``. What is written (tensorboard is an
optional extra: ``pip install 'joindet[tensorboard]'``):

- per training epoch (step = epoch), after its checkpoint is written: ``train/loss`` (weighted
  total), ``train/<loss name>`` for every loss term, ``train/lr``, ``train/images_per_s``,
  ``train/prior_version``;
- per committed prior version (step = version): ``priors/boxes_per_image``,
  ``priors/churn/{matched,added,removed,mean_iou}`` against the parent version and, when the
  dataset has ground truth, ``priors/<metric>`` (``AR@1``, ``AR@10``, ``AR@100``, ``AP``, ...) of
  the smoothed priors; and ``priors/images``: the first :data:`IMAGES_PER_VERSION` images of the
  run with the version's smoothed priors drawn (the :data:`BOXES_PER_IMAGE` best-scored).

Each call opens a writer, appends and closes it (a new event file per call, which TensorBoard
reads as one stream): training, mining and the flow may run in different processes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: the event-file directory inside a run.
TENSORBOARD_DIR = "tensorboard"
#: images drawn with their priors per version.
IMAGES_PER_VERSION = 4
#: priors drawn per image (highest scores first).
BOXES_PER_IMAGE = 20


def tensorboard_dir(run_path: str | os.PathLike) -> Path:
    """``RUN/tensorboard``: give it to ``tensorboard --logdir``."""
    return Path(run_path) / TENSORBOARD_DIR


def _writer(run_path: str | os.PathLike) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ValueError(
            "train.tensorboard=true needs the tensorboard package: pip install 'joindet[tensorboard]' "
            "(or pip install tensorboard), or set train.tensorboard=false"
        ) from None
    return SummaryWriter(log_dir=str(tensorboard_dir(run_path)))


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def epoch_scalars(record: dict[str, Any]) -> dict[str, float]:
    """The scalars of one ``train.jsonl`` record (``EpochStats.log_line``): tag -> value."""
    out = {f"train/{name}": float(v) for name, v in (record.get("losses") or {}).items() if _finite(v)}
    for key in ("loss", "lr", "images_per_s", "prior_version"):
        if _finite(record.get(key)):
            out[f"train/{key}"] = float(record[key])
    return out


def version_scalars(statistics: dict[str, Any], metrics: dict[str, Any]) -> dict[str, float]:
    """The scalars of one prior version from the smooth stage's summary (``boxes_per_image``,
    ``churn``) and ``evaluate_priors``' result (``{"vNNNN": {"smoothed": {metric: value}}}``)."""
    out = {}
    if _finite(statistics.get("boxes_per_image")):
        out["priors/boxes_per_image"] = float(statistics["boxes_per_image"])
    for name, v in (statistics.get("churn") or {}).items():
        if _finite(v):
            out[f"priors/churn/{name}"] = float(v)
    for per_kind in metrics.values():
        for name, v in ((per_kind or {}).get("smoothed") or {}).items():
            if _finite(v):
                out[f"priors/{name}"] = float(v)
    return out


def log_epoch(run_path: str | os.PathLike, record: dict[str, Any]) -> dict[str, float]:
    """Append one training epoch's scalars (step = ``record["epoch"]``); returns what was written."""
    scalars = epoch_scalars(record)
    writer = _writer(run_path)
    try:
        for tag, value in scalars.items():
            writer.add_scalar(tag, value, global_step=int(record["epoch"]))
    finally:
        writer.close()
    return scalars


def log_version(
    run_path: str | os.PathLike,
    version: int,
    statistics: dict[str, Any],
    metrics: dict[str, Any],
    pictures: Sequence[tuple[np.ndarray, np.ndarray]] = (),
) -> dict[str, float]:
    """Append one prior version's scalars and pictures (step = ``version``).

    ``pictures``: ``(image uint8 [H, W, 3] RGB, boxes float [n, 4] normalised xyxy)`` pairs, drawn
    together as ``priors/images``. Returns the scalars written.
    """
    scalars = version_scalars(statistics, metrics)
    writer = _writer(run_path)
    try:
        for tag, value in scalars.items():
            writer.add_scalar(tag, value, global_step=version)
        for i, (image, boxes) in enumerate(pictures):
            h, w = image.shape[:2]
            pixels = np.asarray(boxes, np.float32).reshape(-1, 4) * np.array([w, h, w, h], np.float32)
            writer.add_image_with_boxes(
                f"priors/images/{i}", image, pixels, global_step=version, dataformats="HWC", labels=None
            )
    finally:
        writer.close()
    return scalars


def version_pictures(run: Any, version: int, count: int = IMAGES_PER_VERSION) -> list[tuple[np.ndarray, np.ndarray]]:
    """The first ``count`` images of ``run`` (a ``RunDir``) with their best-scored smoothed priors
    of ``version`` (at most :data:`BOXES_PER_IMAGE`, normalised xyxy). Unreadable images are skipped."""
    priors = run.store.read(version, "smoothed")
    dataset = run.dataset()
    ids = run.images().column("image_id").to_numpy()[: count * 2]
    out = []
    for image_id in ids:
        try:
            image = dataset.load(int(image_id))
        except (OSError, ValueError):
            continue
        mine = priors.for_image(int(image_id))
        order = np.argsort(-mine.scores, kind="stable")[:BOXES_PER_IMAGE]
        out.append((image, mine.boxes[order]))
        if len(out) == count:
            break
    return out


__all__ = [
    "TENSORBOARD_DIR",
    "IMAGES_PER_VERSION",
    "BOXES_PER_IMAGE",
    "tensorboard_dir",
    "epoch_scalars",
    "version_scalars",
    "log_epoch",
    "log_version",
    "version_pictures",
]
