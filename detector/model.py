"""JoinDetModel: Deformable DETR with the JoinDet heads f_cls, f_box, f_emb."""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from joindet.detector.backbone import Backbone, downsample_mask, sine_position_encoding
from joindet.detector.presets import DetectorConfig
from joindet.detector.transformer import DeformableTransformer
from joindet.detector.weights import load_backbone_weights


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them: in -> hidden -> ... -> out."""

    def __init__(self, d_in: int, hidden: int, d_out: int, num_layers: int) -> None:
        super().__init__()
        dims = [d_in] + [hidden] * (num_layers - 1) + [d_out]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


def inverse_sigmoid(x: Tensor, eps: float = 1e-5) -> Tensor:
    x = x.clamp(eps, 1 - eps)
    return torch.log(x / (1 - x))


class JoinDetModel(nn.Module):
    """Backbone -> input projections -> deformable encoder/decoder -> shared heads per layer.

    ``forward(images [B, 3, H, W] float ImageNet-normalised, pad_mask [B, H, W] bool True on
    padding) -> dict``:

    - ``pred_logits`` [B, Q, C]: C = num_classes, index 0 background (softmax over C).
    - ``pred_boxes`` [B, Q, 4]: sigmoid, normalised cxcywh relative to the valid (unpadded) image.
    - ``pred_embs`` [B, Q, E]: predicted embedding of each query's box.
    - ``aux_outputs``: list (one per earlier decoder layer) of dicts with the three keys above.
    - ``enc_features`` [B, h, w, d] and ``enc_valid`` [B, h, w] bool (True on real cells): encoder
      output of level ``cfg.attention_level`` (default the coarsest), for the eigen attention of
      the mining stage.
    - ``backbone_c5`` [B, C5, h5, w5]: the backbone's C5 (stride 32 pixels) that this pass computed,
      detached: the embedding targets pool it, so a training step runs the backbone once.
    """

    def __init__(self, cfg: DetectorConfig) -> None:
        super().__init__()
        d, n_levels = cfg.d_model, cfg.num_feature_levels
        self.attention_level = cfg.attention_level
        self.backbone = Backbone(cfg.backbone, freeze=cfg.freeze_backbone)
        channels = cfg.backbone_channels
        self.n_backbone_levels = min(n_levels, 3)
        used = channels[3 - self.n_backbone_levels :]
        groups = math.gcd(32, d)
        projections = [nn.Sequential(nn.Conv2d(c, d, 1), nn.GroupNorm(groups, d)) for c in used]
        in_ch = channels[-1]
        for _ in range(n_levels - self.n_backbone_levels):  # extra coarser levels: stride-2 convs
            projections.append(nn.Sequential(nn.Conv2d(in_ch, d, 3, stride=2, padding=1), nn.GroupNorm(groups, d)))
            in_ch = d
        self.input_proj = nn.ModuleList(projections)
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.zeros_(proj[0].bias)

        self.transformer = DeformableTransformer(
            d,
            cfg.n_heads,
            cfg.enc_layers,
            cfg.dec_layers,
            cfg.dim_feedforward,
            cfg.dropout,
            n_levels,
            cfg.n_points,
            cfg.num_queries,
        )
        self.class_embed = nn.Linear(d, cfg.num_classes)  # f_cls
        self.bbox_embed = MLP(d, cfg.head_hidden, 4, 3)  # f_box
        self.emb_embed = MLP(d, cfg.head_hidden, cfg.emb_dim, 3)  # f_emb
        # Foreground starts rare (p = 0.01) so the focal loss is not swamped at the start.
        nn.init.zeros_(self.class_embed.bias)
        with torch.no_grad():
            self.class_embed.bias[1:] = -math.log((1 - 0.01) / 0.01)
        nn.init.zeros_(self.bbox_embed.layers[-1].weight)
        nn.init.zeros_(self.bbox_embed.layers[-1].bias)
        with torch.no_grad():
            self.bbox_embed.layers[-1].bias[2:] = -2.0  # boxes start small around their reference

    def backbone_features(self, images: Tensor, pad_mask: Tensor) -> tuple[Tensor, Tensor]:
        """Frozen backbone C5: (feat [B, h, w, C5] float, valid [B, h, w] bool True on real cells).
        Stride 32 pixels; the initial region priors R_0 are computed on it."""
        c5 = self.backbone.stem_to(images, "layer4")[-1]
        mask = downsample_mask(pad_mask, tuple(c5.shape[-2:]))
        return c5.permute(0, 2, 3, 1), ~mask

    def _levels(self, images: Tensor, pad_mask: Tensor) -> tuple[list[Tensor], list[Tensor], Tensor]:
        """(sources per level [B, d, h_l, w_l], padding masks per level, backbone C5 [B, C5, h5, w5])."""
        all_feats = self.backbone(images, pad_mask)
        feats = all_feats[3 - self.n_backbone_levels :]
        srcs = [proj(f) for proj, (f, _) in zip(self.input_proj, feats)]
        masks = [m for _, m in feats]
        last = feats[-1][0]
        for proj in self.input_proj[len(feats) :]:
            src = proj(last if len(srcs) == len(feats) else srcs[-1])
            srcs.append(src)
            masks.append(downsample_mask(pad_mask, tuple(src.shape[-2:])))
        return srcs, masks, all_feats[-1][0]

    def forward(self, images: Tensor, pad_mask: Tensor) -> dict:
        srcs, masks, c5 = self._levels(images, pad_mask)
        pos = [sine_position_encoding(m, src.shape[1]).to(src.dtype) for src, m in zip(srcs, masks)]
        hs, reference, memory, shapes, _ = self.transformer(srcs, masks, pos)

        logits = self.class_embed(hs)  # [n_dec, B, Q, C]
        delta = self.bbox_embed(hs)
        centre = delta[..., :2] + inverse_sigmoid(reference)[None]
        boxes = torch.cat([centre, delta[..., 2:]], -1).sigmoid()
        embs = self.emb_embed(hs)
        layers = [{"pred_logits": logits[i], "pred_boxes": boxes[i], "pred_embs": embs[i]} for i in range(hs.shape[0])]
        out = dict(layers[-1])
        out["aux_outputs"] = layers[:-1]
        level = self.attention_level % len(masks)
        sizes = (shapes[:, 0] * shapes[:, 1]).tolist()
        start = sum(sizes[:level])
        h, w = shapes[level].tolist()
        out["enc_features"] = memory[:, start : start + h * w].reshape(memory.shape[0], h, w, -1)
        out["enc_valid"] = ~masks[level]
        out["backbone_c5"] = c5.detach()
        return out


class RandomBackboneWarning(UserWarning):
    """The backbone is randomly initialised (no ``backbone_weights``) and nothing loads weights
    into it afterwards. Raised from one place (``random_backbone_warning``), so Python shows it once
    per process; the command line prints it as one line without a source line."""


def random_backbone_warning(cfg: DetectorConfig) -> None:
    """``RandomBackboneWarning`` when ``cfg.backbone_weights`` is not set. The pipeline calls it
    once per run (when version 0 is made, or a backbone-only finetune starts), in the process
    that drives the run, never in Dask workers or torchrun ranks."""
    if not cfg.backbone_weights:
        warnings.warn(
            f"DetectorConfig.backbone_weights is not set: the {cfg.backbone} backbone is randomly "
            "initialised, so region priors will be poor; set it to a SwAV/DINO/torchvision file "
            "(--set model.backbone_weights=FILE).",
            RandomBackboneWarning,
            stacklevel=1,
        )


def build_model(cfg: DetectorConfig, warn_random_backbone: bool = True) -> JoinDetModel:
    """The detector for ``cfg``; loads ``cfg.backbone_weights`` when set, else warns
    (``RandomBackboneWarning``) unless ``warn_random_backbone`` is False: the caller loads every
    weight from a checkpoint next."""
    model = JoinDetModel(cfg)
    if cfg.backbone_weights:
        load_backbone_weights(model, cfg.backbone_weights)
    elif warn_random_backbone:
        random_backbone_warning(cfg)
    return model
