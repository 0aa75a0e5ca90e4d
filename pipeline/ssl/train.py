"""Self-supervised pretraining of a ResNet backbone on a dataset's own images (no labels).

``pretrain_backbone(dataset, out, settings)`` trains one of ``pipeline.ssl.methods.METHODS``
and writes ``out``: ``{"state_dict": {torchvision ResNet keys, no fc: tensor}, "joindet_ssl":
{settings, dataset fingerprint, per-epoch mean losses, seconds}}``, which
``detector.weights.load_backbone_weights`` (``--set model.backbone_weights=out``) loads like a
SwAV file, with no missing key.

Resumable per epoch: after every epoch the whole training state (model, optimiser, losses) is
written atomically to the state file ``<out>.state.pt`` beside the output; a new call with the
same settings and dataset continues after the last finished epoch (each epoch's image order and
augmentations are seeded by ``seed`` and the epoch, so a resumed run repeats the uninterrupted
one's epochs). The state file is removed once ``out`` is written; a call whose ``out`` was
written with the same settings returns at once.
"""

from __future__ import annotations

import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from joindet.pipeline.progress import NULL_PROGRESS, Progress

#: bump when the state or weights file layout changes (older state files are not resumed).
STATE_FORMAT = 1
#: settings that may change between a run and its resume without changing its results.
RESUME_SAFE = ("device", "workers")


class SSLStateError(ValueError):
    """A state or weights file that does not belong to the requested training."""


@dataclass(frozen=True)
class SSLSettings:
    """One self-supervised training. ``size``: crop side in pixels; ``lr``/``weight_decay`` None:
    the method's defaults (``METHODS``); ``max_images``: the first N images of the index (None: all);
    ``local_views``: DINO's local crops per image."""

    method: str = "simclr"
    arch: str = "resnet18"
    epochs: int = 20
    size: int = 96
    batch_size: int = 32
    lr: float | None = None
    weight_decay: float | None = None
    seed: int = 0
    max_images: int | None = None
    local_views: int = 2
    device: str = "auto"
    workers: int = 0

    def result_keys(self) -> dict[str, Any]:
        """The settings that change the weights (everything but device and loader workers)."""
        return {k: v for k, v in asdict(self).items() if k not in RESUME_SAFE}


@dataclass
class SSLResult:
    """What :func:`pretrain_backbone` did: ``skipped`` when ``out`` was already complete."""

    out: str
    skipped: bool
    resumed_from: int  # epochs already done when this call started
    losses: list[float] = field(default_factory=list)  # mean loss of every epoch, first to last
    seconds: float = 0.0  # training time of all epochs, over every call

    def summary(self) -> dict[str, Any]:
        first, last = (self.losses[0], self.losses[-1]) if self.losses else (None, None)
        return {
            "weights": self.out,
            "skipped": self.skipped,
            "resumed_from_epoch": self.resumed_from,
            "epochs": len(self.losses),
            "loss_first": None if first is None else round(first, 4),
            "loss_last": None if last is None else round(last, 4),
            "seconds": round(self.seconds, 1),
        }


def state_path(out: str | os.PathLike[str]) -> Path:
    """The resume state file beside ``out``: ``<out>.state.pt``."""
    out = Path(out)
    return out.with_name(out.name + ".state.pt")


class _Views(torch.utils.data.Dataset):
    """Image ids of a joindet ``Dataset`` -> list of augmented views (unreadable images: None)."""

    def __init__(self, dataset: Any, ids: np.ndarray, transform: Any) -> None:
        self.dataset, self.ids, self.transform = dataset, ids, transform

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> list[torch.Tensor] | None:
        try:
            image = self.dataset.load(int(self.ids[i]))
        except (OSError, ValueError):
            return None  # quarantined by the runs that read it; SSL just skips it
        return self.transform(Image.fromarray(image))


def _collate(items: list[list[torch.Tensor] | None]) -> list[torch.Tensor]:
    items = [it for it in items if it is not None]
    if not items:
        return []
    return [torch.stack(views) for views in zip(*items)]


