"""Key layouts for transformers and the reference Deformable DETR (``detector/hf_layout.py``)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from joindet.detector import build_model
from joindet.detector.hf_layout import (
    hf_config_fields,
    layout_problems,
    to_hf_state_dict,
    to_reference_state_dict,
)
from joindet.detector.presets import get_preset

REFERENCE_KEYS = Path(__file__).parents[1] / "data" / "deformable_detr_r50_keys.txt"


def _reference_keys() -> dict[str, tuple[int, ...]]:
    out = {}
    for line in REFERENCE_KEYS.read_text(encoding="utf-8").splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape = line.split()
        out[key] = () if shape == "scalar" else tuple(int(s) for s in shape.split("x"))
    return out


def _model(cfg):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return build_model(cfg)


def test_deformable_detr_export_has_the_reference_models_keys_and_shapes() -> None:
    cfg = get_preset("paper")
    ours = {k: tuple(v.shape) for k, v in to_reference_state_dict(_model(cfg).state_dict(), cfg).items()}
    ref = _reference_keys()
    assert len(ref) == 561
    assert sorted(set(ref) - set(ours)) == []
    assert sorted(set(ours) - set(ref)) == []
    # The class head is the only size that differs: 91 COCO classes there, 2 (background, object) here;
    # DETReg's --pretrain drops class_embed before loading.
    differ = {k for k in ref if ref[k] != ours[k]}
    assert differ == {f"class_embed.{i}.{p}" for i in range(cfg.dec_layers) for p in ("weight", "bias")}
    assert ours["class_embed.0.weight"] == (2, 256) and ref["class_embed.0.weight"] == (91, 256)


def test_reference_layout_swaps_the_decoder_norm_names_and_copies_shared_heads() -> None:
    cfg = get_preset("paper-single-scale").with_(enc_layers=1, dec_layers=2, num_queries=10)
    state = _model(cfg).state_dict()
    ref = to_reference_state_dict(state, cfg)
    # joindet's norm1 follows the decoder's self-attention; the reference calls that one norm2.
    assert torch.equal(ref["transformer.decoder.layers.1.norm2.weight"], state["transformer.decoder.1.norm1.weight"])
    assert torch.equal(ref["transformer.decoder.layers.1.norm1.bias"], state["transformer.decoder.1.norm2.bias"])
    assert torch.equal(ref["transformer.decoder.layers.0.norm3.bias"], state["transformer.decoder.0.ffn.norm.bias"])
    assert torch.equal(ref["bbox_embed.1.layers.2.weight"], state["bbox_embed.layers.2.weight"])
    assert torch.equal(ref["query_embed.weight"], state["transformer.query_embed.weight"])
    assert not any(k.startswith("emb_embed") or "feature_embed" in k for k in ref)


def test_hf_layout_splits_the_packed_self_attention_projection() -> None:
    cfg = get_preset("tiny")
    state = _model(cfg).state_dict()
    hf = to_hf_state_dict(state, cfg)
    packed = state["transformer.decoder.1.self_attn.in_proj_weight"]
    q, k, v = (hf[f"model.decoder.layers.1.self_attn.{n}_proj.weight"] for n in "qkv")
    assert torch.equal(torch.cat([q, k, v]), packed)
    assert torch.equal(
        hf["model.backbone.model.encoder.stages.1.layers.0.shortcut.convolution.weight"],
        state["backbone.body.layer2.0.downsample.0.weight"],
    )
    assert not any(k.startswith("emb_embed") for k in hf)


def test_presets_the_targets_cannot_express_are_refused_naming_the_difference() -> None:
    assert layout_problems(get_preset("paper"), "hf") == []
    assert layout_problems(get_preset("paper-single-scale"), "deformable-detr") == []
    assert layout_problems(get_preset("tiny"), "hf") == []
    wide = layout_problems(get_preset("tiny").with_(head_hidden=256), "hf")
    assert len(wide) == 1 and "head_hidden=256" in wide[0] and "d_model=64" in wide[0]
    two = layout_problems(get_preset("paper").with_(num_feature_levels=2, attention_level=0), "hf")
    assert any("num_feature_levels=2" in p for p in two)
    small = layout_problems(get_preset("tiny"), "deformable-detr")
    assert any("resnet18" in p for p in small)
    with pytest.raises(ValueError, match="head_hidden=256"):
        hf_config_fields(get_preset("tiny").with_(head_hidden=256), 2)
    with pytest.raises(ValueError, match="unknown export format"):
        layout_problems(get_preset("paper"), "onnx")


def test_an_unknown_joindet_key_is_an_error_not_a_silent_drop() -> None:
    cfg = get_preset("tiny")
    state = dict(_model(cfg).state_dict())
    state["transformer.new_thing.weight"] = torch.zeros(1)
    with pytest.raises(KeyError, match="new_thing"):
        to_hf_state_dict(state, cfg)
