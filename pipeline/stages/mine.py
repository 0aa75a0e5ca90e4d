"""Stage mine: the priors of version n from the checkpoint of epoch n - 1, shard by shard.

A shard is a contiguous run of whole batches of the run's image ids (``RunPlan.shards()``,
pipeline/schedule.py). For each shard, the detector runs in eval mode in fixed batches: batch ``k``
holds the images of ``index[k * mine.batch_size:(k + 1) * mine.batch_size]`` less the quarantined
and unreadable ones, whatever the shard it falls in. Encoder features -> eigen attention
(DESIGN.md step 1) -> region priors (step 2); decoder last layer -> instance priors (step 3). The
shard's boxes are staged in one file per shard (``priors/_staging/vNNNN/mine/``); a shard already
staged with a valid checksum is skipped, so a crashed mine redoes only the missing shards.

Determinism: the same checkpoint, images, quarantine, ``mine.batch_size`` and device give
bit-identical boxes and maps whatever ``mine.shards`` (fixed order, the same batches, eval mode,
deterministic kernels), so a version does not depend on the shard count. The batch size
and the device change the float rounding of the network (scores differ in the last bit between
batch sizes 1 and 4 on CPU), so both are recorded in each shard's marker (a shard staged under
another batch size is mined again). So would torch's
thread count: it is held at ``model_loading.INFERENCE_THREADS`` while a shard is mined, whatever
the runner (threads, Dask processes), and the marker records it with the host and pid.

``mine_shard`` takes the run's *path* so it can be shipped to a Dask worker; it does not take the
run's writer lock (shards are independent files written atomically, and many workers write them
at once while the flow holds the lock). Images that fail to load are recorded in the shard's
marker (``meta["failed"]``) and added to the quarantine by ``mine``/``smooth``, which hold the lock.

What is mined depends on ``priors.source``: region+instance, region, instance (IG-filtered
decoder boxes), predictions (every foreground decoder box, no IG), region0 (the fixed R_0,
copied per shard), random_crops / selective_search (baselines of ``priors.sources``, staged as
kind ``region``; both drawn afresh for each version, seeded by version and image).
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from joindet.detector.presets import DetectorConfig, level_strides, mined_level
from joindet.pipeline.config import MODEL_SOURCES, SOURCE_KINDS
from joindet.pipeline.data import ImageLoadError
from joindet.pipeline.model_loading import (
    INFERENCE_THREADS,
    checkpoint_model,
    file_digest,
    fixed_threads,
    resolve_device,
    shard_meta,
)
from joindet.pipeline.progress import NULL_PROGRESS, Progress
from joindet.pipeline.run_dir import RunDir
from joindet.pipeline.schedule import RunPlan, quarantine_failures
from joindet.pipeline.stages.image_batches import ImageBatches
from joindet.pipeline.stages.result import ShardResult, StageResult
from joindet.priors import (
    BoxSet,
    centre_tokens,
    eigen_attention,
    instance_priors,
    random_crops,
    region_priors,
    selective_search,
)
from joindet.priors.sources import image_seed
from joindet.priors.store.attention_maps import AttentionLayoutError, AttentionMaps, AttentionStore, MapWriter


def mine(
    run: RunDir,
    version: int,
    shard_ids: list[int] | None = None,
    progress: Progress = NULL_PROGRESS,
    run_shards: Callable[[list[int]], list[ShardResult]] | None = None,
) -> StageResult:
    """Stage the shards of ``version`` not yet done (all of them when ``shard_ids`` is None).

    Skipped when ``version`` is committed or every requested shard is already staged.
    ``run_shards(shard_ids)``: how the missing shards run (a thread pool, a Dask cluster: each
    a ``mine_shard`` call, results in shard order); default: one after the other, here.
    """
    progress = progress or NULL_PROGRESS
    _check_version(version)
    with run.lock():
        if run.store.has_version(version):
            return StageResult("mine", True, {"version": version, "committed": True})
        num_shards = run.config.mine.shards
        plan = RunPlan(run)
        todo = plan.missing_shards(version, shard_ids)
        if not todo:
            done = plan.done_shards(version)
            return StageResult("mine", True, {"version": version, "shards_done": len(done), "shards": num_shards})
        _check_checkpoint(run, version)
        if run.config.priors.source in MODEL_SOURCES:
            level = mined_level(run.config.model)
            progress.log(
                f"mine v{version:04d}: eigen attention of encoder level {level['name']} (stride {level['stride']})"
            )
        t0 = time.perf_counter()
        if run_shards is None:
            results = [mine_shard(str(run.path), version, s, progress) for s in todo]
        else:
            results = run_shards(todo)
        failed = [f for r in results for f in r.failed]
        quarantine_failures(run, failed)
        counts: dict[str, int] = {}
        for r in results:
            for k, n in r.counts.items():
                counts[k] = counts.get(k, 0) + n
        summary = {
            "version": version,
            "shards_mined": [r.shard_id for r in results if not r.skipped],
            "shards": num_shards,
            "images": sum(r.num_images for r in results if not r.skipped),
            "quarantined": len(failed),
            "boxes": counts,
            "seconds": round(time.perf_counter() - t0, 3),
        }
        return StageResult("mine", False, summary)


def mine_shard(run_path: str, version: int, shard_id: int, progress: Progress = NULL_PROGRESS) -> ShardResult:
    """Mine and stage one shard of ``version``; skipped when it is already staged (or committed)."""
    progress = progress or NULL_PROGRESS
    _check_version(version)
    run = RunDir.open(run_path)
    cfg = run.config
    plan = RunPlan(run)
    shards = plan.shards(version)
    if not 0 <= shard_id < len(shards):
        raise ValueError(f"shard {shard_id} does not exist: version {version} has {len(shards)} shards (mine.shards)")
    ids = shards[shard_id]
    if run.store.has_version(version) or plan.shard_done(version, shard_id):  # its own marker only
        return ShardResult(version, shard_id, True, num_images=len(ids))
    _check_checkpoint(run, version)
    t0 = time.perf_counter()
    source = cfg.priors.source
    skip = frozenset(run.quarantined_ids())
    failed: list[tuple[int, str, str]] = []
    meta: dict = shard_meta(cfg, ids)
    if source in MODEL_SOURCES:
        meta["mined_level"] = mined_level(cfg.model)
        with fixed_threads(INFERENCE_THREADS):
            kinds, failed, meta["checkpoint_digest"], meta["maps"] = _mine_with_model(
                run, version, shard_id, ids, skip, progress
            )
    elif source == "region0":
        r0 = run.store.read(0, "region")
        kinds = {"region": r0.select(np.isin(r0.image_ids, ids))}
    elif source == "random_crops":
        # Fresh crops for every version (seeded by it), the same for an image whatever its shard.
        kinds = {"region": random_crops(ids[~np.isin(ids, list(skip))], cfg.priors.random_crops, seed=version)}
    elif source == "selective_search":
        kinds, failed = _selective_search(run, version, ids, skip, progress)
    else:
        raise ValueError(f"priors.source={source!r} cannot be mined; see pipeline.config.PRIOR_SOURCES")
    meta["failed"] = [list(f) for f in failed]
    run.store.write_shard(version, shard_id, kinds, meta=meta)
    return ShardResult(
        version,
        shard_id,
        False,
        num_images=len(ids),
        counts={k: len(v) for k, v in kinds.items()},
        failed=failed,
        seconds=round(time.perf_counter() - t0, 3),
    )


def mining_stats(markers: dict) -> dict:
    """Manifest statistics of a version from its shard markers: the mined encoder level and the
    share of degenerate (all-zero) attention maps over the mined images; {} for baseline sources."""
    metas = [m.meta for _, m in sorted(markers.items()) if "maps" in m.meta]
    if not metas:
        return {}
    maps = sum(int(m["maps"][0]) for m in metas)
    degenerate = sum(int(m["maps"][1]) for m in metas)
    return {"mined_level": metas[0]["mined_level"], "degenerate_maps": round(degenerate / max(maps, 1), 6)}


def shard_failures(run: RunDir, version: int) -> list[tuple[int, str, str]]:
    """``(image_id, file, reason)`` of images the staged shards of ``version`` could not load."""
    out = []
    for _, marker in sorted(run.store.staged_shards(version).items()):
        out += [(int(i), str(f), str(r)) for i, f, r in marker.meta.get("failed", [])]
    return out


# ---------------------------------------------------------------------- model sources
def _mine_with_model(
    run: RunDir, version: int, shard_id: int, ids: np.ndarray, skip: frozenset[int], progress: Progress
) -> tuple[dict[str, BoxSet], list[tuple[int, str, str]], str, list[int]]:
    """(kinds, failed images, checkpoint digest, [maps computed, degenerate maps])."""
    cfg = run.config
    p = cfg.priors
    ckpt = run.checkpoint_path(version - 1)
    device = resolve_device(cfg.mine.device)
    model = checkpoint_model(cfg, ckpt, device)
    # aligned: the batches of the index cut at mine.batch_size, which the shard boundaries respect
    batches = ImageBatches(
        run.dataset(), ids, cfg.model.test_size, cfg.model.max_size, cfg.mine.batch_size, skip=skip, aligned=True
    )
    want_region = "region" in SOURCE_KINDS[p.source]
    want_instance = "instance" in SOURCE_KINDS[p.source]
    # IG keeps a decoder box when its share of foreground mask cells is >= t; t = 0 keeps every
    # foreground prediction (the "predictions" baseline).
    t = 0.0 if p.source == "predictions" else p.instance_t
    regions, instances = [], []
    counts = [0, 0]  # attention maps computed, degenerate (all-zero) maps among them
    maps_out = _attention_maps(run, version).writer(ids) if cfg.mine.save_attention else None

    def post(image_ids: np.ndarray, out: dict) -> int:
        """Attention, priors and maps of one batch's forward output (in batch order)."""
        with torch.inference_mode():
            valid = out["enc_valid"]
            tokens = centre_tokens(out["enc_features"], valid) if p.centre_tokens else out["enc_features"]
            maps = eigen_attention(tokens, valid, tau=p.tau, eps=p.eps)
            counts[0] += len(image_ids)
            counts[1] += int((maps.flatten(1).abs().amax(1) == 0).sum())
            if want_region:
                bidx, boxes, scores = region_priors(
                    maps, valid, connectivity=p.connectivity, min_cells=p.min_cells, max_boxes=p.max_region_boxes
                )
                regions.append(BoxSet.from_arrays(image_ids[np.asarray(bidx, np.int64)], boxes, scores, "region"))
            if want_instance:
                bidx, boxes, scores = instance_priors(
                    out["pred_logits"], out["pred_boxes"], maps, valid, t=t, min_score=cfg.priors.instance_min_score
                )
                instances.append(BoxSet.from_arrays(image_ids[np.asarray(bidx, np.int64)], boxes, scores, "instance"))
            if maps_out is not None:
                _save_attention(maps_out, image_ids, maps, valid)
        return len(image_ids)

    progress.start(f"mine v{version:04d} shard {shard_id}", len(batches.todo()))
    # Batch k's post-processing runs on one helper thread while batch k+1 loads and goes through
    # the model (at most one batch in flight, results in batch order: the same boxes and maps).
    with _deterministic(), torch.inference_mode(), ThreadPoolExecutor(1, thread_name_prefix="mine-post") as pool:
        pending = None
        for batch in batches:
            out = model(batch.images.to(device), batch.pad_mask.to(device))
            if pending is not None:
                progress.advance(pending.result())
            keep = ("enc_features", "enc_valid", "pred_logits", "pred_boxes")
            pending = pool.submit(post, batch.image_ids, {k: out[k] for k in keep})
        if pending is not None:
            progress.advance(pending.result())
    if maps_out is not None:
        maps_out.close()  # the shard's maps file(s), each written once
    kinds = {}
    if want_region:
        kinds["region"] = BoxSet.concat(regions).with_kind("region")
    if want_instance:
        kinds["instance"] = BoxSet.concat(instances).with_kind("instance")
    progress.end({"shard": shard_id, **{k: len(v) for k, v in kinds.items()}})
    return kinds, batches.failed, file_digest(ckpt), counts


