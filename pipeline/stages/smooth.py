"""Stage smooth: commit version n from its staged shards and the previous version.

R_n = update(R_prev, P^r_n ⊕ P^i_n) with the configured update strategy (Box Smooth by default,
DESIGN.md step 4), where R_prev is the latest committed version below n and R_0 is also handed to
the ``fixed`` strategy. Version n is committed with kinds region, instance (what was mined) and
smoothed; the store computes statistics and churn against the parent.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from joindet.pipeline.config import SOURCE_KINDS
from joindet.pipeline.progress import NULL_PROGRESS, Progress
from joindet.pipeline.run_dir import RunDir
from joindet.pipeline.schedule import RunPlan, quarantine_failures
from joindet.pipeline.stages.mine import mining_stats, shard_failures
from joindet.pipeline.stages.result import StageResult
from joindet.priors import BoxSet, update_priors
from joindet.priors.boxset import KIND_CODES
from joindet.priors.threads import default_threads, thread_map
from joindet.storage_schema import KINDS

#: Images in ``update_priors`` calls at a time in the smooth stage, over all threads: bounds Box
#: Smooth's working memory (~2.9 GB for all 118,287 COCO images x (100 + 100) boxes in one call,
#: ~400 MB for this many images).
UPDATE_CHUNK_IMAGES = 1 << 14


def smooth(run: RunDir, version: int, progress: Progress = NULL_PROGRESS, force: bool = False) -> StageResult:
    """Commit ``version``; skipped when committed (``force``: move the committed one aside first).

    Raises ValueError when shards of ``version`` are missing (run ``mine`` first).
    """
    progress = progress or NULL_PROGRESS
    cfg = run.config
    p = cfg.priors
    with run.lock():
        replace = run.store.has_version(version)
        if replace and not force:
            return StageResult("smooth", True, {"version": version})
        # --force: everything below is checked before the committed version is moved aside.
        earlier = [v for v in run.store.versions() if v < version]
        if not earlier:
            raise ValueError(f"smoothing version {version} needs an earlier committed version (run init_priors first)")
        markers = run.store.staged_shards(version)
        missing = RunPlan(run).missing_shards(version)
        if missing:
            raise ValueError(
                f"version {version} has {len(missing)} of {cfg.mine.shards} shards not mined (e.g. shard {missing[0]}); "
                f"run `joindet stage run mine` for version {version} first"
            )
        stale = sorted(set(markers) - set(range(cfg.mine.shards)))
        if stale:
            raise ValueError(
                f"version {version} has staged shards {stale} from a mining run with more shards than mine.shards="
                f"{cfg.mine.shards}; remove {run.path / 'priors' / '_staging' / f'v{version:04d}'} and mine again"
            )
        digests = {m.meta.get("checkpoint_digest") for m in markers.values()}
        if len(digests) > 1:
            raise ValueError(
                f"the shards of version {version} were mined from different checkpoints (the checkpoint of epoch "
                f"{version - 1} changed while mining); remove {run.path / 'priors' / '_staging' / f'v{version:04d}'} and mine again"
            )
        if replace:
            progress.log(f"moved the committed version {version} aside to {run.store.move_aside(version)}")
        t0 = time.perf_counter()
        progress.start(f"smooth v{version:04d}", None, unit="box")
        failed = shard_failures(run, version)
        quarantine_failures(run, failed)
        every = run.store.read_staged_all(version)  # each shard file read once
        current = current_boxes(every, SOURCE_KINDS[p.source])
        parent = earlier[-1]
        prev = run.store.read(parent, "smoothed")
        r0 = run.store.read(0, "smoothed") if p.update == "fixed" else None
        smoothed = update_in_chunks(
            prev,
            current,
            p.update,
            r0=r0,
            momentum=p.momentum,
            iou_thr=p.iou_thr,
            min_score=p.min_score,
            max_per_image=p.max_per_image,
        ).with_kind("smoothed")
        del current, r0  # only the update reads them: freed before the commit (memory at COCO scale)
        staged = {k: every.of_kind(k) for k in ("region", "instance")}
        del every
        kinds = {k: bs for k, bs in staged.items() if k in SOURCE_KINDS[p.source] or len(bs)}
        manifest = run.store.commit(
            version,
            {**kinds, "smoothed": smoothed},
            parent=parent,
            checkpoint_digest=digests.pop(),
            config_digest=cfg.digest(),
            extra_stats={"source": p.source, "update": p.update, "quarantined": len(failed), **mining_stats(markers)},
            parent_smoothed=prev,
        )
        images = max(run.images().num_rows - run.quarantine().num_rows, 1)
        summary = {
            "version": version,
            "parent": parent,
            "boxes": {k: len(bs) for k, bs in {**kinds, "smoothed": smoothed}.items()},
            "boxes_per_image": round(len(smoothed) / images, 3),
            "churn": manifest.stats.get("churn"),
            "seconds": round(time.perf_counter() - t0, 3),
        }
        progress.end(summary)
        return StageResult("smooth", False, summary)


def current_boxes(every: BoxSet, kinds: tuple[str, ...]) -> BoxSet:
    """P^r_n ⊕ P^i_n: ``BoxSet.concat([every.of_kind(k) for k in kinds])`` (each image's boxes of
    the first kind, then of the next), taken from ``every`` (all staged boxes, in shard-file
    order) without a second concatenation and sort when its rows already come in that order (as
    ``write_shard`` writes them); computed by the concatenation otherwise."""
    if len(kinds) == 1:
        return every.of_kind(kinds[0])
    rank = np.full(len(KINDS), len(kinds), np.int64)
    rank[[KIND_CODES[k] for k in kinds]] = np.arange(len(kinds))
    row_rank = rank[every.kinds]
    chosen = every if (row_rank < len(kinds)).all() else every.select(row_rank < len(kinds))
    r = rank[chosen.kinds]
    same_image = chosen.image_ids[1:] == chosen.image_ids[:-1]
    if (same_image & (r[1:] < r[:-1])).any():
        return BoxSet.concat([every.of_kind(k) for k in kinds])
    return chosen


def update_in_chunks(
    prev: BoxSet, cur: BoxSet, strategy: str, *, r0: BoxSet | None = None, threads: int | None = None, **settings: Any
) -> BoxSet:
    """``update_priors`` run on ranges of ``UPDATE_CHUNK_IMAGES / threads`` images, ``threads``
    chunks at a time (None: ``priors.threads.default_threads()``), concatenated in image order.

    Every strategy treats each image on its own (``fixed`` returns R_0 whole and runs once), so
    the result is the same as one call, while Box Smooth's working memory is bounded by a chunk
    instead of the whole version (about 2.9 GB for 118,287 images x (100 + 100) boxes at once),
    whatever the thread count (on 2 cores, chunks of 8,192 images on 2 threads took 0.72x the time
    of 16,384 on one, with the same peak memory within 4 %).
    """
    if strategy == "fixed":
        return update_priors(prev, cur, strategy, r0=r0, **settings)
    ids = np.union1d(prev.unique_image_ids(), cur.unique_image_ids())
    threads = default_threads() if threads is None else max(1, threads)
    starts = ids[:: max(1, UPDATE_CHUNK_IMAGES // threads)]
    stops = np.append(starts[1:], np.iinfo(np.int64).max)

    def one(bounds: tuple[int, int]) -> BoxSet:
        lo, hi = bounds
        return update_priors(_image_range(prev, lo, hi), _image_range(cur, lo, hi), strategy, r0=r0, **settings)

    parts = thread_map(one, list(zip(starts.tolist(), stops.tolist())), threads)
    return BoxSet.concat(parts) if len(parts) != 1 else parts[0]


def _image_range(boxes: BoxSet, lo: int, hi: int) -> BoxSet:
    """The rows of image ids in [lo, hi) (views: rows are sorted by image id)."""
    a, b = np.searchsorted(boxes.image_ids, [lo, hi])
    return BoxSet(boxes.image_ids[a:b], boxes.boxes[a:b], boxes.scores[a:b], boxes.kinds[a:b])
