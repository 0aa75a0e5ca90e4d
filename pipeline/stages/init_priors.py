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

Sharding, as mining: :func:`init_shard` computes one shard of the images and stages it
(``priors/_staging/v0000/``, a marker with the host, pid, device and thread count that computed
it); :func:`commit_init` writes v0 from the staged shards; :func:`init_priors` does both in this
process. Init's shards are runs of whole batches (``RunPlan.init_shards``), each batch read and
run as one process would (a batch whose image fails to load is one image short; later batches
keep their images), with torch held at ``INFERENCE_THREADS`` threads: the same v0, bit for bit,
whatever the shard count and whoever computes each shard. ``init_shard`` takes the run's path
(for a Dask worker) and no lock; images that fail to load are recorded in its marker and
quarantined by the commit, after which the shard plan (which leaves the quarantine out) is not
asked again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import numpy as np
import torch

from joindet.detector.model import random_backbone_warning
from joindet.detector.presets import mined_level
from joindet.pipeline.data import ImageLoadError
from joindet.pipeline.model_loading import INFERENCE_THREADS, fixed_threads, initial_model, resolve_device, shard_meta
from joindet.pipeline.progress import NULL_PROGRESS, Progress
from joindet.pipeline.run_dir import RunDir
from joindet.pipeline.schedule import RunPlan, quarantine_failures
from joindet.pipeline.stages.image_batches import Batch, ImageBatches
from joindet.pipeline.stages.result import ShardResult, StageResult
from joindet.priors import BoxSet, colour_tokens, eigen_attention, random_crops, region_priors, selective_search
from joindet.priors.sources import image_seed

#: Sources whose v0 is the source's boxes themselves, every one of them (no per-image cap).
BOX_SOURCES = ("random_crops", "selective_search")


def init_priors(
    run: RunDir,
    progress: Progress = NULL_PROGRESS,
    force: bool = False,
    run_shards: Callable[[list[int]], list[ShardResult]] | None = None,
) -> StageResult:
    """Compute the shards of version 0 not yet staged, then commit it; skipped when it is
    committed (``force``: move it aside and drop its staged shards first).

    ``run_shards(shard_ids)``: how the missing shards run (a thread pool, a Dask cluster: each an
    ``init_shard`` call); default: one after the other in this process, under one progress bar.
    """
    progress = progress or NULL_PROGRESS
    with run.lock():
        if run.store.has_version(0) and not force:
            return StageResult("init_priors", True, {"version": 0})
        if force:
            set_aside_init(run, progress)
        # Once per run, here in the process that drives it (shards in Dask workers do not warn).
        random_backbone_warning(run.config.model)
        t0 = time.perf_counter()
        plan = RunPlan(run)
        todo = plan.missing_shards(0)
        if todo and run_shards is not None:
            run_shards(todo)
        elif todo:
            shards = plan.shards(0)
            progress.log(init_description(run.config))
            progress.start(init_title(run.config), sum(len(shards[s]) for s in todo))
            one_bar = _WithinTask(progress)  # one bar over every shard, as one process sees it
            for shard_id in todo:
                init_shard(str(run.path), shard_id, one_bar)
        return commit_init(run, progress, started=t0)


def set_aside_init(run: RunDir, progress: Progress = NULL_PROGRESS) -> None:
    """``init --force``: move the committed version 0 (if any) to ``priors/_replaced`` and delete
    its staged shards, so that every shard is computed again."""
    with run.lock():
        if run.store.has_version(0):
            progress.log(f"moved the committed version 0 aside to {run.store.move_aside(0)}")
        if run.store.discard_staging(0):
            progress.log("dropped the staged shards of version 0")


def init_title(cfg) -> str:
    """The progress title of init for ``priors.source``."""
    return {
        "predictions": "init_priors v0: untrained model's predictions",
        "random_crops": "init_priors v0: random crops",
        "selective_search": "init_priors v0: selective search",
    }.get(cfg.priors.source, "init_priors R_0")


def init_description(cfg) -> str:
    """One line saying what v0 is made of."""
    if cfg.priors.source in BOX_SOURCES + ("predictions",):
        return f"init_priors: v0 from {cfg.priors.source}"
    level = mined_level(cfg.model)
    what = "colour tokens" if cfg.priors.init_features == "colour" else f"backbone {level['name']}"
    return f"init_priors: R_0 from {what}; later versions mine encoder level {level['name']}"


def init_shard(run_path: str, shard_id: int, progress: Progress = NULL_PROGRESS) -> ShardResult:
    """Compute and stage one shard of version 0; skipped when it is staged (or v0 committed)."""
    progress = progress or NULL_PROGRESS
    run = RunDir.open(run_path)
    cfg = run.config
    plan = RunPlan(run)
    shards = plan.shards(0)
    if not 0 <= shard_id < len(shards):
        raise ValueError(f"shard {shard_id} does not exist: init has {len(shards)} shards (mine.shards)")
    ids = shards[shard_id]
    if run.store.has_version(0) or plan.shard_done(0, shard_id):
        return ShardResult(0, shard_id, True, num_images=len(ids))
    t0 = time.perf_counter()
    source = cfg.priors.source
    meta: dict = {**shard_meta(cfg, ids), "config_digest": cfg.digest()}
    progress.start(f"{init_title(cfg)} shard {shard_id}", len(ids))
    if source in BOX_SOURCES:
        region, failed = _box_source(run, ids, progress)
    else:
        with fixed_threads(INFERENCE_THREADS):
            region, failed, meta["maps"] = _model_source(run, ids, progress)
    meta["failed"] = [list(f) for f in failed]
    run.store.write_shard(0, shard_id, {"region": region}, meta=meta)
    progress.end({"shard": shard_id, "region": len(region)})
    return ShardResult(
        0,
        shard_id,
        False,
        num_images=len(ids),
        counts={"region": len(region)},
        failed=failed,
        seconds=round(time.perf_counter() - t0, 3),
    )


