"""Detector configuration: one dataclass and the named presets.

Only the ``build_*`` factories read a :class:`DetectorConfig`; everything else receives the
objects they build.

Class convention (pretraining and finetuning alike): ``pred_logits`` is ``[B, Q, num_classes]``
and index 0 is always background / no-object. Pretraining uses ``num_classes=2`` (0 background,
1 foreground); finetuning on C categories uses ``num_classes = C + 1`` with labels ``1..C``.
Probabilities are a softmax over the last axis; the foreground score of a query is
``1 - softmax(logits)[..., 0]``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

#: channel count of each ResNet stage output (layer2, layer3, layer4 = C3, C4, C5).
RESNET_CHANNELS: dict[str, tuple[int, int, int]] = {
    "resnet18": (128, 256, 512),
    "resnet34": (128, 256, 512),
    "resnet50": (512, 1024, 2048),
}

EMB_TARGETS = ("crop", "roi_align")
LOSSES = ("focal", "ce")


@dataclass(frozen=True)
class DetectorConfig:
    """Every setting of the detector, its losses, its optimiser and its input sizes.

    Sizes are pixels; ``train_size`` is the list of shorter-side sizes the training transform
    samples from, ``max_size`` caps the longer side (both read by the data transforms).
    """

    # backbone
    backbone: str = "resnet50"
    backbone_weights: str | None = None  # local file; None = random init (with a warning)
    freeze_backbone: bool = True  # the paper freezes the whole backbone
    # Self-supervised pretraining of the backbone on the run's own images before init, when
    # backbone_weights is not given (pipeline/ssl): method (simclr | dino), epochs, crop side in pixels.
    backbone_pretrain: bool = False
    backbone_pretrain_method: str = "simclr"
    backbone_pretrain_epochs: int = 20
    backbone_pretrain_size: int = 96
    # transformer
    num_feature_levels: int = 4
    d_model: int = 256
    enc_layers: int = 6
    dec_layers: int = 6
    n_heads: int = 8
    n_points: int = 4
    dim_feedforward: int = 1024
    dropout: float = 0.1
    num_queries: int = 300
    # Feature level whose encoder output is mined (``enc_features``), an index into the levels
    # (0 the finest; negative counts from the coarsest). The paper mines C5 (stride 32): with 4
    # levels (C3, C4, C5, extra stride 64) that is index 2, see ``mined_level``. Small images want
    # a finer grid (the tiny preset mines C3). The default, -1, is the coarsest level.
    attention_level: int = -1
    num_classes: int = 2
    head_hidden: int = 256  # hidden width of the f_box / f_emb MLPs (2 hidden layers)
    # embedding targets
    emb_target: str = "crop"
    crop_size: int = 128  # pixels, side of the square crops of emb_target="crop"
    # losses
    loss: str = "focal"
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    eos_coef: float = 0.1  # weight of the no-object class in cross-entropy
    cls_loss_coef: float = 2.0
    bbox_loss_coef: float = 5.0
    giou_loss_coef: float = 2.0
    emb_loss_coef: float = 1.0
    aux_loss: bool = True
    # matcher costs
    set_cost_class: float = 2.0
    set_cost_bbox: float = 5.0
    set_cost_giou: float = 2.0
    # optimiser
    lr: float = 2e-4
    lr_backbone: float = 2e-5  # used only when the backbone is not frozen
    lr_linear_proj_mult: float = 0.1
    weight_decay: float = 1e-4
    clip_max_norm: float = 0.1
    lr_drop_epoch: int = 40
    # image sizes (pixels)
    train_size: tuple[int, ...] = (480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800)
    max_size: int = 1333
    test_size: int = 800

    def __post_init__(self) -> None:
        if self.backbone not in RESNET_CHANNELS:
            raise ValueError(
                f"DetectorConfig.backbone={self.backbone!r} is not supported; use one of {sorted(RESNET_CHANNELS)}."
            )
        if self.emb_target not in EMB_TARGETS:
            raise ValueError(
                f"DetectorConfig.emb_target={self.emb_target!r} is not supported; use one of {EMB_TARGETS}."
            )
        if self.loss not in LOSSES:
            raise ValueError(f"DetectorConfig.loss={self.loss!r} is not supported; use one of {LOSSES}.")
        if not 1 <= self.num_feature_levels <= 4:
            raise ValueError(f"DetectorConfig.num_feature_levels={self.num_feature_levels} must be between 1 and 4.")
        if not -self.num_feature_levels <= self.attention_level < self.num_feature_levels:
            raise ValueError(
                f"DetectorConfig.attention_level={self.attention_level} must index one of the "
                f"{self.num_feature_levels} feature levels (-1 = coarsest, 0 = finest)."
            )
        if self.d_model % self.n_heads:
            raise ValueError(f"DetectorConfig.d_model={self.d_model} must be divisible by n_heads={self.n_heads}.")
        if self.num_classes < 2:
            raise ValueError(f"DetectorConfig.num_classes={self.num_classes} must be >= 2 (index 0 is background).")

    @property
    def backbone_channels(self) -> tuple[int, int, int]:
        """Channels of C3, C4, C5 of the configured ResNet."""
        return RESNET_CHANNELS[self.backbone]

    @property
    def emb_dim(self) -> int:
        """Embedding size E of ``pred_embs``: derived from ``emb_target`` and the backbone.

        ``crop``: the backbone's layer2 (C3) mean-pooled, 512 for ResNet-50 (DETReg's choice).
        ``roi_align``: the backbone's C5 pooled inside the box, 512 for ResNet-18/34, 2048 for 50.
        """
        c3, _, c5 = self.backbone_channels
        return c3 if self.emb_target == "crop" else c5

    def with_(self, **changes: object) -> DetectorConfig:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)


#: Stride in pixels of each backbone level the transformer reads (C3, C4, C5); levels beyond
#: three are the extra stride-2 convolutions of Deformable DETR (64, 128).
LEVEL_STRIDES = (8, 16, 32)


def level_strides(num_feature_levels: int) -> tuple[int, ...]:
    """Stride (pixels) of each transformer feature level, finest first.

    1 level: C5 (32); 2: C4, C5; 3: C3-C5; 4: C3-C5 plus the extra stride-64 level.
    """
    n = num_feature_levels
    used = LEVEL_STRIDES[3 - min(n, 3) :]
    return tuple(used) + tuple(LEVEL_STRIDES[-1] * 2 ** (k + 1) for k in range(n - len(used)))


def mined_level(cfg: DetectorConfig) -> dict[str, object]:
    """The encoder level mined for eigen attention: ``{"index", "name", "stride"}``.

    ``index`` is ``attention_level`` made non-negative; ``name`` is C3/C4/C5 or ``extra-64`` /
    ``extra-128`` for the extra stride-2 levels; ``stride`` in pixels.
    """
    strides = level_strides(cfg.num_feature_levels)
    index = cfg.attention_level % cfg.num_feature_levels
    stride = strides[index]
    name = {8: "C3", 16: "C4", 32: "C5"}.get(stride, f"extra-{stride}")
    return {"index": index, "name": name, "stride": stride}


# The paper: Deformable DETR, 4 levels (C3, C4, C5, extra stride 64), eigen attention of C5
# (attention_level=2, stride 32; the paper computes the normalised cut on C5's tokens).
_PAPER = DetectorConfig(attention_level=2)

PRESETS: dict[str, DetectorConfig] = {
    # Fast on 2 CPU cores: used by tests and the CPU demo.
    # Three levels (C3-C5) and mining on the stride-8 one: at 160 px the C5 grid is 5 x 5, too
    # coarse to outline objects or to learn boxes from (docs/ablations.md, "CPU-scale preset").
    # 100 queries for the AR@100 of proposals; lr 4e-4 suits the small transformer. The box and
    # embedding heads are d_model wide, as in Deformable DETR, so a tiny run exports to transformers.
    "tiny": DetectorConfig(
        backbone="resnet18",
        num_feature_levels=3,
        attention_level=0,
        d_model=64,
        head_hidden=64,
        enc_layers=2,
        dec_layers=2,
        n_heads=4,
        n_points=4,
        dim_feedforward=256,
        dropout=0.0,
        num_queries=100,
        emb_target="roi_align",
        lr=4e-4,
        lr_backbone=1e-5,
        clip_max_norm=0.1,
        lr_drop_epoch=40,
        train_size=(128, 144, 160),
        max_size=192,
        test_size=160,
    ),
    "paper": _PAPER,
    # The paper's ablations: Deformable DETR single-scale (C5 only).
    "paper-single-scale": replace(_PAPER, num_feature_levels=1, attention_level=0),
}


def get_preset(name: str) -> DetectorConfig:
    """The named preset; raises ``KeyError`` listing the known names."""
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown detector preset {name!r}; choose one of {', '.join(sorted(PRESETS))}.") from None


__all__ = [
    "DetectorConfig",
    "PRESETS",
    "get_preset",
    "RESNET_CHANNELS",
    "EMB_TARGETS",
    "LOSSES",
    "LEVEL_STRIDES",
    "level_strides",
    "mined_level",
]
