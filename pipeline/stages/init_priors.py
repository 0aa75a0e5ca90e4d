"""Stage init_priors: version 0, the priors the first training block learns from.

What v0 holds depends on ``priors.source`` (docs/ablations.md names each baseline):

- region+instance, region, instance, region0 (JoinDet and its Table 5 variants): R_0, the region
  priors of the frozen backbone. Backbone-only forward (eval mode, no grad) over the run's images
  in index order, eigen attention of C5 (DESIGN.md step 1), region priors (step 2). With
  ``priors.init_features=colour`` the tokens are weight-free colour/texture statistics instead
  of C5 (for runs without backbone weights).
- predictions (Table 5(a), box predictions without region priors): the *untrained* detector's
  decoder boxes, the ``priors.max_per_image`` best per image by foreground probability. No
  attention filter and no argmax rule: at initialisation the focal-loss prior bias makes no
  query foreground by argmax, and an empty v0 would give the first block no positive to learn
  from, so the self-training of predictions could never start.
- random_crops (UP-DETR): ``priors.random_crops`` random boxes per image (seed 0).
- selective_search (DETReg): selective search in fast mode on the image resized to 128 x 128,
  its first ``priors.random_crops`` boxes (DETReg's ``max_prop`` = 30); OpenCV's random order of
  the proposals seeded per image (``priors.sources.image_seed(0, image_id)``), so v0 is reproducible.

Version 0 holds kind ``region`` (every box of the source) and kind ``smoothed`` (what training
reads): for the eigen and prediction sources the same boxes with ``priors.min_score`` and
``priors.max_per_image`` applied; for random_crops and selective_search every box, as the source's
own count is the setting (``update=fixed`` then keeps exactly these boxes). Unreadable images are
quarantined. The manifest records the mined encoder level and the share of degenerate
(all-zero) attention maps of the eigen sources.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from joindet.detector.presets import mined_level
from joindet.pipeline.data import ImageLoadError
from joindet.pipeline.model_loading import initial_model, resolve_device
from joindet.pipeline.progress import NULL_PROGRESS, Progress
from joindet.pipeline.run_dir import RunDir
from joindet.pipeline.stages.image_batches import ImageBatches
from joindet.pipeline.stages.result import StageResult
from joindet.priors import BoxSet, colour_tokens, eigen_attention, random_crops, region_priors, selective_search
from joindet.priors.sources import image_seed

#: Sources whose v0 is the source's boxes themselves, every one of them (no per-image cap).
BOX_SOURCES = ("random_crops", "selective_search")


def init_priors(run: RunDir, progress: Progress = NULL_PROGRESS, force: bool = False) -> StageResult:
    """Compute and commit version 0; skipped when it is committed (``force``: move it aside first)."""
    progress = progress or NULL_PROGRESS
    with run.lock():
        if run.store.has_version(0):
            if not force:
                return StageResult("init_priors", True, {"version": 0})
            moved = run.store.move_aside(0)
            progress.log(f"moved the committed version 0 aside to {moved}")
        t0 = time.perf_counter()
        cfg = run.config
        source = cfg.priors.source
        if source in BOX_SOURCES:
            region, failed, todo, stats = _box_source(run, progress)
            smoothed = region.with_kind("smoothed")
        else:
            region, failed, todo, stats = _model_source(run, progress)
            smoothed = cap_per_image(region, cfg.priors.min_score, cfg.priors.max_per_image).with_kind("smoothed")
        if failed:
            run.add_quarantine(failed)
            for image_id, file, reason in failed:
                progress.log(f"quarantined image {image_id} ({file}): {reason}")
        manifest = run.store.commit(
            0,
            {"region": region, "smoothed": smoothed},
            parent=None,
            checkpoint_digest=None,
            config_digest=cfg.digest(),
            extra_stats={"quarantined": len(failed), "source": source, **stats},
        )
        mined = todo - len(failed)
        summary = {
            "version": 0,
            "source": source,
            "images": mined,
            "quarantined": len(failed),
            "region_boxes": len(region),
            "smoothed_boxes": len(smoothed),
            "boxes_per_image": round(len(smoothed) / max(mined, 1), 3),
            "seconds": round(time.perf_counter() - t0, 3),
            "manifest_boxes": manifest.num_boxes,
            **({"level": stats["mined_level"]} if "mined_level" in stats else {}),
        }
        progress.end(summary)
        return StageResult("init_priors", False, summary)


def _model_source(run: RunDir, progress: Progress) -> tuple[BoxSet, list, int, dict]:
    """v0 of the eigen sources (R_0) and of ``predictions``: one pass of the initial model.

    Returns (boxes of kind region, failed images, images to do, manifest statistics).
    """
    cfg = run.config
    device = resolve_device(cfg.mine.device)
    model = initial_model(cfg, device)
    batches = ImageBatches(
        run.dataset(),
        run.image_ids(),
        cfg.model.test_size,
        cfg.model.max_size,
        cfg.mine.batch_size,
        skip=frozenset(run.quarantined_ids()),
    )
    todo = len(batches.todo())
    predictions = cfg.priors.source == "predictions"
    stats: dict = {}
    if predictions:
        progress.start("init_priors v0: untrained model's predictions", todo)
    else:
        level = mined_level(cfg.model)
        what = "colour tokens" if cfg.priors.init_features == "colour" else f"backbone {level['name']}"
        progress.log(f"init_priors: R_0 from {what}; later versions mine encoder level {level['name']}")
        progress.start("init_priors R_0", todo)
    parts, degenerate, maps_seen = [], 0, 0
    with torch.inference_mode():
        for batch in batches:
            images, pad = batch.images.to(device), batch.pad_mask.to(device)
            if predictions:
                out = model(images, pad)
                parts.append(top_predictions(batch.image_ids, out["pred_logits"], out["pred_boxes"], cfg))
            else:
                feat, valid = _features(model, images, pad, cfg)
                boxes, n_degenerate = _regions(batch.image_ids, feat, valid, cfg)
                parts.append(boxes)
                degenerate += n_degenerate
                maps_seen += len(batch.image_ids)
            progress.advance(len(batch.image_ids))
    if not predictions:
        stats = {
            "mined_level": mined_level(cfg.model),
            "init_features": cfg.priors.init_features,
            "degenerate_maps": round(degenerate / max(maps_seen, 1), 6),
        }
    region = BoxSet.concat(parts).with_kind("region") if parts else BoxSet.empty().with_kind("region")
    return region, list(batches.failed), todo, stats


def _box_source(run: RunDir, progress: Progress) -> tuple[BoxSet, list, int, dict]:
    """v0 of random_crops (seed 0) and selective_search: ``priors.random_crops`` boxes per image."""
    cfg = run.config
    skip = set(run.quarantined_ids())
    ids = np.asarray([i for i in run.image_ids().tolist() if i not in skip], np.int64)
    n = cfg.priors.random_crops
    if cfg.priors.source == "random_crops":
        progress.start("init_priors v0: random crops", len(ids))
        region = random_crops(ids, n, seed=0)
        progress.advance(len(ids))
        return region, [], len(ids), {"boxes_per_image_setting": n}
    dataset = run.dataset()
    parts, failed = [], []
    progress.start("init_priors v0: selective search", len(ids))
    for image_id in ids.tolist():
        try:
            image = dataset.load(image_id)
        except ImageLoadError as exc:
            failed.append((exc.image_id, exc.file, exc.reason))
            continue
        boxes = selective_search(image, max_boxes=n, seed=image_seed(0, image_id))
        parts.append(BoxSet.from_arrays(np.full(len(boxes), image_id, np.int64), boxes, None, "region"))
        progress.advance(1)
    region = BoxSet.concat(parts).with_kind("region") if parts else BoxSet.empty().with_kind("region")
    return region, failed, len(ids), {"boxes_per_image_setting": n}


def top_predictions(image_ids: np.ndarray, logits: torch.Tensor, boxes: torch.Tensor, cfg) -> BoxSet:
    """The ``priors.max_per_image`` decoder boxes of each image with the highest foreground
    probability (softmax index 1 of logits [B, Q, 2]); boxes [B, Q, 4] normalised cxcywh.

    Returns kind region, normalised xyxy clipped to [0, 1], zero-area boxes dropped.
    """
    prob = logits.float().softmax(-1)[..., 1]
    k = min(cfg.priors.max_per_image or prob.shape[1], prob.shape[1])
    score, idx = prob.topk(k, dim=1)
    cxcywh = torch.gather(boxes.float(), 1, idx[..., None].expand(-1, -1, 4))
    xyxy = torch.cat([cxcywh[..., :2] - cxcywh[..., 2:] / 2, cxcywh[..., :2] + cxcywh[..., 2:] / 2], -1).clamp(0, 1)
    xyxy, score = xyxy.reshape(-1, 4).cpu().numpy(), score.reshape(-1).cpu().numpy()
    ids = np.repeat(np.asarray(image_ids, np.int64), k)
    keep = (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
    return BoxSet.from_arrays(ids[keep], xyxy[keep], score[keep], "region")


def _features(
    model: torch.nn.Module, images: torch.Tensor, pad_mask: torch.Tensor, cfg
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens of R_0: the frozen backbone's C5, or weight-free colour tokens (priors.init_features)."""
    if cfg.priors.init_features == "colour":
        return colour_tokens(images, pad_mask, cfg.priors.init_stride)
    return model.backbone_features(images, pad_mask)


