"""Stage smooth: commit version n from its staged shards and the previous version.

R_n = update(R_prev, P^r_n ⊕ P^i_n) with the configured update strategy (Box Smooth by default,
DESIGN.md step 4), where R_prev is the latest committed version below n and R_0 is also handed to
the ``fixed`` strategy. Version n is committed with kinds region, instance (what was mined) and
smoothed; the store computes statistics and churn against the parent.
"""

from __future__ import annotations

import time

from joindet.pipeline.config import SOURCE_KINDS
from joindet.pipeline.progress import NULL_PROGRESS, Progress
from joindet.pipeline.run_dir import RunDir
from joindet.pipeline.schedule import RunPlan, quarantine_failures
from joindet.pipeline.stages.mine import shard_failures
from joindet.pipeline.stages.result import StageResult
from joindet.priors import BoxSet, update_priors


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
        staged = run.store.read_staged_kinds(version, ("region", "instance"))  # each shard file read once
        current = BoxSet.concat([staged[k] for k in SOURCE_KINDS[p.source]])
        parent = earlier[-1]
        prev = run.store.read(parent, "smoothed")
        r0 = run.store.read(0, "smoothed") if p.update == "fixed" else None
        smoothed = update_priors(
            prev,
            current,
            p.update,
            r0=r0,
            momentum=p.momentum,
            iou_thr=p.iou_thr,
            min_score=p.min_score,
            max_per_image=p.max_per_image,
        ).with_kind("smoothed")
        kinds = {k: bs for k, bs in staged.items() if k in SOURCE_KINDS[p.source] or len(bs)}
        manifest = run.store.commit(
            version,
            {**kinds, "smoothed": smoothed},
            parent=parent,
            checkpoint_digest=digests.pop(),
            config_digest=cfg.digest(),
            extra_stats={"source": p.source, "update": p.update, "quarantined": len(failed)},
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
