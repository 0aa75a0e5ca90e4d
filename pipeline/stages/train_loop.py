"""The training loop shared by the train and finetune stages: parts, loader, one epoch, the log.

One epoch: for each batch, forward under autocast (CUDA only), criterion losses (with embedding
targets of the frozen backbone when pretraining), weighted total, backward through the AMP grad
scaler, gradient clipping at ``clip_max_norm``, optimizer step. Losses are averaged over batches
and then over processes; the per-epoch log line holds every loss by name.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from joindet.detector import (
    DetectorConfig,
    EmbeddingTarget,
    SetCriterion,
    build_criterion,
    build_embedding_target,
    build_lr_scheduler,
    build_model,
    build_optimizer,
)
from joindet.pipeline.config import RunConfig, TrainConfig
from joindet.pipeline.data import TrainTransform
from joindet.pipeline.distributed import (
    DistInfo,
    all_reduce_mean_dict,
    all_reduce_sum,
    make_sampler,
    unwrap,
    wrap_model,
)
from joindet.pipeline.progress import Progress
from joindet.pipeline.training_data import (
    collate_train,
    epoch_generator,
    make_train_transforms,
    seed_epoch,
    seed_worker,
)


@dataclass
class TrainParts:
    """Everything one training process works with.

    ``model`` is DDP-wrapped under torchrun (use :func:`unwrap` for its module); ``emb_target``
    is None when the embedding loss is off (finetuning).
    """

    model: torch.nn.Module
    criterion: SetCriterion
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    transforms: list[TrainTransform]
    emb_target: EmbeddingTarget | None
    device: torch.device
    amp: bool
    clip_max_norm: float


def build_train_parts(
    cfg: RunConfig,
    info: DistInfo,
    model_cfg: DetectorConfig | None = None,
    with_embeddings: bool = True,
    model: torch.nn.Module | None = None,
) -> TrainParts:
    """Build model (backbone weights from ``model.backbone_weights``), criterion, AdamW,
    StepLR, grad scaler and training transform for ``cfg`` on ``info.device``.

    ``model_cfg`` overrides ``cfg.model`` (finetuning changes ``num_classes``); ``model`` skips
    building one (finetune builds it from a pretrained checkpoint).
    """
    mcfg = model_cfg or cfg.model
    if model is None:
        # Seeded so that every process (each rank, and a resumed run) starts from the same weights.
        torch.manual_seed(cfg.train.seed)
        # No warning here (every torchrun rank builds it): init_priors warned when v0 was made.
        model = build_model(mcfg, warn_random_backbone=False)
    model = model.to(info.device)
    optimizer = build_optimizer(model, mcfg)
    scheduler = build_lr_scheduler(optimizer, mcfg)
    amp = info.device.type == "cuda"
    scaler = torch.amp.GradScaler(info.device.type, enabled=amp)
    return TrainParts(
        model=wrap_model(model, info),
        criterion=build_criterion(mcfg).to(info.device),
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        transforms=make_train_transforms(mcfg, cfg.train.copy_paste, cfg.train.jitter),
        emb_target=build_embedding_target(mcfg) if with_embeddings else None,
        device=info.device,
        amp=amp,
        clip_max_norm=float(mcfg.clip_max_norm),
    )


def make_loader(dataset: torch.utils.data.Dataset, tcfg: TrainConfig, info: DistInfo, epoch: int) -> DataLoader:
    """The DataLoader of one epoch: shuffle, worker seeds and main-process RNG fixed by (seed, epoch, rank)."""
    sampler = make_sampler(dataset, info, seed=tcfg.seed)
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)
    if sampler is not None:
        sampler.set_epoch(epoch)
    seed_epoch(tcfg.seed, epoch, info.rank)
    return DataLoader(
        dataset,
        batch_size=tcfg.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        num_workers=tcfg.num_workers,
        collate_fn=collate_train,
        worker_init_fn=seed_worker,
        generator=epoch_generator(tcfg.seed, epoch, info.rank),
        pin_memory=info.device.type == "cuda",
        drop_last=False,
    )


@dataclass
class EpochStats:
    """Per-epoch figures (means over batches, then over processes)."""

    loss: float
    losses: dict[str, float]
    lr: float
    images: int
    seconds: float
    skipped_batches: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    #: ``(image_id, file, reason)`` of images that failed to load, over every process.
    failed: list[tuple[int, str, str]] = field(default_factory=list)

    @property
    def images_per_s(self) -> float:
        return round(self.images / self.seconds, 3) if self.seconds > 0 else 0.0

    def log_line(self, epoch: int, prior_version: int | None) -> dict[str, Any]:
        """The ``train.jsonl`` record of this epoch."""
        return {
            "epoch": epoch,
            "loss": self.loss,
            "losses": self.losses,
            "lr": self.lr,
            "images": self.images,
            "images_per_s": self.images_per_s,
            "seconds": round(self.seconds, 3),
            "prior_version": prior_version,
            "skipped_batches": self.skipped_batches,
            "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            **({"failed_images": [list(f) for f in self.failed]} if self.failed else {}),
            **self.extra,
        }


def run_epoch(parts: TrainParts, loader: DataLoader, info: DistInfo, progress: Progress) -> EpochStats:
    """Train one pass over ``loader``; returns the epoch's averaged losses."""
    parts.model.train()
    sums: dict[str, float] = {}
    batches, images, skipped = 0, 0, 0
    failed: list[tuple[int, str, str]] = []
    t0 = time.time()
    for batch in loader:
        failed += [tuple(f) for f in batch.failed]
        # Under DDP every rank must run the same number of steps: skip only when all agree.
        empty = batch.images is None
        if info.distributed:
            empty = all_reduce_sum(1.0 if empty else 0.0, info) > 0
        if empty:
            skipped += 1
            continue
        imgs, pad_mask, targets = batch.images, batch.pad_mask, batch.targets
        imgs = imgs.to(parts.device, non_blocking=True)
        pad_mask = pad_mask.to(parts.device, non_blocking=True)
        targets = [{k: v.to(parts.device) for k, v in t.items()} for t in targets]
        losses, total = train_step(parts, imgs, pad_mask, targets)
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + v
        sums["loss"] = sums.get("loss", 0.0) + total
        batches += 1
        images += len(targets)
        progress.advance(len(targets), loss=round(total, 4), lr=current_lr(parts.optimizer))
    means = {k: v / max(batches, 1) for k, v in sums.items()}
    means = all_reduce_mean_dict(means, info)
    images = int(all_reduce_sum(images, info))
    loss = means.pop("loss", float("nan"))
    if info.distributed:
        gathered: list[Any] = [None] * info.world_size
        torch.distributed.all_gather_object(gathered, failed)
        failed = sorted({tuple(f) for part in gathered for f in part})
    return EpochStats(
        loss,
        means,
        current_lr(parts.optimizer),
        images,
        time.time() - t0,
        skipped,
        {"world_size": info.world_size},
        failed,
    )


