"""Stage init_priors: R_0, the region priors of the frozen backbone, committed as version 0.

Backbone-only forward (eval mode, no grad) over the run's images in index order, eigen attention
of C5 (DESIGN.md step 1), region priors (step 2). With ``priors.init_features=colour`` the tokens
are weight-free colour/texture statistics instead of C5 (for runs without backbone weights). Version 0 holds kind ``region`` (every region
prior) and kind ``smoothed`` (the same boxes with ``priors.min_score`` and
``priors.max_per_image`` applied: what training reads). Unreadable images are quarantined.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from joindet.pipeline.model_loading import initial_model, resolve_device
from joindet.pipeline.progress import NULL_PROGRESS, Progress
from joindet.pipeline.run_dir import RunDir
from joindet.pipeline.stages.image_batches import ImageBatches
from joindet.pipeline.stages.result import StageResult
from joindet.priors import BoxSet, colour_tokens, eigen_attention, region_priors


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
        progress.start("init_priors R_0", todo)
        parts = []
        with torch.inference_mode():
            for batch in batches:
                feat, valid = _features(model, batch.images.to(device), batch.pad_mask.to(device), cfg)
                parts.append(_regions(batch.image_ids, feat, valid, cfg))
                progress.advance(len(batch.image_ids))
        if batches.failed:
            run.add_quarantine(batches.failed)
            for image_id, file, reason in batches.failed:
                progress.log(f"quarantined image {image_id} ({file}): {reason}")
        region = BoxSet.concat(parts).with_kind("region") if parts else BoxSet.empty().with_kind("region")
        smoothed = cap_per_image(region, cfg.priors.min_score, cfg.priors.max_per_image).with_kind("smoothed")
        manifest = run.store.commit(
            0,
            {"region": region, "smoothed": smoothed},
            parent=None,
            checkpoint_digest=None,
            config_digest=cfg.digest(),
            extra_stats={"quarantined": len(batches.failed)},
        )
        mined = todo - len(batches.failed)
        summary = {
            "version": 0,
            "images": mined,
            "quarantined": len(batches.failed),
            "region_boxes": len(region),
            "smoothed_boxes": len(smoothed),
            "boxes_per_image": round(len(smoothed) / max(mined, 1), 3),
            "seconds": round(time.perf_counter() - t0, 3),
            "manifest_boxes": manifest.num_boxes,
        }
        progress.end(summary)
        return StageResult("init_priors", False, summary)


def _features(
    model: torch.nn.Module, images: torch.Tensor, pad_mask: torch.Tensor, cfg
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens of R_0: the frozen backbone's C5, or weight-free colour tokens (priors.init_features)."""
    if cfg.priors.init_features == "colour":
        return colour_tokens(images, pad_mask, cfg.priors.init_stride)
    return model.backbone_features(images, pad_mask)


def _regions(image_ids: np.ndarray, feat: torch.Tensor, valid: torch.Tensor, cfg) -> BoxSet:
    """Region priors of one batch: feat [B,h,w,C] and valid [B,h,w] -> BoxSet (kind region)."""
    p = cfg.priors
    maps = eigen_attention(feat, valid, tau=p.tau, eps=p.eps)
    bidx, boxes, scores = region_priors(
        maps, valid, connectivity=p.connectivity, min_cells=p.min_cells, max_boxes=p.max_region_boxes
    )
    return BoxSet.from_arrays(image_ids[np.asarray(bidx, np.int64)], boxes, scores, "region")


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
