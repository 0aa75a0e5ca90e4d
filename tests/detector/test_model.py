"""JoinDetModel outputs, presets, optimiser groups and post-processing."""

from __future__ import annotations

import warnings

import pytest
import torch

from joindet.detector import (
    PRESETS,
    DetectorConfig,
    build_lr_scheduler,
    build_model,
    build_optimizer,
    get_preset,
    postprocess,
)
from joindet.detector.backbone import sine_position_encoding


def _model(cfg: DetectorConfig):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_model(cfg)


def _batch(h: int = 160, w: int = 128, pad_rows: int = 64):
    torch.manual_seed(0)
    images = torch.randn(2, 3, h, w)
    pad = torch.zeros(2, h, w, dtype=torch.bool)
    pad[1, h - pad_rows :] = True
    images[1, :, h - pad_rows :] = 0
    return images, pad


def test_tiny_forward_contract() -> None:
    cfg = get_preset("tiny")
    model = _model(cfg)
    images, pad = _batch()
    out = model(images, pad)
    assert out["pred_logits"].shape == (2, 100, 2)
    assert out["pred_boxes"].shape == (2, 100, 4)
    assert ((out["pred_boxes"] > 0) & (out["pred_boxes"] < 1)).all()
    assert out["pred_embs"].shape == (2, 100, cfg.emb_dim) and cfg.emb_dim == 512
    assert len(out["aux_outputs"]) == cfg.dec_layers - 1
    assert set(out["aux_outputs"][0]) == {"pred_logits", "pred_boxes", "pred_embs"}
    assert out["enc_features"].shape == (2, 20, 16, 64)  # attention_level 0: stride 8
    assert out["enc_valid"].dtype == torch.bool
    assert out["enc_valid"][0].all() and out["enc_valid"][1].sum() == 12 * 16  # 96 of 160 rows valid


def test_backbone_features_are_c5_with_valid_mask() -> None:
    model = _model(get_preset("tiny"))
    images, pad = _batch()
    feat, valid = model.backbone_features(images, pad)
    assert feat.shape == (2, 5, 4, 512) and valid.shape == (2, 5, 4)
    assert valid[1, :3].all() and not valid[1, 3:].any()


def test_multi_scale_levels_and_coarsest_encoder_level() -> None:
    cfg = get_preset("tiny").with_(num_feature_levels=4, attention_level=-1, d_model=32, n_heads=2, num_queries=5)
    model = _model(cfg)
    out = model(*_batch())
    assert out["enc_features"].shape == (2, 3, 2, 32)  # the extra stride-64 level
    assert out["pred_boxes"].shape == (2, 5, 4)


def test_attention_level_picks_the_mined_encoder_level() -> None:
    cfg = get_preset("tiny").with_(num_feature_levels=3, attention_level=-1, d_model=32, n_heads=2, num_queries=5)
    images, pad = _batch()
    torch.manual_seed(0)
    coarse = _model(cfg)(images, pad)
    torch.manual_seed(0)
    fine = _model(cfg.with_(attention_level=0))(images, pad)
    assert coarse["enc_features"].shape == (2, 5, 4, 32)  # stride 32
    assert fine["enc_features"].shape == (2, 20, 16, 32)  # stride 8
    assert fine["enc_valid"][0].all() and fine["enc_valid"][1].sum() == 12 * 16
    torch.testing.assert_close(fine["pred_boxes"], coarse["pred_boxes"])  # only the mined output moves
    with pytest.raises(ValueError, match="attention_level"):
        cfg.with_(attention_level=3)


def test_gradients_reach_heads_not_frozen_backbone() -> None:
    model = _model(get_preset("tiny"))
    out = model(*_batch())
    (out["pred_logits"].sum() + out["pred_boxes"].sum() + out["pred_embs"].sum()).backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert model.class_embed.weight.grad is not None
    assert model.transformer.encoder[0].attn.value_proj.weight.grad.abs().sum() > 0