def _read_meta(path: Path) -> dict[str, Any] | None:
    """The ``joindet_ssl`` record of a weights file written here (None when absent or foreign)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return None
    meta = obj.get("joindet_ssl") if isinstance(obj, dict) else None
    return meta if isinstance(meta, dict) else None


def _differences(saved: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    return [f"{k}: {saved.get(k)!r} there, {v!r} now" for k, v in wanted.items() if saved.get(k) != v]


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _lr_at(step: int, total: int, base: float) -> float:
    """Linear warm-up over the first 10 % of steps, then cosine decay to 1 % of ``base``."""
    warm = max(1, total // 10)
    if step < warm:
        return base * (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    return base * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t)))


def _seed_epoch(seed: int, epoch: int) -> None:
    s = seed * 100_003 + epoch
    torch.manual_seed(s)
    random.seed(s)
    np.random.seed(s % 2**32)


def pretrain_backbone(
    dataset: Any,
    out: str | os.PathLike[str],
    settings: SSLSettings,
    progress: Progress = NULL_PROGRESS,
    force: bool = False,
) -> SSLResult:
    """Train ``settings.method`` on the images of ``dataset`` (a ``pipeline.data.Dataset``) and
    write the backbone to ``out`` (see the module docstring for the layout and resume rules).

    ``force``: start over when ``out`` or its state file were written with other settings or
    another dataset (otherwise that is an :class:`SSLStateError` naming the differences).
    Raises ``ImportError`` naming the ``ssl`` extra when lightly is not installed.
    """
    try:
        from joindet.pipeline.ssl.methods import METHODS, build_method, views_transform
    except ImportError as exc:
        raise ImportError(
            f"self-supervised backbone pretraining needs lightly ({exc}); install it with pip install -e '.[ssl]'"
        ) from None
    from joindet.pipeline.model_loading import resolve_device

    progress = progress or NULL_PROGRESS
    if settings.method not in METHODS:
        raise ValueError(
            f"self-supervised method {settings.method!r} is not supported; use one of {', '.join(METHODS)}."
        )
    if settings.epochs < 1 or settings.batch_size < 2 or settings.size < 32:
        raise ValueError("backbone pretraining needs epochs >= 1, batch_size >= 2 and size >= 32 pixels.")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    wanted = {**settings.result_keys(), "fingerprint": dataset.fingerprint(), "format": STATE_FORMAT}

    if out.exists():
        meta = _read_meta(out)
        problems = _differences(meta.get("settings", {}), wanted) if meta else ["not written by this command"]
        if not problems:
            return SSLResult(str(out), True, len(meta["losses"]), list(meta["losses"]), float(meta["seconds"]))
        if not force:
            raise SSLStateError(
                f"{out} exists from another training ({'; '.join(problems)}); use --force or another -o."
            )

    device = resolve_device(settings.device)
    torch.manual_seed(settings.seed)
    model = build_method(settings.method, settings.arch).to(device)
    defaults = METHODS[settings.method]
    base_lr = settings.lr if settings.lr is not None else defaults.lr
    wd = settings.weight_decay if settings.weight_decay is not None else defaults.weight_decay
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=base_lr, weight_decay=wd)
    losses: list[float] = []
    seconds = 0.0

    spath = state_path(out)
    if spath.exists():
        state = torch.load(spath, map_location="cpu", weights_only=True)
        problems = _differences(state.get("settings", {}), wanted)
        if problems and not force:
            raise SSLStateError(
                f"{spath} holds another training ({'; '.join(problems)}); use --force to start over or another -o."
            )
        if not problems:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            losses, seconds = list(state["losses"]), float(state["seconds"])
    start = len(losses)

    ids = dataset.image_ids()
    ids = ids[: settings.max_images] if settings.max_images else ids
    views = _Views(dataset, ids, views_transform(settings.method, settings.size, settings.local_views))
    drop_last = len(ids) > settings.batch_size  # BatchNorm needs two samples per batch
    steps_per_epoch = len(ids) // settings.batch_size if drop_last else 1
    total = steps_per_epoch * settings.epochs

    for epoch in range(start, settings.epochs):
        _seed_epoch(settings.seed, epoch)
        loader = torch.utils.data.DataLoader(
            views,
            batch_size=settings.batch_size,
            shuffle=True,
            drop_last=drop_last,
            num_workers=settings.workers,
            collate_fn=_collate,
        )
        model.train()
        t0 = time.perf_counter()
        total_loss, batches = 0.0, 0
        progress.start(f"backbone {settings.method} epoch {epoch + 1}/{settings.epochs}", len(ids))
        for i, batch in enumerate(loader):
            step = epoch * steps_per_epoch + i
            if len(batch) == 0 or batch[0].shape[0] < 2:
                continue
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(step, total, base_lr)
            loss = model.loss([v.to(device, non_blocking=True) for v in batch], step, total)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"backbone pretraining: non-finite loss at epoch {epoch + 1}; lower the learning rate (--lr)."
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            model.after_step(step, total)
            total_loss += float(loss.detach())
            batches += 1
            progress.advance(batch[0].shape[0], loss=float(loss.detach()))
        losses.append(total_loss / max(batches, 1))
        seconds += time.perf_counter() - t0
        state = {
            "settings": wanted,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "losses": losses,
            "seconds": seconds,
        }
        _atomic_save(state, spath)
        progress.end({"epoch": epoch + 1, "loss": round(losses[-1], 4)})

    # num_batches_tracked: BatchNorm bookkeeping that the detector's FrozenBatchNorm2d does not hold.
    body = {
        k: v.detach().cpu() for k, v in model.saved_body().state_dict().items() if not k.endswith("num_batches_tracked")
    }
    meta = {"settings": wanted, "losses": losses, "seconds": seconds, "dataset": getattr(dataset, "name", "")}
    _atomic_save({"state_dict": body, "joindet_ssl": meta}, out)
    spath.unlink(missing_ok=True)
    return SSLResult(str(out), False, start, losses, seconds)
