"""Finetuning as DETReg does it: backbone trains with its own lr, DETR augmentation, schedule per
fraction, top-k (query, class) post-processing."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from joindet.detector.postprocess import detections
from joindet.pipeline.checkpoints import load_model_state
from joindet.pipeline.config import make_config
from joindet.pipeline.data.transforms import DetrTransform
from joindet.pipeline.stages.finetune import finetune, finetune_model_config, finetune_schedule
from joindet.pipeline.stages.train import train

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from train_fixtures import make_run, synthetic_root  # noqa: E402

torch.set_num_threads(1)


def test_topk_runs_over_query_class_pairs() -> None:
    # 2 queries, 3 classes + background: query 0 is confident in two classes
    logits = torch.log(torch.tensor([[[0.1, 0.45, 0.44, 0.01], [0.6, 0.2, 0.1, 0.1]]]))
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.2, 0.2, 0.1, 0.1]]])
    out = detections({"pred_logits": logits, "pred_boxes": boxes}, top_k=3)[0]
    assert out["queries"].tolist() == [0, 0, 1]  # one query, two labels
    assert out["labels"].tolist() == [1, 2, 1]
    assert np.allclose(out["scores"].numpy(), [0.45, 0.44, 0.2], atol=1e-6)
    assert np.allclose(out["boxes"][0].numpy(), [0.4, 0.4, 0.6, 0.6])
    assert len(detections({"pred_logits": logits, "pred_boxes": boxes}, top_k=100)[0]["scores"]) == 6


def test_schedule_follows_detreg_and_scales() -> None:
    paper = make_config("paper", "coco", ["finetune.fraction=0.01"])
    assert finetune_schedule(paper) == (2000, 2000)
    paper.finetune.fraction = 0.1
    assert finetune_schedule(paper) == (400, 400)
    paper.finetune.fraction = 1.0
    assert finetune_schedule(paper) == (50, 40)
    tiny = make_config("tiny", "synthetic", ["finetune.fraction=0.01"])
    assert finetune_schedule(tiny) == (20, 20)
    assert finetune_schedule(make_config("tiny", "synthetic", ["finetune.epochs=3"])) == (3, 3)
    mcfg = finetune_model_config(paper, 80)
    assert (mcfg.num_classes, mcfg.freeze_backbone, mcfg.lr, mcfg.lr_backbone, mcfg.lr_drop_epoch) == (
        81,
        False,
        2e-4,
        2e-5,
        40,
    )


def test_detr_transform_resizes_crops_and_keeps_boxes_aligned() -> None:
    t = DetrTransform((128, 144, 160), 192)
    assert t.crop_resize == (80, 100, 120) and t.crop_side == (77, 120)
    image = np.zeros((160, 240, 3), np.uint8)
    image[40:80, 60:120] = 255  # a white box at normalised [0.25, 0.25, 0.5, 0.5]
    boxes = np.array([[0.25, 0.25, 0.5, 0.5]])
    shapes = set()
    for seed in range(40):
        img, b, keep = t(image, boxes, np.random.default_rng(seed))
        shapes.add(tuple(img.shape[1:]))
        assert min(img.shape[1:]) in (128, 144, 160) or max(img.shape[1:]) == 192
        if len(b):
            cx, cy, w, h = b[0].tolist()
            hh, ww = img.shape[1:]
            x0, y0, x1, y1 = (
                int((cx - w / 2) * ww) + 1,
                int((cy - h / 2) * hh) + 1,
                int((cx + w / 2) * ww) - 1,
                int((cy + h / 2) * hh) - 1,
            )
            inside = img[:, y0:y1, x0:x1].mean()
            assert inside > 1.5, "the box must still frame the white square"  # normalised white is ~2.2
            assert keep.tolist() == [0]
    assert len(shapes) > 3  # several scales and crops


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = make_run(tmp_path_factory.mktemp("pre"), epochs=1)
    train(run, 1)
    return run.checkpoint_path(0)


@pytest.mark.parametrize("train_backbone", [True, False])
def test_backbone_trains_when_finetuning(tmp_path: Path, pretrained: Path, train_backbone: bool) -> None:
    data = synthetic_root(tmp_path)
    cfg = make_config(
        "tiny",
        "synthetic",
        [
            "train.num_workers=0",
            "train.batch_size=2",
            "finetune.epochs=1",
            "finetune.lr_backbone=1e-3",
            f"finetune.train_backbone={train_backbone}",
            f"data.root={data}",
        ],
    )
    out = tmp_path / "ft"
    finetune(out, pretrained, cfg)
    before, after = load_model_state(pretrained), load_model_state(out / "checkpoints" / "epoch-0000.pt")
    conv = [k for k in before if k.startswith("backbone.") and k.endswith("weight") and before[k].ndim == 4]
    changed = [k for k in conv if not torch.equal(before[k], after[k])]
    if train_backbone:
        assert len(changed) > len(conv) // 2
    else:
        assert changed == []


def test_checkpoints_every_five_epochs_the_last_and_before_the_drop() -> None:
    from joindet.pipeline.stages.finetune import checkpoint_due

    saved = [e for e in range(20) if checkpoint_due(e, 20, 12)]
    assert saved == [4, 9, 11, 14, 19]
    assert [e for e in range(3) if checkpoint_due(e, 3, 3)] == [2]
