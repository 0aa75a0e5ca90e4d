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


@torch.no_grad()
def detections(outputs: dict, top_k: int = 100) -> list[dict[str, Tensor]]:
    """Top-k (query, class) pairs of every image, as DETR-family detectors are scored on COCO.

    Every non-background class of every query is a candidate: the scores ``softmax(logits)[..., 1:]``
    ``[B, Q, C-1]`` are flattened to ``[B, Q * (C-1)]`` and the ``top_k`` best kept, so one query
    may give several detections with different labels (as Deformable DETR's / DETReg's
    post-processing does).

    Returns one dict per image: ``scores [k]`` descending, ``labels [k]`` int64 in 1..C-1,
    ``boxes [k, 4]`` normalised xyxy clipped to [0, 1] (the box of the pair's query), ``queries [k]``.
    """
    prob = outputs["pred_logits"].float().softmax(-1)[..., 1:]
    b, q, c = prob.shape
    boxes = box_convert(outputs["pred_boxes"].float(), "cxcywh", "xyxy").clamp(0.0, 1.0)
    k = min(top_k, q * c)
    scores, idx = prob.reshape(b, q * c).topk(k, dim=1)
    query, label = idx // c, idx % c + 1
    return [
        {"scores": scores[i], "labels": label[i], "boxes": boxes[i, query[i]], "queries": query[i]} for i in range(b)
    ]
