"""Hungarian matching of queries to target boxes (DETR conventions)."""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn
from torchvision.ops import box_convert, generalized_box_iou

from joindet.detector.presets import DetectorConfig


def class_cost(logits: Tensor, labels: Tensor, loss: str, alpha: float, gamma: float) -> Tensor:
    """Cost of giving each prediction each target's label.

    Args:
        logits: [N, C] (index 0 background); labels: int64 [T].
        loss: "focal" (focal-loss difference between predicting the label and not) or "ce"
            (minus the probability of the label).

    Returns:
        [N, T].
    """
    prob = logits.softmax(-1)[:, labels]
    if loss == "ce":
        return -prob
    eps = 1e-8
    pos = alpha * (1 - prob) ** gamma * (-(prob + eps).log())
    neg = (1 - alpha) * prob**gamma * (-(1 - prob + eps).log())
    return pos - neg


class HungarianMatcher(nn.Module):
    """One-to-one assignment minimising cost_class * C_cls + cost_bbox * L1 + cost_giou * (-GIoU).

    ``forward(outputs, targets) -> list of (pred_idx int64 [k], tgt_idx int64 [k])``, one per image,
    k = min(Q, n_i), ``pred_idx`` sorted ascending. ``outputs``: ``pred_logits [B, Q, C]``,
    ``pred_boxes [B, Q, 4]`` normalised cxcywh. ``targets``: list of B dicts with ``labels`` int64
    [n_i] and ``boxes`` [n_i, 4] normalised cxcywh. The cost is computed for the whole batch at once
    ([B*Q, sum n_i]) and split per image for ``scipy.optimize.linear_sum_assignment``.
    """

    def __init__(
        self,
        cost_class: float = 2.0,
        cost_bbox: float = 5.0,
        cost_giou: float = 2.0,
        loss: str = "focal",
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
    ) -> None:
        super().__init__()
        self.cost_class, self.cost_bbox, self.cost_giou = cost_class, cost_bbox, cost_giou
        self.loss, self.alpha, self.gamma = loss, focal_alpha, focal_gamma

    def cost_matrix(self, outputs: dict, targets: list[dict]) -> Tensor:
        """Batched cost [B, Q, sum n_i] (float32, on the outputs' device)."""
        b, q = outputs["pred_logits"].shape[:2]
        logits = outputs["pred_logits"].flatten(0, 1).float()
        boxes = outputs["pred_boxes"].flatten(0, 1).float()
        labels = torch.cat([t["labels"] for t in targets]).to(logits.device, torch.long)
        tboxes = torch.cat([t["boxes"] for t in targets]).to(boxes.device, torch.float32)
        c_cls = class_cost(logits, labels, self.loss, self.alpha, self.gamma)
        c_l1 = torch.cdist(boxes, tboxes, p=1)
        c_giou = -generalized_box_iou(box_convert(boxes, "cxcywh", "xyxy"), box_convert(tboxes, "cxcywh", "xyxy"))
        cost = self.cost_bbox * c_l1 + self.cost_class * c_cls + self.cost_giou * c_giou
        return cost.view(b, q, -1)

    @torch.no_grad()
    def forward(self, outputs: dict, targets: list[dict]) -> list[tuple[Tensor, Tensor]]:
        sizes = [len(t["boxes"]) for t in targets]
        empty = torch.empty(0, dtype=torch.long)
        if sum(sizes) == 0:
            return [(empty, empty) for _ in sizes]
        cost = self.cost_matrix(outputs, targets).cpu()
        if not torch.isfinite(cost).all():
            raise ValueError(
                "matching cost has NaN/inf entries: predictions or target boxes are not finite "
                "(check the targets' 'boxes' are normalised cxcywh with positive sizes)."
            )
        result = []
        for i, block in enumerate(cost.split(sizes, -1)):
            if sizes[i] == 0:
                result.append((empty, empty))
                continue
            rows, cols = linear_sum_assignment(block[i].numpy())
            result.append((torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)))
        return result


def build_matcher(cfg: DetectorConfig) -> HungarianMatcher:
    return HungarianMatcher(
        cfg.set_cost_class, cfg.set_cost_bbox, cfg.set_cost_giou, cfg.loss, cfg.focal_alpha, cfg.focal_gamma
    )