def test_sine_position_encoding_ignores_padding() -> None:
    mask = torch.zeros(1, 4, 6, dtype=torch.bool)
    padded = torch.zeros(1, 6, 9, dtype=torch.bool)
    padded[:, 4:] = True
    padded[:, :, 6:] = True
    torch.testing.assert_close(sine_position_encoding(padded, 16)[..., :4, :6], sine_position_encoding(mask, 16))


def test_presets_follow_the_issue() -> None:
    tiny, paper, single = get_preset("tiny"), get_preset("paper"), get_preset("paper-single-scale")
    assert (
        tiny.backbone,
        tiny.num_feature_levels,
        tiny.d_model,
        tiny.enc_layers,
        tiny.dec_layers,
        tiny.num_queries,
        tiny.emb_target,
    ) == ("resnet18", 3, 64, 2, 2, 100, "roi_align")
    assert tiny.attention_level == 0 and paper.attention_level == 2  # C3 and C5 (stride 32)
    assert (
        paper.backbone,
        paper.num_feature_levels,
        paper.d_model,
        paper.enc_layers,
        paper.n_heads,
        paper.n_points,
        paper.dim_feedforward,
        paper.num_queries,
    ) == ("resnet50", 4, 256, 6, 8, 4, 1024, 300)
    assert (paper.lr, paper.weight_decay, paper.clip_max_norm, paper.lr_drop_epoch) == (2e-4, 1e-4, 0.1, 40)
    assert paper.freeze_backbone and paper.emb_target == "crop" and paper.emb_dim == 512
    assert single.num_feature_levels == 1 and set(PRESETS) == {"tiny", "paper", "paper-single-scale"}


def test_unknown_preset_and_bad_fields_are_clear() -> None:
    with pytest.raises(KeyError, match="paper, paper-single-scale, tiny"):
        get_preset("huge")
    with pytest.raises(ValueError, match="DetectorConfig.emb_target"):
        get_preset("tiny").with_(emb_target="clip")
    with pytest.raises(ValueError, match="DetectorConfig.backbone"):
        DetectorConfig(backbone="vit")
    with pytest.raises(ValueError, match="num_classes"):
        DetectorConfig(num_classes=1)


def test_optimizer_groups_and_lr_drop() -> None:
    cfg = get_preset("tiny").with_(freeze_backbone=False, lr=1e-3, lr_backbone=1e-4, lr_drop_epoch=2)
    model = _model(cfg)
    opt = build_optimizer(model, cfg)
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs == pytest.approx({"backbone": 1e-4, "slow": 1e-4, "main": 1e-3})
    slow = {id(p) for g in opt.param_groups if g["name"] == "slow" for p in g["params"]}
    assert id(model.transformer.encoder[0].attn.sampling_offsets.weight) in slow
    assert id(model.transformer.reference_points.weight) in slow
    sched = build_lr_scheduler(opt, cfg)
    for _ in range(2):
        opt.step()
        sched.step()
    assert opt.param_groups[-1]["lr"] == pytest.approx(1e-4)
    frozen = build_optimizer(_model(get_preset("tiny")), get_preset("tiny"))
    assert "backbone" not in {g["name"] for g in frozen.param_groups}


def test_postprocess_topk_sorted_clipped() -> None:
    logits = torch.tensor([[[0.0, 2.0], [3.0, -3.0], [0.0, 0.0]]])
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.05, 0.5, 0.3, 0.2], [0.95, 0.95, 0.2, 0.2]]])
    (res,) = postprocess({"pred_logits": logits, "pred_boxes": boxes}, top_k=2)
    assert res["scores"].shape == (2,) and (res["scores"][:-1] >= res["scores"][1:]).all()
    torch.testing.assert_close(res["boxes"][0], torch.tensor([0.4, 0.4, 0.6, 0.6]))
    torch.testing.assert_close(res["boxes"][1], torch.tensor([0.85, 0.85, 1.0, 1.0]))
    assert res["labels"].tolist() == [1, 1]
    assert len(postprocess({"pred_logits": logits, "pred_boxes": boxes}, top_k=100)[0]["scores"]) == 3
