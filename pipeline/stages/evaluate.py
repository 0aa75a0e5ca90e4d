"""Stage evaluate: class-agnostic COCO metrics of prior versions and of detector proposals.

Both are scored with COCOeval on bounding boxes with ``useCats = 0`` (every category counts as
one "object" class) and ``maxDets = [1, 10, 100]``, reported like the paper's Table 4: AP, AP50,
AP75 (at 100 detections), AR@1, AR@10, AR@100. A metric COCOeval cannot define (no ground-truth
box at all) is reported as None. COCOeval is faster-coco-eval's C++ one (``coco_eval``), whose
numbers are pycocotools'.

- ``evaluate_priors``: the boxes of each committed version (kind ``smoothed`` by default) against
  the ground truth of the run's own split (priors are mined on the training images), on a fixed
  random sample of its images (``eval.sample_images``, 5000 by default, ``all`` for every image;
  drawn from the run's pinned index with ``eval.sample_seed``, so every version is scored on the
  same images; quarantined images are left out). The sample (seed, ids, images scored per
  version) is recorded in ``RUN/metrics/priors.json`` under ``"sample"``, beside the metrics.
- ``evaluate_proposals``: the top-``eval.top_k`` foreground boxes of a checkpoint on the
  ``data.eval_split`` images against their ground truth.

Results are also written under ``RUN/metrics/`` as JSON.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from joindet.detector import postprocess
from joindet.pipeline.model_loading import checkpoint_model, resolve_device
from joindet.pipeline.progress import NULL_PROGRESS, Progress
from joindet.pipeline.run_dir import RunDir
from joindet.pipeline.stages.coco_eval import GroundTruth, coco_stats
from joindet.pipeline.stages.image_batches import ImageBatches
from joindet.priors import BoxSet

METRICS = ("AP", "AP50", "AP75", "AR@1", "AR@10", "AR@100")
#: Key of the prior-evaluation sample's record in ``metrics/priors.json`` (the other keys: vNNNN).
SAMPLE_KEY = "sample"
#: positions of METRICS in COCOeval.stats
_STATS_INDEX = (0, 1, 2, 6, 7, 8)


def evaluate_priors(
    run: RunDir,
    versions: list[int] | None = None,
    kinds: tuple[str, ...] = ("smoothed",),
) -> dict[str, dict[str, dict[str, float | None]]]:
    """Metrics per version and kind: ``{"v0000": {"smoothed": {"AP": ..., ...}}}``.

    ``versions`` None: every committed version. Scored on the run's prior-evaluation sample
    (``prior_sample``; quarantined images left out). Writes ``RUN/metrics/priors.json``, merged
    with what is already there: ``{"vNNNN": {kind: metrics}, ..., "sample": {seed, sample ids,
    images scored per version}}``. Raises ValueError when the run's dataset has no ground-truth
    boxes.
    """
    dataset = run.dataset()
    gt = _ground_truth(dataset, "the run's split")
    images = run.images()
    sample = prior_sample(run)
    quarantined = np.asarray(sorted(run.quarantined_ids()), np.int64)
    img_ids = np.setdiff1d(sample, quarantined)
    truth = GroundTruth(gt, img_ids)
    versions = run.store.versions() if versions is None else list(versions)
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for v in versions:
        manifest = run.store.manifest(v)
        out[f"v{v:04d}"] = {
            k: _metrics(truth, detections_array(boxes_of_images(run.store.read(v, k), img_ids), images), img_ids)
            for k in kinds
            if k in manifest.files
        }
    metrics = run.metrics_dir()
    merged = json.loads((metrics / "priors.json").read_text()) if (metrics / "priors.json").exists() else {}
    for key, per_kind in out.items():
        merged.setdefault(key, {}).update(per_kind)
    merged[SAMPLE_KEY] = _sample_record(merged.get(SAMPLE_KEY) or {}, run, sample, {k: int(len(img_ids)) for k in out})
    _write_json(metrics / "priors.json", merged)
    return out


def sample_size(value: str | int) -> int | None:
    """``eval.sample_images`` as a number of images (None: ``all``); ValueError when neither."""
    text = str(value).strip().lower()
    if text == "all":
        return None
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"eval.sample_images={value!r}: give a positive number of images or 'all'")
    return int(text)


def sample_image_ids(image_ids: np.ndarray, size: int | None, seed: int) -> np.ndarray:
    """``size`` ids drawn without replacement by ``numpy.random.default_rng(seed)``, sorted
    (every id when ``size`` is None or not smaller than the index)."""
    ids = np.sort(np.asarray(image_ids, np.int64))
    if size is None or size >= len(ids):
        return ids
    return np.sort(np.random.default_rng(seed).choice(ids, size, replace=False))


def prior_sample(run: RunDir) -> np.ndarray:
    """The images every prior version of ``run`` is scored on: ``eval.sample_images`` of the
    run's pinned index drawn with ``eval.sample_seed`` (the whole index when it is smaller)."""
    cfg = run.config.eval
    return sample_image_ids(run.image_ids(), sample_size(cfg.sample_images), cfg.sample_seed)