def _selective_search(
    run: RunDir, version: int, ids: np.ndarray, skip: frozenset[int], progress: Progress
) -> tuple[dict[str, BoxSet], list[tuple[int, str, str]]]:
    """DETReg's boxes of the shard's images; OpenCV's proposal order drawn per (version, image), as
    DETReg draws a new order at every load, yet reproducible whatever the shard."""
    dataset = run.dataset()
    parts, failed = [], []
    progress.start("selective search", len(ids))
    for image_id in ids.tolist():
        if image_id in skip:
            continue
        try:
            image = dataset.load(image_id)
        except ImageLoadError as exc:
            failed.append((exc.image_id, exc.file, exc.reason))
            continue
        boxes = selective_search(image, max_boxes=run.config.priors.random_crops, seed=image_seed(version, image_id))
        parts.append(BoxSet.from_arrays(np.full(len(boxes), image_id, np.int64), boxes, None, "region"))
        progress.advance(1)
    progress.end(None)
    return {"region": BoxSet.concat(parts).with_kind("region")}, failed


def _attention_maps(run: RunDir, version: int) -> AttentionMaps:
    """The version's attention maps, created by the first shard to get here.

    Rows are grouped by the run's shard plan (one group per mining shard, the very ranges
    ``mine_shard`` mines, so a shard's worker writes its own files only), maps sized by :func:`attention_map_side`. Workers of one version
    start together (threads here, processes on Dask); creating a Zarr group twice at once can wipe
    the first, so creation is serialised by a mutex within the process and an flock on
    ``attention/.vNNNN.create.lock`` across processes of this host. Maps of this (uncommitted)
    version left by an attempt under another shard plan or map size are stale: they are replaced.
    """
    folder = Path(run.path) / "attention"
    folder.mkdir(parents=True, exist_ok=True)
    side = attention_map_side(run.config.model)
    groups = RunPlan(run).shards(version)
    with _ATTENTION_MUTEX, open(folder / f".v{version:04d}.create.lock", "a+b") as lock_file:
        fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX)
        try:
            path = folder / f"v{version:04d}.zarr"
            try:
                return AttentionStore.open_or_create(path, run.image_ids(), version, (side, side), groups)
            except AttentionLayoutError:
                AttentionStore(run.path).remove(version)
                return AttentionStore.open_or_create(path, run.image_ids(), version, (side, side), groups)
        finally:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)


