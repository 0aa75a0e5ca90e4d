"""Optimiser and learning-rate schedule of the detector (Deformable DETR recipe)."""

from __future__ import annotations

import torch
from torch import nn

from joindet.detector.presets import DetectorConfig

#: parameters trained at ``lr * lr_linear_proj_mult``: where deformable attention samples.
_SLOW = ("sampling_offsets", "reference_points")


def build_optimizer(model: nn.Module, cfg: DetectorConfig) -> torch.optim.AdamW:
    """AdamW with three groups: backbone (``lr_backbone``), sampling offsets and reference points
    (``lr * lr_linear_proj_mult``), everything else (``lr``). Frozen parameters are left out."""
    groups: dict[str, list[nn.Parameter]] = {"backbone": [], "slow": [], "main": []}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name.startswith("backbone."):
            groups["backbone"].append(param)
        elif any(key in name for key in _SLOW):
            groups["slow"].append(param)
        else:
            groups["main"].append(param)
    lrs = {"backbone": cfg.lr_backbone, "slow": cfg.lr * cfg.lr_linear_proj_mult, "main": cfg.lr}
    param_groups = [{"params": ps, "lr": lrs[name], "name": name} for name, ps in groups.items() if ps]
    return torch.optim.AdamW(param_groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def build_lr_scheduler(optimizer: torch.optim.Optimizer, cfg: DetectorConfig) -> torch.optim.lr_scheduler.StepLR:
    """Divide every learning rate by 10 at epoch ``lr_drop_epoch`` (call ``step()`` once per epoch)."""
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.lr_drop_epoch, gamma=0.1)
