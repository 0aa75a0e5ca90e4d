"""Embedding targets of prior boxes: what f_emb learns to predict for each matched query."""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import box_convert, roi_align

from joindet.detector.presets import DetectorConfig


def boxes_to_pixels(boxes_list: list[Tensor], pad_mask: Tensor) -> list[Tensor]:
    """Normalised cxcywh boxes of the valid image -> pixel xyxy of the padded batch.

    ``boxes_list``: per image [n, 4] fractions of the valid (unpadded) area; ``pad_mask``
    [B, H, W] True on padding (valid area is the top-left rectangle). Returns per image [n, 4]."""
    valid_h = (~pad_mask[:, :, 0]).sum(1).float()
    valid_w = (~pad_mask[:, 0, :]).sum(1).float()
    out = []
    for i, boxes in enumerate(boxes_list):
        xyxy = box_convert(boxes.float().to(pad_mask.device), "cxcywh", "xyxy")
        scale = torch.stack([valid_w[i], valid_h[i], valid_w[i], valid_h[i]])
        out.append(xyxy * scale)
    return out


class EmbeddingTarget:
    """``target(model, images [B,3,H,W], pad_mask [B,H,W], boxes_list, c5=None) -> list of [n_i, E]``.

    ``mode="crop"`` (DETReg): each box is cut out of the image and resized to ``crop_size`` pixels
    square (bilinear, via roi_align on the image), run through the model's frozen backbone up to
    layer2 and mean-pooled: E = C3 channels (512 for ResNet-50). ``mode="roi_align"``: the box is
    pooled (7x7 roi_align, then mean) from the model's frozen C5 features of the whole image: no
    forward beyond the backbone, E = C5 channels. Always computed without gradients, in float32.

    ``c5``: the C5 [B, C5, h5, w5] the model's forward pass already computed on these images
    (``outputs["backbone_c5"]``); roi_align mode then pools it instead of running the backbone
    again (one backbone pass per training step). Without it, the backbone runs here. Under CUDA
    AMP the forward's C5 is float16, so targets differ from a float32 backbone pass by its rounding.
    """

    def __init__(self, mode: str, crop_size: int = 128, chunk: int = 64) -> None:
        self.mode, self.crop_size, self.chunk = mode, crop_size, chunk

    @torch.no_grad()
    def __call__(
        self, model, images: Tensor, pad_mask: Tensor, boxes_list: list[Tensor], c5: Tensor | None = None
    ) -> list[Tensor]:
        counts = [len(b) for b in boxes_list]
        rois = boxes_to_pixels(boxes_list, pad_mask)
        backbone = model.backbone
        if self.mode == "roi_align":
            if c5 is None:
                c5 = model.backbone_features(images, pad_mask)[0].permute(0, 3, 1, 2)
            feat = c5.detach().float()
            scale = feat.shape[-1] / images.shape[-1]
            pooled = roi_align(feat, [r.to(feat.dtype) for r in rois], 7, scale, 2, aligned=True)
            embs = pooled.mean((2, 3))
        else:
            crops = roi_align(images, [r.to(images.dtype) for r in rois], self.crop_size, 1.0, 2, aligned=True)
            parts = [backbone.stem_to(c, "layer2")[-1].mean((2, 3)) for c in crops.split(self.chunk)]
            embs = torch.cat(parts) if parts else images.new_zeros(0, backbone.body.layer2[-1].conv1.in_channels)
        return list(embs.split(counts))


def build_embedding_target(cfg: DetectorConfig) -> EmbeddingTarget:
    return EmbeddingTarget(cfg.emb_target, cfg.crop_size)