def attention_map_side(mcfg: DetectorConfig) -> int:
    """Most cells on a side of the mined encoder level: images are at most ``max_size`` pixels a
    side, padded to a multiple of the C5 stride; level ``attention_level`` has stride 8/16/32 (C3-C5)
    or 64, 128 (the extra stride-2 levels), each rounding up."""
    stride = mined_level(mcfg)["stride"]
    c5 = level_strides(3)[-1]
    padded = math.ceil(mcfg.max_size / c5) * c5
    return math.ceil(padded / stride)


def _save_attention(out: MapWriter, image_ids: np.ndarray, maps: torch.Tensor, valid: torch.Tensor) -> None:
    """Buffer each image's map M (its valid top-left h x w corner) for ``attention/vNNNN.zarr`` (float16)."""
    m = maps.float().cpu().numpy()
    v = valid.cpu().numpy()
    rows = v.any(axis=2).sum(axis=1)
    cols = v.any(axis=1).sum(axis=1)
    out.add(image_ids.tolist(), [m[i, : max(int(h), 1), : max(int(w), 1)] for i, (h, w) in enumerate(zip(rows, cols))])


# ---------------------------------------------------------------------- helpers
def _check_version(version: int) -> None:
    if version < 1:
        raise ValueError(f"version {version} cannot be mined: version 0 is R_0 (run init_priors); mine versions >= 1")


