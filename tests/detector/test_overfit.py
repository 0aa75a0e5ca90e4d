"""Must-show: the tiny detector overfits 4 synthetic images (class-agnostic AP50 >= 0.9).

The backbone is random (no weights offline) and, for this test only, not frozen: a frozen random
ResNet gives the transformer too little to separate rectangles from noise within the CPU budget.
"""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torchvision.ops import box_convert

from joindet.detector import build_criterion, build_model, build_optimizer, get_preset, postprocess

SIZE = 128
MEAN = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
STD = torch.tensor([0.229, 0.224, 0.225])[:, None, None]


def synthetic_images(n: int = 4, seed: int = 0) -> tuple[torch.Tensor, list[np.ndarray]]:
    """n noise images with 1-3 flat-coloured rectangles or ellipses; boxes normalised xyxy."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    images, boxes = [], []
    for i in range(n):
        img = rng.normal(0.5, 0.15, (SIZE, SIZE, 3)).clip(0, 1)
        found = []
        for k in range(1 + i % 3):
            w, h = rng.uniform(0.2, 0.45, 2) * SIZE
            x0, y0 = rng.uniform(0, SIZE - w), rng.uniform(0, SIZE - h)
            x0, y0, x1, y1 = int(x0), int(y0), int(x0 + w), int(y0 + h)
            if k % 2:  # ellipse inscribed in the box
                cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
                inside = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
            else:
                inside = np.zeros((SIZE, SIZE), bool)
                inside[y0:y1, x0:x1] = True
            img[inside] = rng.uniform(0, 1, 3)
            found.append([x0 / SIZE, y0 / SIZE, x1 / SIZE, y1 / SIZE])
        images.append(img)
        boxes.append(np.array(found, dtype=np.float32))
    x = torch.tensor(np.stack(images), dtype=torch.float32).permute(0, 3, 1, 2)
    return (x - MEAN) / STD, boxes


def coco_ap50(predictions: list[dict], gt_boxes: list[np.ndarray]) -> float:
    """Class-agnostic AP at IoU 0.5 with pycocotools (useCats=0), boxes normalised xyxy."""
    gt = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "object"}]}
    dets = []
    for i, (pred, boxes) in enumerate(zip(predictions, gt_boxes)):
        gt["images"].append({"id": i, "width": SIZE, "height": SIZE})
        for _j, (x0, y0, x1, y1) in enumerate(boxes * SIZE):
            gt["annotations"].append(
                {
                    "id": len(gt["annotations"]) + 1,
                    "image_id": i,
                    "category_id": 1,
                    "iscrowd": 0,
                    "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                    "area": float((x1 - x0) * (y1 - y0)),
                }
            )
        for s, (x0, y0, x1, y1) in zip(pred["scores"].tolist(), (pred["boxes"] * SIZE).tolist()):
            dets.append({"image_id": i, "category_id": 1, "bbox": [x0, y0, x1 - x0, y1 - y0], "score": s})
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(dets), "bbox")
        ev.params.useCats = 0
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[1])


def test_coco_ap50_helper_scores_perfect_and_wrong_boxes() -> None:
    _, boxes = synthetic_images()
    perfect = [{"scores": torch.ones(len(b)), "boxes": torch.tensor(b)} for b in boxes]
    assert coco_ap50(perfect, boxes) == pytest.approx(1.0)
    shifted = [{"scores": torch.ones(len(b)), "boxes": torch.tensor(b) * 0.3} for b in boxes]
    assert coco_ap50(shifted, boxes) < 0.5


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_tiny_detector_overfits_four_images() -> None:
    torch.manual_seed(0)
    images, boxes = synthetic_images()
    pad_mask = torch.zeros(images.shape[0], SIZE, SIZE, dtype=torch.bool)
    targets = [
        {"boxes": box_convert(torch.tensor(b), "xyxy", "cxcywh"), "labels": torch.ones(len(b), dtype=torch.long)}
        for b in boxes
    ]
    cfg = get_preset("tiny").with_(freeze_backbone=False, lr=1e-3, lr_backbone=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random-backbone warning is expected here
        model = build_model(cfg)
    criterion, optimizer = build_criterion(cfg), build_optimizer(model, cfg)

    ap50 = 0.0
    for step in range(1, 201):
        model.train()
        losses = criterion(model(images, pad_mask), targets)
        optimizer.zero_grad()
        criterion.total(losses).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_max_norm)
        optimizer.step()
        if step % 20 == 0:
            model.eval()
            with torch.no_grad():
                ap50 = coco_ap50(postprocess(model(images, pad_mask), top_k=20), boxes)
            if ap50 >= 0.9:
                break
    assert ap50 >= 0.9, f"AP50 {ap50:.3f} after {step} steps"