def commit_init(run: RunDir, progress: Progress = NULL_PROGRESS, started: float | None = None) -> StageResult:
    """Commit version 0 from its staged shards (kinds region and smoothed); skipped when committed.

    Raises ValueError when shards are missing (run ``init_shard`` for them, or ``init_priors``).
    ``started``: ``time.perf_counter()`` when the shards began, for the summary's seconds.
    """
    progress = progress or NULL_PROGRESS
    with run.lock():
        if run.store.has_version(0):
            return StageResult("init_priors", True, {"version": 0})
        t0 = time.perf_counter() if started is None else started
        cfg = run.config
        source = cfg.priors.source
        plan = RunPlan(run)
        missing = plan.missing_shards(0)
        if missing:
            raise ValueError(
                f"version 0 has {len(missing)} of {cfg.mine.shards} shards not computed (e.g. shard {missing[0]}); "
                f"run `joindet stage run init {run.path}` first"
            )
        if started is None:  # alone (the shards ran elsewhere): its own task for the summary below
            progress.start("init_priors v0: commit", None, unit="box")
        todo = sum(len(ids) for ids in plan.shards(0))  # asked before the quarantine grows below
        wanted = range(cfg.mine.shards)
        markers = run.store.staged_shards(0)
        region = run.store.read_staged_all(0, wanted).with_kind("region")
        failed = [(int(i), str(f), str(r)) for s in wanted for i, f, r in markers[s].meta.get("failed", [])]
        if failed:
            quarantine_failures(run, failed)
            for image_id, file, reason in failed:
                progress.log(f"quarantined image {image_id} ({file}): {reason}")
        if source in BOX_SOURCES:
            smoothed = region.with_kind("smoothed")
            stats: dict = {"boxes_per_image_setting": cfg.priors.random_crops}
        else:
            smoothed = cap_per_image(region, cfg.priors.min_score, cfg.priors.max_per_image).with_kind("smoothed")
            stats = {}
            if source != "predictions":
                maps = np.asarray([markers[s].meta["maps"] for s in wanted], np.int64).sum(0)
                stats = {
                    "mined_level": mined_level(cfg.model),
                    "init_features": cfg.priors.init_features,
                    "degenerate_maps": round(int(maps[1]) / max(int(maps[0]), 1), 6),
                }
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
            "shards": cfg.mine.shards,
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


def _batches(run: RunDir, ids: np.ndarray, failed: list) -> Iterator[Batch]:
    """The batches of ``ids``: each run of ``mine.batch_size`` ids is one batch (less the images
    that fail to load, which land in ``failed``), so the batches of a shard are those of one
    shard over every image whatever the shard boundaries (which fall between batches)."""
    cfg = run.config
    batches = ImageBatches(
        run.dataset(), ids, cfg.model.test_size, cfg.model.max_size, cfg.mine.batch_size, aligned=True
    )
    yield from batches
    failed += batches.failed


def _model_source(run: RunDir, ids: np.ndarray, progress: Progress) -> tuple[BoxSet, list, list[int]]:
    """v0 of the eigen sources (R_0) and of ``predictions`` over ``ids``: one pass of the initial
    model (none for colour tokens, which need no weights).

    Returns (boxes of kind region, failed images, [maps computed, degenerate maps]).
    """
    cfg = run.config
    device = resolve_device(cfg.mine.device)
    predictions = cfg.priors.source == "predictions"
    model = initial_model(cfg, device) if predictions or cfg.priors.init_features != "colour" else None
    parts, failed, counts = [], [], [0, 0]
    with torch.inference_mode():
        for batch in _batches(run, ids, failed):
            images, pad = batch.images.to(device), batch.pad_mask.to(device)
            if predictions:
                out = model(images, pad)
                parts.append(top_predictions(batch.image_ids, out["pred_logits"], out["pred_boxes"], cfg))
            else:
                feat, valid = _features(model, images, pad, cfg)
                boxes, n_degenerate = _regions(batch.image_ids, feat, valid, cfg)
                parts.append(boxes)
                counts[0] += len(batch.image_ids)
                counts[1] += n_degenerate
            progress.advance(len(batch.image_ids))
    region = BoxSet.concat(parts).with_kind("region") if parts else BoxSet.empty().with_kind("region")
    return region, failed, counts


def _box_source(run: RunDir, ids: np.ndarray, progress: Progress) -> tuple[BoxSet, list]:
    """v0 of random_crops (seed 0) and selective_search over ``ids``: ``priors.random_crops`` boxes
    per image. Returns (boxes of kind region, failed images)."""
    cfg = run.config
    n = cfg.priors.random_crops
    if cfg.priors.source == "random_crops":
        # Each image's crops depend on (seed, image id) alone: the same whatever the shard.
        region = random_crops(ids, n, seed=0)
        progress.advance(len(ids))
        return region, []
    dataset = run.dataset()
    parts, failed = [], []
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
    return region, failed


class _WithinTask:
    """A shard's progress inside the caller's one task: advances and logs pass, starts and ends
    of the shard do not (``init_priors`` shows one bar over every shard)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def start(self, task: str, total: int | None, unit: str = "img") -> None:
        pass

    def advance(self, n: int = 1, **metrics) -> None:
        self.progress.advance(n, **metrics)

    def end(self, summary=None) -> None:
        pass

    def log(self, message: str) -> None:
        self.progress.log(message)


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
