"""Turning raw model outputs into ranked, class-agnostic proposals."""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import box_convert


@torch.no_grad()
def postprocess(outputs: dict, top_k: int = 100) -> list[dict[str, Tensor]]:
    """Top-k foreground proposals of every image.

    Args:
        outputs: the model's dict; uses ``pred_logits [B, Q, C]`` (index 0 background) and
            ``pred_boxes [B, Q, 4]`` normalised cxcywh of the valid image.
        top_k: proposals kept per image (at most Q).

    Returns:
        One dict per image: ``scores [k]`` foreground probability ``1 - p(background)``, sorted
        descending; ``boxes [k, 4]`` normalised xyxy clipped to [0, 1]; ``labels [k]`` int64, the
        most likely non-background class (always 1 in pretraining).
    """
    prob = outputs["pred_logits"].float().softmax(-1)
    fg = 1.0 - prob[..., 0]
    labels = prob[..., 1:].argmax(-1) + 1
    boxes = box_convert(outputs["pred_boxes"].float(), "cxcywh", "xyxy").clamp(0.0, 1.0)
    k = min(top_k, fg.shape[1])
    scores, idx = fg.topk(k, dim=1)
    return [{"scores": scores[i], "boxes": boxes[i, idx[i]], "labels": labels[i, idx[i]]} for i in range(fg.shape[0])]