def _regions(image_ids: np.ndarray, feat: torch.Tensor, valid: torch.Tensor, cfg) -> tuple[BoxSet, int]:
    """Region priors of one batch: feat [B,h,w,C] and valid [B,h,w] -> (BoxSet of kind region,
    number of degenerate maps: all-zero, where the cut found no foreground)."""
    p = cfg.priors
    maps = eigen_attention(feat, valid, tau=p.tau, eps=p.eps)
    bidx, boxes, scores = region_priors(
        maps, valid, connectivity=p.connectivity, min_cells=p.min_cells, max_boxes=p.max_region_boxes
    )
    degenerate = int((maps.flatten(1).abs().amax(1) == 0).sum())
    return BoxSet.from_arrays(image_ids[np.asarray(bidx, np.int64)], boxes, scores, "region"), degenerate


def cap_per_image(boxes: BoxSet, min_score: float, max_per_image: int | None) -> BoxSet:
    """Drop boxes scoring below ``min_score``; keep the ``max_per_image`` best of each image.

    Rows come out sorted by image_id, then by descending score (ties keep their input order).
    """
    keep = boxes.select(boxes.scores >= min_score)
    order = np.lexsort((-keep.scores, keep.image_ids))
    ids = keep.image_ids[order]
    if max_per_image is not None and len(ids):
        first = np.searchsorted(ids, ids, side="left")
        order = order[(np.arange(len(ids)) - first) < max_per_image]
    return BoxSet(keep.image_ids[order], keep.boxes[order], keep.scores[order], keep.kinds[order])
