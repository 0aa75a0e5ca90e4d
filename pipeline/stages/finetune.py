"""The finetune stage: supervised training from a pretrained checkpoint, then COCO bbox AP.

The output directory is a run directory of its own (``run.json`` with the finetune config and the
labelled dataset, ``images.parquet``, ``checkpoints/epoch-NNNN.pt``, ``logs/finetune.jsonl``,
``metrics/finetune-epoch-NNNN.json``) plus ``finetune.json`` naming the pretrained checkpoint
(path and sha256), the subset fraction and seed, and the category ids.

From the pretrained model every weight is kept except the class head ``class_embed`` (re-made for
``C + 1`` classes) and the embedding head ``emb_embed`` (left untrained: no embedding loss). The
train set is the whole split or ``low_data_subset(ids, finetune.fraction, finetune.seed)``.
Same resume rules as the train stage; checkpoints are kept every ``CHECKPOINT_EVERY`` epochs
(DETReg's habit: its long low-data schedules would otherwise write thousands).

As DETReg finetunes (its ``configs/DETReg_fine_tune_*.sh`` and defaults): the backbone trains
(``finetune.train_backbone``) with its own learning rate (``finetune.lr_backbone`` 2e-5, the rest
``finetune.lr`` 2e-4), DETR's augmentation (``finetune.augment=detr``, pipeline/data/transforms.py),
the epochs and learning-rate drop of :func:`finetune_schedule`, and detections are the top
``finetune.top_k`` (query, class) pairs (``detector.postprocess.detections``), scored by
category-aware COCO AP on ``data.eval_split`` (a coco-json run: its own split).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from joindet.detector import build_model
from joindet.pipeline.checkpoints import (
    CheckpointError,
    latest_epoch,
    load_checkpoint,
    load_model_state,
    restore_training_state,
    save_checkpoint,
)
from joindet.pipeline.config import RunConfig
from joindet.pipeline.data import low_data_subset
from joindet.pipeline.data.transforms import DetrTransform
from joindet.pipeline.distributed import DistInfo, process_group, unwrap
from joindet.pipeline.finetune_plan import DETREG_SCHEDULE, finetune_schedule
from joindet.pipeline.model_loading import file_digest
from joindet.pipeline.progress import NULL_PROGRESS, Progress
from joindet.pipeline.run_dir import RunDir
from joindet.pipeline.stages.evaluate import eval_split
from joindet.pipeline.stages.finetune_eval import (
    NoGroundTruthError,
    category_ids,
    coco_bbox_metrics,
    detect,
    ground_truth_boxes,
)
from joindet.pipeline.stages.result import StageResult
from joindet.pipeline.stages.train import lock_held_by_parent
from joindet.pipeline.stages.train_loop import append_log, build_train_parts, make_loader, run_epoch, truncate_log
from joindet.pipeline.training_data import PriorTrainingSet, training_image_ids

FINETUNE_JSON = "finetune.json"
#: pretrained weights not carried into the finetuned model.
DROPPED_PREFIXES = ("class_embed.", "emb_embed.")


def finetune(
    run_or_out_dir: RunDir | str | os.PathLike,
    init_checkpoint: str | os.PathLike | None,
    cfg: RunConfig | None = None,
    progress: Progress = NULL_PROGRESS,
    end_epoch: int | None = None,
) -> StageResult:
    """Finetune into ``run_or_out_dir`` (created from ``cfg`` when it is a path) up to ``end_epoch``
    (default ``cfg.finetune.epochs``), then evaluate on ``cfg.data.eval_split`` (a coco-json run:
    its own split).

    ``init_checkpoint``: a pretraining checkpoint (or bare state dict); None trains from the
    backbone weights alone (the supervised baseline). Returns ``StageResult("finetune", skipped,
    summary)`` with ``epochs``, ``loss``, ``num_train_images``, ``metrics`` (COCO_METRICS) and
    ``metrics_file``; skipped when every epoch and its evaluation already exist.
    """
    out = _open_out(run_or_out_dir, cfg)
    cfg = out.config
    total, _ = finetune_schedule(cfg)
    epochs = total if end_epoch is None else end_epoch
    if not 1 <= epochs <= total:
        raise ValueError(
            f"end_epoch={end_epoch} must lie in [1, {total}] (finetune_schedule of {out.path / 'run.json'})"
        )
    _check_same_init(out, init_checkpoint)
    metrics_file = out.path / "metrics" / f"finetune-epoch-{epochs - 1:04d}.json"
    last = latest_epoch(out.path / "checkpoints")
    if last is not None and last + 1 >= epochs and metrics_file.exists():
        return StageResult("finetune", True, {"epochs": [epochs, epochs], **json.loads(metrics_file.read_text())})

    with process_group(cfg.train.device) as info, _lock(out, info):
        return _finetune(out, init_checkpoint, epochs, info, progress, metrics_file)


def _finetune(
    out: RunDir, init: str | os.PathLike | None, epochs: int, info: DistInfo, progress: Progress, metrics_file: Path
) -> StageResult:
    cfg = out.config
    dataset = out.dataset()
    gt = dataset.coco_ground_truth()
    if not gt or not gt.get("annotations"):
        raise NoGroundTruthError(
            f"dataset {cfg.data.dataset!r} (split {cfg.data.split}) has no box annotations; finetuning needs a "
            "labelled dataset (coco, voc, coco-json or synthetic)"
        )
    cats = category_ids(gt)
    mcfg = finetune_model_config(cfg, len(cats))
    ids = training_image_ids(out.images(), out.quarantined_ids(), cfg.train.max_images)
    if cfg.finetune.fraction < 1.0:
        ids = low_data_subset(ids, cfg.finetune.fraction, cfg.finetune.seed)
    if len(ids) == 0:
        raise ValueError(
            f"finetune.fraction={cfg.finetune.fraction} of {out.images().num_rows} images selects none; raise it"
        )
    eval_ids = eval_image_ids(out, ids)
    if eval_split(out) != cfg.data.eval_split:  # said before training, not only in the metrics file
        trained_on = np.isin(eval_ids, ids).all()
        where = (
            "the images it trains on (no held-out set: finetune.fraction is 1)"
            if trained_on
            else f"the {len(eval_ids)} images of it not drawn into the fraction (held out)"
        )
        progress.log(f"finetune: {cfg.data.dataset} has one annotations file; AP is scored on {where}")
    record = {
        "init_checkpoint": None if init is None else str(init),
        "init_digest": None if init is None else file_digest(init),
        "fraction": cfg.finetune.fraction,
        "seed": cfg.finetune.seed,
        "num_train_images": int(len(ids)),
        "category_ids": cats,
    }
    _check_or_write_record(out, record, info)

    ckpt_dir = out.path / "checkpoints"
    last = latest_epoch(ckpt_dir)
    start = 0 if last is None else last + 1
    # Weights come from the pretrained checkpoint (init) or this run's last one (resume): the
    # random-backbone warning applies only to the backbone-only baseline's first start, once
    # (rank 0).
    torch.manual_seed(cfg.train.seed)  # the new class head (and, without init, every weight) from train.seed
    model = build_model(mcfg, warn_random_backbone=start == 0 and init is None and info.is_main)
    if start == 0 and init is not None:
        load_pretrained(model, init)
    parts = build_train_parts(cfg, info, model_cfg=mcfg, with_embeddings=False, model=model)
    if cfg.finetune.augment == "detr":
        parts = dataclasses.replace(parts, transforms=[DetrTransform(mcfg.train_size, mcfg.max_size)])
    if start > 0:
        ckpt = load_checkpoint(ckpt_dir / f"epoch-{start - 1:04d}.pt", map_location=info.device)
        if ckpt["config_digest"] != cfg.digest():
            raise CheckpointError(
                f"{ckpt_dir} holds checkpoints of another configuration than {out.path / 'run.json'}; use a new output directory"
            )
        restore_training_state(
            ckpt, model=parts.model, optimizer=parts.optimizer, scheduler=parts.scheduler, scaler=parts.scaler
        )

    log_path = out.path / "logs" / "finetune.jsonl"
    if info.is_main:
        truncate_log(log_path, start)
    boxes, labels = ground_truth_boxes(gt, cats)
    data = PriorTrainingSet(dataset, ids, boxes, parts.transforms, seed=cfg.train.seed, labels=labels)
    t0 = time.time()
    loss = None
    for epoch in range(start, epochs):
        loader = make_loader(data, cfg.train, info, epoch)
        progress.start(
            f"finetune epoch {epoch}", len(loader.sampler) if loader.sampler is not None else len(data), "img"
        )
        stats = run_epoch(parts, loader, info, progress)
        parts.scheduler.step()
        progress.end({"epoch": epoch, "loss": stats.loss})
        loss = stats.loss
        if info.is_main:
            append_log(log_path, stats.log_line(epoch, None))
        if info.is_main and checkpoint_due(epoch, epochs, mcfg.lr_drop_epoch):
            save_checkpoint(
                ckpt_dir / f"epoch-{epoch:04d}.pt",
                model=parts.model,
                optimizer=parts.optimizer,
                scheduler=parts.scheduler,
                scaler=parts.scaler,
                epoch=epoch,
                config_digest=cfg.digest(),
                extra={"category_ids": cats, "num_classes": len(cats) + 1},
            )
        if info.distributed:
            torch.distributed.barrier()

    summary: dict[str, Any] = {
        "epochs": [start, epochs],
        "loss": loss,
        "num_train_images": int(len(ids)),
        "seconds": round(time.time() - t0, 3),
    }
    if info.is_main:
        metrics = evaluate_finetuned(unwrap(parts.model), out, cats, info.device, image_ids=eval_ids)
        metrics_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = metrics_file.with_name(f".{metrics_file.name}.tmp")
        record = {"metrics": metrics, "eval_split": eval_split(out), "eval_images": len(eval_ids), "epoch": epochs - 1}
        tmp.write_text(json.dumps(record, indent=2))
        os.replace(tmp, metrics_file)
        summary.update(metrics=metrics, metrics_file=str(metrics_file))
    return StageResult("finetune", False, summary)


#: Finetuning keeps a checkpoint every this many epochs (as DETReg does), plus the last epoch of
#: a call and the epoch before the learning-rate drop; a resume restarts from the newest one.
CHECKPOINT_EVERY = 5


def checkpoint_due(epoch: int, end: int, lr_drop: int) -> bool:
    """Whether epoch ``epoch`` (0-based) of a finetune call ending before ``end`` saves a checkpoint."""
    return (epoch + 1) % CHECKPOINT_EVERY == 0 or epoch + 1 == end or epoch + 1 == lr_drop


def finetune_model_config(cfg: RunConfig, num_categories: int):
    """The detector config of finetuning: ``C + 1`` classes, the backbone trainable
    (``finetune.train_backbone``), ``finetune.lr`` / ``lr_backbone`` and the scheduled lr drop."""
    _, drop = finetune_schedule(cfg)
    ft = cfg.finetune
    return cfg.model.with_(
        num_classes=num_categories + 1,
        freeze_backbone=not ft.train_backbone,
        lr=ft.lr,
        lr_backbone=ft.lr_backbone,
        lr_drop_epoch=drop,
    )


def load_pretrained(model: torch.nn.Module, checkpoint: str | os.PathLike) -> None:
    """Copy a pretraining checkpoint into ``model``, except the class and embedding heads.

    Raises ValueError naming the file when other weights are missing, unexpected or of another
    shape (a checkpoint of another preset).
    """
    state = {k: v for k, v in load_model_state(checkpoint).items() if not k.startswith(DROPPED_PREFIXES)}
    own = model.state_dict()
    wrong = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if wrong:
        raise ValueError(
            f"{checkpoint} does not fit the finetune model (shape of {wrong[0]} differs); pretrain and finetune with the same preset"
        )
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(DROPPED_PREFIXES)]
    if missing or result.unexpected_keys:
        first = (missing or result.unexpected_keys)[0]
        raise ValueError(
            f"{checkpoint} does not fit the finetune model ({len(missing)} missing, {len(result.unexpected_keys)} "
            f"unexpected weights, e.g. {first}); pretrain and finetune with the same preset"
        )


def eval_image_ids(out: RunDir, train_ids: np.ndarray) -> np.ndarray:
    """Image ids (int64, index order) a finetune is scored on: every image of the evaluation split
    (``stages.evaluate.eval_split``), less ``train_ids`` when that split is the one trained on (a
    coco-json run: its one annotations file) and some readable images are left (a low-data
    fraction; quarantined images are not scored)."""
    split = eval_split(out)
    ids = out.dataset(split=split).index().column("image_id").to_numpy().astype(np.int64)
    if split != out.config.data.eval_split:
        quarantined = np.fromiter(out.quarantined_ids(), np.int64)
        held_out = ids[~np.isin(ids, train_ids) & ~np.isin(ids, quarantined)]
        return held_out if len(held_out) else ids
    return ids


def evaluate_finetuned(
    model: torch.nn.Module,
    out: RunDir,
    cats: list[int],
    device: torch.device,
    image_ids: np.ndarray | None = None,
) -> dict[str, float | None]:
    """Category-aware COCO bbox metrics of ``model`` on ``image_ids`` (None: every image) of the
    run's evaluation split (``stages.evaluate.eval_split``: ``data.eval_split``; a coco-json run's
    own split, its one annotations file being all the ground truth it has)."""
    cfg = out.config
    split = eval_split(out)
    evalset = out.dataset(split=split)
    gt = evalset.coco_ground_truth()
    if not gt or not gt.get("annotations"):
        raise NoGroundTruthError(
            f"eval split {split!r} of {cfg.data.dataset!r} has no box annotations; set data.eval_split"
        )
    ids = evalset.index().column("image_id").to_numpy() if image_ids is None else image_ids
    results = detect(
        model, evalset, ids, cfg.model.test_size, cfg.model.max_size, cfg.mine.batch_size, device, cfg.finetune.top_k
    )
    return coco_bbox_metrics(gt, results, cats, ids)


def _open_out(target: RunDir | str | os.PathLike, cfg: RunConfig | None) -> RunDir:
    if isinstance(target, RunDir):
        return target
    path = Path(target)
    if cfg is None:
        return RunDir.open(path)
    return RunDir.create(path, cfg)


def _check_same_init(out: RunDir, init: str | os.PathLike | None) -> None:
    """Refuse to continue a finetune directory from another pretrained checkpoint."""
    path = out.path / FINETUNE_JSON
    if not path.exists():
        return
    old = json.loads(path.read_text(encoding="utf-8"))
    if old.get("init_digest") != (None if init is None else file_digest(init)):
        raise ValueError(
            f"{out.path} was finetuned from {old.get('init_checkpoint')}, not {init} "
            "(file contents differ); use a new output directory"
        )


def _check_or_write_record(out: RunDir, record: dict[str, Any], info: DistInfo) -> None:
    path = out.path / FINETUNE_JSON
    if path.exists():
        return
    if info.is_main:
        tmp = path.with_name(f".{FINETUNE_JSON}.tmp")
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)


@contextlib.contextmanager
def _lock(out: RunDir, info: DistInfo) -> Iterator[None]:
    if not info.is_main or lock_held_by_parent():
        yield
        return
    with out.lock():
        yield


__all__ = [
    "DETREG_SCHEDULE",
    "FINETUNE_JSON",
    "eval_image_ids",
    "evaluate_finetuned",
    "finetune",
    "finetune_model_config",
    "finetune_schedule",
    "load_pretrained",
]