def boxes_of_images(boxes: BoxSet, image_ids: np.ndarray) -> BoxSet:
    """The rows of ``boxes`` whose image is in ``image_ids`` (sorted), by binary search per image."""
    ids = np.asarray(image_ids, np.int64)
    starts = np.searchsorted(boxes.image_ids, ids, side="left")
    stops = np.searchsorted(boxes.image_ids, ids, side="right")
    counts = stops - starts
    rows = np.repeat(starts - (np.cumsum(counts) - counts), counts) + np.arange(int(counts.sum()))
    return BoxSet(boxes.image_ids[rows], boxes.boxes[rows], boxes.scores[rows], boxes.kinds[rows])


def eval_split(run: RunDir) -> str:
    """The split proposals are scored on: ``data.eval_split``, except for a ``coco-json`` run,
    whose one annotations file (``data.annotations``) is all the ground truth it has: its own split."""
    own = run.info["dataset"]
    return own["split"] if own["name"] == "coco-json" else run.config.data.eval_split


def evaluate_proposals(
    run: RunDir,
    epoch: int | None = None,
    split: str | None = None,
    progress: Progress = NULL_PROGRESS,
) -> dict[str, Any]:
    """Metrics of a checkpoint's top-k class-agnostic proposals on ``split`` (default:
    ``eval_split(run)``).

    ``epoch`` None: the last checkpoint. Returns ``{"epoch", "split", "images", "failed",
    "metrics": {...}}`` and writes it to ``RUN/metrics/proposals-epoch-NNNN-<split>.json``.
    """
    progress = progress or NULL_PROGRESS
    cfg = run.config
    epoch = run.last_checkpoint() if epoch is None else epoch
    if epoch is None:
        raise FileNotFoundError(f"run {run.path} has no checkpoint to evaluate; train at least one epoch first")
    split = split or eval_split(run)
    own = run.info["dataset"]
    if own["name"] == "coco-json" and split != own["split"]:
        raise ValueError(
            f"run {run.path} (coco-json) has one annotations file, the ground truth of split {own['split']!r} "
            f"only; evaluate with --split {own['split']} (or leave --split out)"
        )
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
    detection count as misses; no detection at all gives 0 for every metric (None for all when
    those images have no non-crowd ground-truth box).
    """
    ids = np.asarray([im["id"] for im in gt["images"]] if image_ids is None else image_ids, np.int64)
    return _metrics(GroundTruth(gt, ids), detections, ids)


def _metrics(truth: GroundTruth, detections: np.ndarray, image_ids: np.ndarray) -> dict[str, float | None]:
    """METRICS of ``detections`` [N, 7] on ``image_ids`` against ``truth`` (None: undefined)."""
    dets = np.asarray(detections, np.float64).reshape(-1, 7)
    stats = coco_stats(truth, dets[np.isin(dets[:, 0], image_ids)], image_ids)
    return {m: (float(stats[i]) if stats[i] >= 0 else None) for m, i in zip(METRICS, _STATS_INDEX)}


# ---------------------------------------------------------------------- helpers
def _ground_truth(dataset: Any, what: str) -> dict:
    gt = dataset.coco_ground_truth()
    if not gt or not gt.get("annotations"):
        raise ValueError(
            f"dataset {dataset.name!r} ({what}) has no ground-truth boxes to evaluate against; "
            "evaluate on a labelled dataset (coco, voc, coco-json with annotations, synthetic)"
        )
    return gt


def _sample_record(old: dict, run: RunDir, sample: np.ndarray, scored: dict[str, int]) -> dict[str, Any]:
    """The sample's record (seed, setting, ids) and the images scored per version, those of
    ``old`` (the record already written) kept when the sample is the same."""
    cfg = run.config.eval
    same = old.get("image_ids") == sample.tolist()
    return {
        "sample_images": str(cfg.sample_images),
        "seed": cfg.sample_seed,
        "split_images": int(run.images().num_rows),
        "images": int(len(sample)),
        "image_ids": sample.tolist(),
        "scored_images": {**(old.get("scored_images", {}) if same else {}), **scored},
    }


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))
    os.replace(tmp, path)
