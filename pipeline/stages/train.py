"""The train stage: continue training the detector on the committed priors up to an end epoch.

``train(run, end_epoch)`` trains epochs ``[last checkpoint + 1, end_epoch)``. Epoch ``e`` trains
on the latest committed prior version ``<= `` the first epoch of its block
(``(e // update_every) * update_every``), read once into memory per version. After every epoch
it appends one JSON line to ``RUN/logs/train.jsonl`` and writes ``RUN/checkpoints/epoch-NNNN.pt``
(atomically, RNG states included), so a crashed call, called again, continues from the last
checkpoint and ends with the same epochs.

Under torchrun each process trains on its DistributedSampler share through DDP; rank 0 alone
writes checkpoints and logs and holds the run's writer lock.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any

import torch

from joindet.pipeline import schedule
from joindet.pipeline.checkpoints import (
    CheckpointError,
    latest_epoch,
    load_checkpoint,
    prune_checkpoints,
    restore_training_state,
    save_checkpoint,
)
from joindet.pipeline.distributed import DistInfo, process_group
from joindet.pipeline.progress import NULL_PROGRESS, Progress
from joindet.pipeline.run_dir import RunDir
from joindet.pipeline.schedule import block_start, prior_version_for_epoch
from joindet.pipeline.stages.result import StageResult
from joindet.pipeline.stages.train_loop import (
    EpochStats,
    TrainParts,
    append_log,
    build_train_parts,
    make_loader,
    run_epoch,
    truncate_log,
)
from joindet.pipeline.tensorboard_log import log_epoch
from joindet.pipeline.training_data import PriorTrainingSet, training_image_ids
from joindet.priors import BoxSet


def train(run: RunDir, end_epoch: int, progress: Progress = NULL_PROGRESS) -> StageResult:
    """Train epochs ``[next, end_epoch)`` where next follows the last checkpoint (0 when none).

    Returns ``StageResult("train", skipped, summary)``; ``skipped`` when every epoch below
    ``end_epoch`` already has a checkpoint. Summary: ``epochs`` [first, end), ``loss`` (last
    epoch's weighted total), ``images_per_s``, ``prior_versions`` used, ``seconds``,
    ``checkpoint`` (path of the last one).
    """
    cfg = run.config
    if not 1 <= end_epoch <= cfg.schedule.epochs:
        raise ValueError(f"end_epoch={end_epoch} must lie in [1, schedule.epochs={cfg.schedule.epochs}]")
    ckpt_dir = run.path / "checkpoints"
    last = latest_epoch(ckpt_dir)
    start = 0 if last is None else last + 1
    if start >= end_epoch:
        return StageResult(
            "train",
            True,
            {"epochs": [start, start], "checkpoint": str(run.checkpoint_path(last))}
            if last is not None
            else {"epochs": [0, 0]},
        )

    with process_group(cfg.train.device) as info, _writer_lock(run, info):
        return _train(run, start, end_epoch, info, progress)


def _train(run: RunDir, start: int, end_epoch: int, info: DistInfo, progress: Progress) -> StageResult:
    cfg = run.config
    parts = build_train_parts(cfg, info)
    if start > 0:
        ckpt = load_checkpoint(run.checkpoint_path(start - 1), map_location=info.device)
        if ckpt["config_digest"] != cfg.digest():
            raise CheckpointError(
                f"{run.checkpoint_path(start - 1)} was trained with another configuration than {run.path / 'run.json'}; "
                "move the checkpoints away or use the run they belong to"
            )
        restore_training_state(
            ckpt, model=parts.model, optimizer=parts.optimizer, scheduler=parts.scheduler, scaler=parts.scaler
        )
    log_path = run.path / "logs" / "train.jsonl"
    if info.is_main:
        truncate_log(log_path, start)  # lines of epochs that never got their checkpoint

    ids = training_image_ids(run.images(), run.quarantined_ids(), cfg.train.max_images)
    dataset = run.dataset()
    versions = run.store.versions()
    schedule_versions = schedule.versions(cfg.schedule)
    t0 = time.time()
    loaded: tuple[int, BoxSet] | None = None
    stats: EpochStats | None = None
    used: list[int] = []
    warned: set[int] = set()
    for epoch in range(start, end_epoch):
        version = prior_version_for_epoch(versions, epoch, cfg.schedule.update_every)
        start_of_block = block_start(epoch, cfg.schedule.update_every)
        if version != start_of_block and start_of_block in schedule_versions and start_of_block not in warned:
            # Allowed (the latest committed version), but not the method's schedule: say so once.
            warned.add(start_of_block)
            progress.log(
                f"epoch {epoch} trains on v{version:04d}: v{start_of_block:04d} of its block is not committed "
                f"(mine and smooth it first to follow the schedule)"
            )
        if loaded is None or loaded[0] != version:
            loaded = (version, run.store.read(version, "smoothed"))
        if version not in used:
            used.append(version)
        data = PriorTrainingSet(dataset, ids, loaded[1], parts.transforms, seed=cfg.train.seed)
        loader = make_loader(data, cfg.train, info, epoch)
        progress.start(
            f"train epoch {epoch} (priors v{version:04d})",
            len(loader.sampler) if loader.sampler is not None else len(data),
            "img",
        )
        stats = run_epoch(parts, loader, info, progress)
        parts.scheduler.step()
        if info.is_main and stats.failed:
            _quarantine(run, stats.failed, progress)
        progress.end({"epoch": epoch, "loss": stats.loss, "images_per_s": stats.images_per_s})
        if info.is_main:
            record = stats.log_line(epoch, version)
            append_log(log_path, record)
            save_checkpoint(
                run.checkpoint_path(epoch),
                model=parts.model,
                optimizer=parts.optimizer,
                scheduler=parts.scheduler,
                scaler=parts.scaler,
                epoch=epoch,
                prior_version=version,
                config_digest=cfg.digest(),
                extra={"world_size": info.world_size},
            )
            # Retention: the newest train.keep_checkpoints plus each block's last epoch, which
            # mines the next version (a committed one was made with it, a pending one needs it).
            mining_epochs = {v - 1 for v in schedule_versions if v > 0}
            prune_checkpoints(run.checkpoint_path(epoch).parent, cfg.train.keep_checkpoints, mining_epochs)
            if cfg.train.tensorboard:  # after the checkpoint: a resumed run logs each epoch once
                log_epoch(run.path, record)
        _barrier(info)
    assert stats is not None
    return StageResult(
        "train",
        False,
        {
            "epochs": [start, end_epoch],
            "loss": stats.loss,
            "losses": stats.losses,
            "images_per_s": stats.images_per_s,
            "prior_versions": used,
            "seconds": round(time.time() - t0, 3),
            "world_size": info.world_size,
            "checkpoint": str(run.checkpoint_path(end_epoch - 1)),
        },
    )


def _quarantine(run: RunDir, failed: list[tuple[int, str, str]], progress: Progress) -> None:
    """Images that failed to load this epoch go to the run's quarantine (the next train call
    leaves them out); under a parent holding the writer lock they stay in the epoch's log line."""
    for image_id, file, reason in failed:
        progress.log(f"quarantined image {image_id} ({file}): {reason}")
    if not lock_held_by_parent():
        schedule.quarantine_failures(run, failed)


def _barrier(info: DistInfo) -> None:
    # Other ranks must not start the next epoch (or return) before rank 0's checkpoint exists.
    if info.distributed:
        torch.distributed.barrier()


@contextlib.contextmanager
def _writer_lock(run: RunDir, info: DistInfo) -> Iterator[Any]:
    """Rank 0 holds the run's writer lock unless a parent (the flow that launched torchrun) holds it."""
    if not info.is_main or lock_held_by_parent():
        yield None
        return
    with run.lock():
        yield None


def lock_held_by_parent() -> bool:
    """True when ``JOINDET_LOCK_HELD_BY`` names a live process (the flow holding the run's lock)."""
    pid = os.environ.get("JOINDET_LOCK_HELD_BY", "")
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


__all__ = ["train", "lock_held_by_parent", "TrainParts"]
