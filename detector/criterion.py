"""Set prediction loss: classification (focal or cross-entropy), L1 + GIoU box losses and the
embedding L1 loss, on the last decoder layer and (except embeddings) every auxiliary layer."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_convert, generalized_box_iou

from joindet.detector.matcher import HungarianMatcher, build_matcher
from joindet.detector.presets import DetectorConfig


def softmax_focal_loss(logits: Tensor, target: Tensor, alpha: float, gamma: float) -> Tensor:
    """Focal loss on the softmax probability of the target class, summed over queries.

    logits [N, C] (index 0 background), target int64 [N]. The weight is ``alpha`` for foreground
    targets and ``1 - alpha`` for background. With C = 2 this is exactly the binary focal loss on
    the foreground probability ``softmax(logits)[:, 1]``.
    """
    logp = logits.log_softmax(-1).gather(1, target[:, None])[:, 0]
    weight = torch.where(target > 0, alpha, 1 - alpha).to(logp.dtype)
    return (-weight * (1 - logp.exp()) ** gamma * logp).sum()


def num_boxes_global(targets: list[dict], device: torch.device) -> float:
    """Target boxes in the batch, summed over all processes when torch.distributed runs, >= 1."""
    n = torch.tensor([float(sum(len(t["boxes"]) for t in targets))], device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(n)
        n = n / dist.get_world_size()
    return max(n.item(), 1.0)


class SetCriterion(nn.Module):
    """``criterion(outputs, targets) -> dict[str, Tensor]`` of unweighted scalar losses.

    Keys: ``loss_focal`` (or ``loss_ce``), ``loss_bbox``, ``loss_giou``, ``loss_emb`` (only when
    every target has ``embs``), and for aux layer i the same keys with suffix ``_i`` (no
    embedding loss). ``weight_dict`` maps each key to its weight; the total is
    ``sum(weight_dict[k] * losses[k])``. Box losses are sums over matched pairs divided by the
    number of target boxes; classification sums over all queries, divided by the same number
    (focal) or averaged over queries with no-object weight ``eos_coef`` (ce); the embedding loss
    is the L1 distance averaged over the E dimensions, summed over boxes, divided likewise.
    """

    def __init__(self, cfg: DetectorConfig, matcher: HungarianMatcher) -> None:
        super().__init__()
        self.matcher = matcher
        self.loss_type = cfg.loss
        self.alpha, self.gamma = cfg.focal_alpha, cfg.focal_gamma
        self.cls_key = "loss_focal" if cfg.loss == "focal" else "loss_ce"
        weight = torch.ones(cfg.num_classes)
        weight[0] = cfg.eos_coef
        self.register_buffer("empty_weight", weight)
        base = {self.cls_key: cfg.cls_loss_coef, "loss_bbox": cfg.bbox_loss_coef, "loss_giou": cfg.giou_loss_coef}
        self.weight_dict = dict(base, loss_emb=cfg.emb_loss_coef)
        if cfg.aux_loss:
            for i in range(cfg.dec_layers - 1):
                self.weight_dict.update({f"{k}_{i}": v for k, v in base.items()})

    def _layer_losses(self, out: dict, targets: list[dict], num_boxes: float, with_emb: bool) -> dict:
        indices = self.matcher(out, targets)
        logits = out["pred_logits"]
        device = logits.device
        batch = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)]).to(device)
        src = torch.cat([s for s, _ in indices]).to(device)
        classes = torch.zeros(logits.shape[:2], dtype=torch.long, device=device)
        classes[batch, src] = torch.cat([t["labels"][j] for t, (_, j) in zip(targets, indices)]).to(device)

        losses = {}
        if self.loss_type == "focal":
            flat = logits.flatten(0, 1).float()
            losses[self.cls_key] = softmax_focal_loss(flat, classes.flatten(), self.alpha, self.gamma) / num_boxes
        else:
            losses[self.cls_key] = F.cross_entropy(logits.transpose(1, 2).float(), classes, self.empty_weight)

        pred = out["pred_boxes"][batch, src].float()
        tgt = torch.cat([t["boxes"][j] for t, (_, j) in zip(targets, indices)]).to(device, torch.float32)
        losses["loss_bbox"] = F.l1_loss(pred, tgt, reduction="sum") / num_boxes
        giou = generalized_box_iou(box_convert(pred, "cxcywh", "xyxy"), box_convert(tgt, "cxcywh", "xyxy"))
        losses["loss_giou"] = (1 - giou.diagonal()).sum() / num_boxes
        if with_emb:
            pemb = out["pred_embs"][batch, src].float()
            temb = torch.cat([t["embs"][j] for t, (_, j) in zip(targets, indices)]).to(device, torch.float32)
            if pemb.shape[-1] != temb.shape[-1]:
                raise ValueError(
                    f"target 'embs' have {temb.shape[-1]} dimensions but the model predicts "
                    f"{pemb.shape[-1]}; compute them with build_embedding_target(cfg) of the same config."
                )
            losses["loss_emb"] = F.l1_loss(pemb, temb, reduction="none").mean(-1).sum() / num_boxes
        return losses

    def forward(self, outputs: dict, targets: list[dict]) -> dict[str, Tensor]:
        if len(targets) != outputs["pred_logits"].shape[0]:
            raise ValueError(
                f"criterion got {len(targets)} targets for a batch of {outputs['pred_logits'].shape[0]} images; "
                "pass one target dict per image."
            )
        num_boxes = num_boxes_global(targets, outputs["pred_logits"].device)
        with_emb = all("embs" in t for t in targets)
        losses = self._layer_losses(outputs, targets, num_boxes, with_emb)
        for i, aux in enumerate(outputs.get("aux_outputs", [])):
            if f"loss_bbox_{i}" in self.weight_dict:
                layer = self._layer_losses(aux, targets, num_boxes, with_emb=False)
                losses.update({f"{k}_{i}": v for k, v in layer.items()})
        return losses

    def total(self, losses: dict[str, Tensor]) -> Tensor:
        """Weighted sum of the losses present in ``losses``."""
        return sum(self.weight_dict[k] * v for k, v in losses.items() if k in self.weight_dict)


def build_criterion(cfg: DetectorConfig) -> SetCriterion:
    return SetCriterion(cfg, build_matcher(cfg))
