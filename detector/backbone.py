"""ResNet backbone with frozen BatchNorm, returning C3-C5 with their padding masks, and the sine
position encoding of DETR."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.ops import FrozenBatchNorm2d

#: ResNet stage names of C3, C4, C5 and their strides in pixels.
STAGES = ("layer2", "layer3", "layer4")
STRIDES = (8, 16, 32)


def downsample_mask(pad_mask: Tensor, size: tuple[int, int]) -> Tensor:
    """Padding mask bool [B, H, W] (True on padding) resized to ``size`` (h, w) by nearest."""
    return F.interpolate(pad_mask[:, None].float(), size=size, mode="nearest")[:, 0].bool()


class Backbone(nn.Module):
    """torchvision ResNet-18/34/50 with ``FrozenBatchNorm2d``; ``body`` keeps torchvision's key
    names (``conv1.weight``, ``layer1.0.bn1.running_mean``, ...) so its state_dict loads as is.

    ``forward(images [B, 3, H, W], pad_mask [B, H, W]) -> list of (feature [B, C_l, h_l, w_l],
    mask [B, h_l, w_l] bool True on padding)`` for C3, C4, C5 (strides 8, 16, 32 pixels).
    """

    def __init__(self, name: str, freeze: bool) -> None:
        super().__init__()
        body = getattr(torchvision.models, name)(weights=None, norm_layer=FrozenBatchNorm2d)
        del body.fc, body.avgpool  # classification head: never used, dropped from checkpoints
        self.body = body
        self.name = name
        self.frozen = freeze
        for pname, param in body.named_parameters():
            # Unfrozen like DETR: the stem and layer1 stay fixed, they generalise already.
            trainable = not freeze and pname.startswith(STAGES)
            param.requires_grad_(trainable)

    def stem_to(self, images: Tensor, last: str) -> list[Tensor]:
        """Run the ResNet up to stage ``last`` (e.g. "layer2"); returns the outputs of every stage
        from layer2 up to ``last`` included, each [B, C, h, w]."""
        b = self.body
        x = b.maxpool(b.relu(b.bn1(b.conv1(images))))
        x = b.layer1(x)
        outs = []
        for stage in STAGES:
            x = getattr(b, stage)(x)
            outs.append(x)
            if stage == last:
                break
        return outs

    def forward(self, images: Tensor, pad_mask: Tensor) -> list[tuple[Tensor, Tensor]]:
        feats = self.stem_to(images, STAGES[-1])
        return [(f, downsample_mask(pad_mask, tuple(f.shape[-2:]))) for f in feats]


def sine_position_encoding(mask: Tensor, d_model: int, temperature: float = 10000.0) -> Tensor:
    """DETR's normalised sine encoding of cell positions.

    Args:
        mask: bool [B, h, w], True on padding. Positions are counted over valid cells only and
            normalised to (0, 2*pi] by the valid extent, so a padded image encodes like an unpadded one.
        d_model: output channels (even); half encode y, half x.

    Returns:
        float [B, d_model, h, w].
    """
    half = d_model // 2
    valid = (~mask).float()
    y = valid.cumsum(1)
    x = valid.cumsum(2)
    eps, scale = 1e-6, 2 * math.pi
    y = (y - 0.5) / (y[:, -1:, :] + eps) * scale
    x = (x - 0.5) / (x[:, :, -1:] + eps) * scale
    dim_t = torch.arange(half, dtype=torch.float32, device=mask.device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / half)
    pos_x = x[..., None] / dim_t
    pos_y = y[..., None] / dim_t
    pos_x = torch.stack([pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()], dim=4).flatten(3)
    pos_y = torch.stack([pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()], dim=4).flatten(3)
    return torch.cat([pos_y, pos_x], dim=3).permute(0, 3, 1, 2)
