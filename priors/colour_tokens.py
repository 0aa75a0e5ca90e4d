"""Colour/texture tokens: a weight-free feature map for the initial priors R_0.

The method computes R_0 on the features of a pretrained frozen backbone (SwAV ResNet-50 in the
paper). Where no such weights exist (the CPU demo and the tests, which may not download
anything), a randomly initialised backbone gives tokens that are almost all alike, and the
normalized cut finds nothing. Colour/texture tokens are the classical fallback, in the spirit of
the selective-search priors of DETReg: each cell of a stride-``s`` grid is described by the mean
and the standard deviation of its pixels per channel, centred on the image's mean token so that
cosine similarity compares cells against the image's average look. Selected by
``priors.init_features=colour``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def colour_tokens(images: Tensor, pad_mask: Tensor, stride: int = 8) -> tuple[Tensor, Tensor]:
    """Per-cell colour statistics of a padded image batch.

    Args:
        images: float [B, 3, H, W] (any normalisation; ImageNet-normalised RGB in the pipeline).
        pad_mask: bool [B, H, W], True on padding.
        stride: cell side in pixels.

    Returns:
        feat: float [B, h, w, 6] (per-channel mean and std of each cell, minus the image's mean
        token over valid cells; 0 on invalid cells), h = ceil(H / stride), w = ceil(W / stride).
        valid: bool [B, h, w], True on cells whose top-left pixel lies inside the image.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [B, 3, H, W], got {list(images.shape)}")
    real = (~pad_mask).to(images.dtype)[:, None]
    x = images.float() * real
    count = F.avg_pool2d(real.float(), stride, stride, ceil_mode=True).clamp_min(1e-6)
    mean = F.avg_pool2d(x, stride, stride, ceil_mode=True) / count
    sq = F.avg_pool2d(x * x, stride, stride, ceil_mode=True) / count
    std = (sq - mean * mean).clamp_min(0).sqrt()
    feat = torch.cat([mean, std], 1).permute(0, 2, 3, 1)  # [B, h, w, 6]
    valid = ~pad_mask[:, ::stride, ::stride]
    valid = valid[:, : feat.shape[1], : feat.shape[2]]
    return centre_tokens(feat, valid), valid


def centre_tokens(features: Tensor, valid: Tensor | None = None) -> Tensor:
    """Subtract each map's mean valid token: float [B, h, w, C] -> same shape, 0 on invalid cells.

    Tokens that share a large common component (ReLU features, LayerNorm'd transformer outputs)
    all have cosine similarity above tau, so the affinity is all ones and the normalized cut is
    degenerate; centred tokens compare each cell against the map's average instead.
    """
    if valid is None:
        valid = torch.ones(features.shape[:3], dtype=torch.bool, device=features.device)
    vf = valid[..., None].to(features.dtype)
    mean = (features * vf).sum((1, 2), keepdim=True) / vf.sum((1, 2), keepdim=True).clamp_min(1)
    return (features - mean) * vf
