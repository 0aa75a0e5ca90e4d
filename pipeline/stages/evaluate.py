"""Stage evaluate: class-agnostic COCO metrics of prior versions and of detector proposals.

Both are scored with pycocotools' COCOeval on bounding boxes with ``useCats = 0`` (every
category counts as one "object" class) and ``maxDets = [1, 10, 100]``, reported like the paper's
Table 4: AP, AP50, AP75 (at 100 detections), AR@1, AR@10, AR@100. A metric COCOeval cannot define
(no ground-truth box at all) is reported as None.

- ``evaluate_priors``: the boxes of each committed version (kind ``smoothed`` by default) against
  the ground truth of the run's own split (priors are mined on the training images).
- ``evaluate_proposals``: the top-``eval.top_k`` foreground boxes of a checkpoint on the
  ``data.eval_split`` images against their ground truth.

Results are also written under ``RUN/metrics/`` as JSON.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from joindet.detector import postprocess
from joindet.pipeline.model_loading import checkpoint_model, resolve_device
from joindet.pipeline.progress import NULL_PROGRESS, Progress
from joindet.pipeline.run_dir import RunDir
from joindet.pipeline.stages.image_batches import ImageBatches
from joindet.priors import BoxSet

METRICS = ("AP", "AP50", "AP75", "AR@1", "AR@10", "AR@100")
#: positions of METRICS in COCOeval.stats
_STATS_INDEX = (0, 1, 2, 6, 7, 8)


def evaluate_priors(
    run: RunDir,
    versions: list[int] | None = None,
    kinds: tuple[str, ...] = ("smoothed",),
) -> dict[str, dict[str, dict[str, float | None]]]:
    """Metrics per version and kind: ``{"v0000": {"smoothed": {"AP": ..., ...}}}``.

    ``versions`` None: every committed version. Writes ``RUN/metrics/priors.json`` (merged with
    what is already there). Raises ValueError when the run's dataset has no ground-truth boxes.
    """
    dataset = run.dataset()
    gt = _ground_truth(dataset, "the run's split")
    images = run.images()
    img_ids = np.setdiff1d(images.column("image_id").to_numpy(), np.asarray(sorted(run.quarantined_ids()), np.int64))
    versions = run.store.versions() if versions is None else list(versions)
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for v in versions:
        manifest = run.store.manifest(v)
        out[f"v{v:04d}"] = {
            k: coco_metrics(gt, detections_array(run.store.read(v, k), images), img_ids)
            for k in kinds
            if k in manifest.files
        }
    path = run.metrics_dir() / "priors.json"
    merged = json.loads(path.read_text()) if path.exists() else {}
    for key, per_kind in out.items():
        merged.setdefault(key, {}).update(per_kind)
    _write_json(path, merged)
    return out


def evaluate_proposals(
    run: RunDir,
    epoch: int | None = None,
    split: str | None = None,
    progress: Progress = NULL_PROGRESS,
) -> dict[str, Any]:
    """Metrics of a checkpoint's top-k class-agnostic proposals on ``split`` (default data.eval_split).

    ``epoch`` None: the last checkpoint. Returns ``{"epoch", "split", "images", "failed",
    "metrics": {...}}`` and writes it to ``RUN/metrics/proposals-epoch-NNNN-<split>.json``.
    """
    progress = progress or NULL_PROGRESS
    cfg = run.config
    epoch = run.last_checkpoint() if epoch is None else epoch
    if epoch is None:
        raise FileNotFoundError(f"run {run.path} has no checkpoint to evaluate; train at least one epoch first")
    split = split or cfg.data.eval_split
    dataset = run.dataset(split)
    gt = _ground_truth(dataset, f"split {split!r}")
    device = resolve_device(cfg.mine.device)
    model = checkpoint_model(cfg, run.checkpoint_path(epoch), device)
    index = dataset.index()
    batches = ImageBatches(
        dataset, index.column("image_id").to_numpy(), cfg.model.test_size, cfg.model.max_size, cfg.mine.batch_size
    )
    progress.start(f"proposals epoch {epoch} on {split}", len(batches.todo()))
    proposals = model_proposals(model, batches, device, cfg.eval.top_k, progress)
    failed_ids = np.asarray([f[0] for f in batches.failed], np.int64)
    img_ids = np.setdiff1d(index.column("image_id").to_numpy(), failed_ids)
    metrics = coco_metrics(gt, detections_array(proposals, index), img_ids)
    result = {
        "epoch": epoch,
        "split": split,
        "images": int(len(img_ids)),
        "failed": len(failed_ids),
        "metrics": metrics,
    }
    _write_json(run.metrics_dir() / f"proposals-epoch-{epoch:04d}-{split}.json", result)
    progress.end(metrics)
    return result


def model_proposals(
    model: torch.nn.Module,
    batches: ImageBatches,
    device: torch.device,
    top_k: int,
    progress: Progress = NULL_PROGRESS,
) -> BoxSet:
    """The ``top_k`` class-agnostic proposals of ``model`` (in eval mode) on every image of
    ``batches`` (kind "instance", normalised xyxy of the original image, foreground scores).
    Images that fail to load are left out (``batches.failed`` lists them)."""
    parts = []
    with torch.inference_mode():
        for batch in batches:
            dets = postprocess(model(batch.images.to(device), batch.pad_mask.to(device)), top_k=top_k)
            for image_id, det in zip(batch.image_ids.tolist(), dets):
                boxes = det["boxes"].float().cpu().numpy()
                parts.append(
                    BoxSet.from_arrays(
                        np.full(len(boxes), image_id), boxes, det["scores"].float().cpu().numpy(), "instance"
                    )
                )
            progress.advance(len(batch.image_ids))
    return BoxSet.concat(parts)


def detections_array(boxes: BoxSet, images: pa.Table) -> np.ndarray:
    """COCO detections as float64 [N, 7] rows ``[image_id, x, y, w, h, score, category_id=1]``.

    ``boxes`` are normalised xyxy of the original image; ``images`` (IMAGES_SCHEMA, sorted by
    image_id) gives each image's width and height in pixels. Every image id must be in ``images``.
    """
    ids = images.column("image_id").to_numpy()
    pos = np.searchsorted(ids, boxes.image_ids)
    found = pos < len(ids)
    found[found] = ids[pos[found]] == boxes.image_ids[found]
    if not found.all():
        bad = int(boxes.image_ids[~found][0])
        raise ValueError(f"boxes refer to image id {bad}, which is not in the run's images.parquet")
    w = images.column("width").to_numpy().astype(np.float64)[pos]
    h = images.column("height").to_numpy().astype(np.float64)[pos]
    b = boxes.boxes.astype(np.float64)
    x0, y0 = b[:, 0] * w, b[:, 1] * h
    rows = np.stack(
        [
            boxes.image_ids.astype(np.float64),
            x0,
            y0,
            b[:, 2] * w - x0,
            b[:, 3] * h - y0,
            boxes.scores.astype(np.float64),
            np.ones(len(boxes)),
        ],
        axis=1,
    )
    return rows.reshape(-1, 7)


def coco_metrics(gt: dict, detections: np.ndarray, image_ids: np.ndarray | None = None) -> dict[str, float | None]:
    """Class-agnostic COCOeval (bbox, useCats=0, maxDets 1/10/100) of ``detections`` [N, 7].

    ``image_ids`` restricts the evaluation (None: every image of ``gt``). Images without any
    detection count as misses; no detection at all gives 0 for every metric.
    """
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet):
        coco_gt = COCO()
        coco_gt.dataset = _agnostic(gt)
        coco_gt.createIndex()
        ids = sorted(coco_gt.getImgIds()) if image_ids is None else [int(i) for i in image_ids]
        dets = detections[np.isin(detections[:, 0], ids)] if len(detections) else detections
        dets = np.column_stack([dets[:, :6], np.ones(len(dets))]) if len(dets) else dets
        has_gt = any(len(coco_gt.getAnnIds(imgIds=[i], iscrowd=False)) for i in ids)
        if not len(dets):
            return dict.fromkeys(METRICS, 0.0 if has_gt else None)
        coco_dt = coco_gt.loadRes(dets)
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.params.useCats = 0
        ev.params.maxDets = [1, 10, 100]
        ev.params.imgIds = ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {m: (float(ev.stats[i]) if ev.stats[i] >= 0 else None) for m, i in zip(METRICS, _STATS_INDEX)}


# ---------------------------------------------------------------------- helpers
def _ground_truth(dataset: Any, what: str) -> dict:
    gt = dataset.coco_ground_truth()
    if not gt or not gt.get("annotations"):
        raise ValueError(
            f"dataset {dataset.name!r} ({what}) has no ground-truth boxes to evaluate against; "
            "evaluate on a labelled dataset (coco, voc, coco-json with annotations, synthetic)"
        )
    return gt


def _agnostic(gt: dict) -> dict:
    """The ground truth as one category (id 1, "object"), iscrowd and area filled in.

    With ``useCats = 0`` COCOeval still only gathers boxes whose category is among the ground
    truth's category ids, so both sides are mapped onto the single id 1.
    """
    anns = []
    for a in gt["annotations"]:
        x, y, w, h = a["bbox"]
        anns.append({**a, "category_id": 1, "iscrowd": int(a.get("iscrowd", 0)), "area": float(a.get("area", w * h))})
    return {"images": gt["images"], "annotations": anns, "categories": [{"id": 1, "name": "object"}]}


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))
    os.replace(tmp, path)