def train_step(
    parts: TrainParts, images: torch.Tensor, pad_mask: torch.Tensor, targets: list[dict[str, torch.Tensor]]
) -> tuple[dict[str, float], float]:
    """One optimisation step; returns (unweighted losses by name, weighted total) as floats."""
    with torch.autocast(parts.device.type, enabled=parts.amp):
        outputs = parts.model(images, pad_mask)
    if parts.emb_target is not None:
        # Pooled from the C5 this forward pass computed: the backbone runs once per step.
        c5 = outputs.get("backbone_c5")
        embs = parts.emb_target(unwrap(parts.model), images, pad_mask, [t["boxes"] for t in targets], c5=c5)
        for t, e in zip(targets, embs):
            t["embs"] = e
    losses = parts.criterion(outputs, targets)
    total = parts.criterion.total(losses)
    if not math.isfinite(total.item()):
        raise FloatingPointError(
            f"training loss is {total.item()} ({ {k: round(v.item(), 4) for k, v in losses.items()} }); "
            "lower model.lr or check the priors of this version"
        )
    parts.optimizer.zero_grad(set_to_none=True)
    parts.scaler.scale(total).backward()
    if parts.clip_max_norm > 0:
        parts.scaler.unscale_(parts.optimizer)
        torch.nn.utils.clip_grad_norm_(parts.model.parameters(), parts.clip_max_norm)
    parts.scaler.step(parts.optimizer)
    parts.scaler.update()
    return {k: float(v.item()) for k, v in losses.items()}, float(total.item())


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    """Learning rate of the main parameter group (named ``main`` by build_optimizer, else the largest)."""
    for g in optimizer.param_groups:
        if g.get("name") == "main":
            return float(g["lr"])
    return max(float(g["lr"]) for g in optimizer.param_groups)


def append_log(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line and fsync (the log survives a kill right after an epoch)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def truncate_log(path: Path, next_epoch: int) -> None:
    """Drop lines of epochs >= ``next_epoch`` (logged, then killed before their checkpoint)."""
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    keep = []
    for line in lines:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a kill
        if isinstance(rec, dict) and int(rec.get("epoch", -1)) < next_epoch:
            keep.append(line)
    if len(keep) != len(lines):
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text("".join(k + "\n" for k in keep), encoding="utf-8")
        os.replace(tmp, path)


def read_log(path: Path) -> list[dict[str, Any]]:
    """The records of a ``train.jsonl`` file (empty when missing)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


__all__ = [
    "EpochStats",
    "TrainParts",
    "append_log",
    "build_train_parts",
    "current_lr",
    "make_loader",
    "read_log",
    "run_epoch",
    "train_step",
    "truncate_log",
]
