"""The encoder level mined for eigen attention: the paper preset mines C5 (stride 32)."""

from __future__ import annotations

import pytest
import torch

from joindet.detector import build_model
from joindet.detector.presets import get_preset, level_strides, mined_level


def test_paper_presets_mine_c5() -> None:
    paper = get_preset("paper")
    assert paper.num_feature_levels == 4
    assert mined_level(paper) == {"index": 2, "name": "C5", "stride": 32}
    assert mined_level(get_preset("paper-single-scale")) == {"index": 0, "name": "C5", "stride": 32}
    assert mined_level(get_preset("tiny")) == {"index": 0, "name": "C3", "stride": 8}


def test_level_strides_and_the_extra_levels() -> None:
    assert level_strides(1) == (32,)
    assert level_strides(2) == (16, 32)
    assert level_strides(3) == (8, 16, 32)
    assert level_strides(4) == (8, 16, 32, 64)
    four = get_preset("paper").with_(attention_level=-1)
    assert mined_level(four) == {"index": 3, "name": "extra-64", "stride": 64}


@pytest.mark.filterwarnings("ignore:DetectorConfig.backbone_weights is not set")
def test_a_four_level_model_returns_the_stride_32_grid_for_the_paper_level() -> None:
    # a small 4-level model with the paper's level choice: enc_features has the C5 grid
    cfg = get_preset("tiny").with_(num_feature_levels=4, attention_level=2, d_model=32, n_heads=2, num_queries=5)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    images, pad = torch.zeros(1, 3, 128, 192), torch.zeros(1, 128, 192, dtype=torch.bool)
    with torch.no_grad():
        out = model(images, pad)
    assert out["enc_features"].shape[1:3] == (128 // 32, 192 // 32)