def _check_checkpoint(run: RunDir, version: int) -> None:
    if run.config.priors.source in MODEL_SOURCES and not run.checkpoint_path(version - 1).is_file():
        raise FileNotFoundError(
            f"mining version {version} needs the checkpoint of epoch {version - 1} "
            f"({run.checkpoint_path(version - 1)}); train up to epoch {version} first"
        )


# Mining shards may run on several threads of one process at once; torch's determinism switch
# is process-wide, so the first shard to start turns it on and the last one to finish restores it.
_DET_MUTEX = threading.Lock()
_DET_STATE: dict[str, object] = {"depth": 0, "saved": (False, False)}
_ATTENTION_MUTEX = threading.Lock()


@contextlib.contextmanager
def _deterministic() -> Iterator[None]:
    """Deterministic kernels while mining (same checkpoint and data -> bit-identical boxes)."""
    with _DET_MUTEX:
        if _DET_STATE["depth"] == 0:
            _DET_STATE["saved"] = (
                torch.are_deterministic_algorithms_enabled(),
                torch.is_deterministic_algorithms_warn_only_enabled(),
            )
            torch.use_deterministic_algorithms(True, warn_only=True)
        _DET_STATE["depth"] = int(_DET_STATE["depth"]) + 1
    try:
        yield
    finally:
        with _DET_MUTEX:
            _DET_STATE["depth"] = int(_DET_STATE["depth"]) - 1
            if _DET_STATE["depth"] == 0:
                enabled, warn_only = _DET_STATE["saved"]
                torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
