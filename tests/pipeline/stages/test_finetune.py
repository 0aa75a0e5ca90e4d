"""The finetune stage: pretrained weights kept but the heads, labelled subset, COCO AP, resume."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from joindet.detector import build_model
from joindet.pipeline.checkpoints import list_epochs, load_checkpoint, load_model_state
from joindet.pipeline.config import make_config
from joindet.pipeline.data import open_dataset
from joindet.pipeline.stages.finetune import FINETUNE_JSON, finetune, load_pretrained
from joindet.pipeline.stages.finetune_eval import COCO_METRICS, category_ids, coco_bbox_metrics, ground_truth_boxes
from joindet.pipeline.stages.train import train
from joindet.pipeline.stages.train_loop import read_log

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # train_fixtures, however pytest names this directory

from train_fixtures import make_run, synthetic_root  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = make_run(tmp_path_factory.mktemp("pre"), epochs=1)
    train(run, 1)
    return run.checkpoint_path(0)


def _cfg(base: Path, *extra: str):
    data = synthetic_root(base)
    return make_config(
        "tiny",
        "synthetic",
        [
            "train.num_workers=0",
            "train.batch_size=2",
            "finetune.epochs=2",
            f"data.root={data}",
            *extra,
        ],
    )


def test_load_pretrained_keeps_all_but_the_heads(pretrained: Path) -> None:
    cfg = make_config("tiny").model.with_(num_classes=6)
    model = build_model(cfg)
    load_pretrained(model, pretrained)
    src = load_model_state(pretrained)
    own = model.state_dict()
    for k, v in src.items():
        if k.startswith(("class_embed.", "emb_embed.")):
            continue
        assert torch.equal(own[k], v), k
    assert own["class_embed.weight"].shape == (6, cfg.d_model)  # re-made for 5 categories + background
    assert src["class_embed.weight"].shape[0] == 2


def test_load_pretrained_refuses_another_preset(tmp_path: Path, pretrained: Path) -> None:
    other = build_model(make_config("tiny").model.with_(d_model=32, n_heads=4))
    with pytest.raises(ValueError, match="same preset"):
        load_pretrained(other, pretrained)


def test_ground_truth_boxes_align_labels(tmp_path: Path) -> None:
    gt = open_dataset("synthetic", root=synthetic_root(tmp_path), split="train").coco_ground_truth()
    cats = category_ids(gt)
    boxes, labels = ground_truth_boxes(gt, cats)
    assert len(boxes) == len(labels) == sum(1 for a in gt["annotations"] if not a.get("iscrowd", 0))
    assert labels.min() >= 1 and labels.max() <= len(cats)
    assert (boxes.boxes >= 0).all() and (boxes.boxes <= 1).all()
    # perfect detections score AP 1
    sizes = {im["id"]: (im["width"], im["height"]) for im in gt["images"]}
    results = []
    for i, (x0, y0, x1, y1) in enumerate(boxes.boxes.tolist()):
        w, h = sizes[int(boxes.image_ids[i])]
        results.append(
            {
                "image_id": int(boxes.image_ids[i]),
                "category_id": int(labels[i]),
                "bbox": [x0 * w, y0 * h, (x1 - x0) * w, (y1 - y0) * h],
                "score": 1.0,
            }
        )
    assert coco_bbox_metrics(gt, results, cats)["AP50"] == pytest.approx(1.0)
    wrong = [dict(r, category_id=r["category_id"] % len(cats) + 1) for r in results]
    assert coco_bbox_metrics(gt, wrong, cats)["AP50"] < 0.5  # category-aware
    assert coco_bbox_metrics(gt, [], cats) == dict.fromkeys(COCO_METRICS, 0.0)


@pytest.mark.parametrize(("n_images", "per_image", "seed"), [(20, 30, 0), (10, 130, 1), (25, 2, 2)])
def test_coco_bbox_metrics_equal_pycocotools(n_images: int, per_image: int, seed: int) -> None:
    """Category-aware: 3 categories, crowd boxes, area ranges, tied scores, > maxDets per image."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from .test_coco_eval import make_case

    gt, dets = make_case(n_images, per_image, seed, crowd=0.2)
    cats = category_ids(gt)
    results = [
        {"image_id": int(d[0]), "category_id": int(d[6]), "bbox": d[1:5].tolist(), "score": float(d[5])} for d in dets
    ]
    ids = sorted(im["id"] for im in gt["images"])
    for image_ids in (None, ids[1::2]):
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO()
            coco.dataset = json.loads(json.dumps(gt))
            coco.createIndex()
            ev = COCOeval(
                coco, coco.loadRes([dict(r, category_id=cats[r["category_id"] - 1]) for r in results]), "bbox"
            )
            ev.params.imgIds = ids if image_ids is None else image_ids
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        ours = coco_bbox_metrics(gt, [dict(r) for r in results], cats, image_ids)
        for name, ref in zip(COCO_METRICS, ev.stats):
            assert (ours[name] is None) == (ref < 0), name
            if ref >= 0:
                assert ours[name] == pytest.approx(ref, abs=1e-6), name


@pytest.mark.timeout(120)
def test_finetune_trains_evaluates_and_resumes(tmp_path: Path, pretrained: Path) -> None:
    out = tmp_path / "ft"
    cfg = _cfg(tmp_path, "finetune.fraction=0.5")
    first = finetune(out, pretrained, cfg, end_epoch=1)
    assert not first.skipped and first.summary["epochs"] == [0, 1]
    assert first.summary["num_train_images"] == 3  # round(0.5 * 6), seed 42
    assert list_epochs(out / "checkpoints") == [0]
    record = json.loads((out / FINETUNE_JSON).read_text())
    assert record["init_checkpoint"] == str(pretrained) and record["fraction"] == 0.5
    assert record["category_ids"] == sorted(record["category_ids"])

    result = finetune(out, pretrained)  # reopen from run.json; continues at epoch 1
    assert result.summary["epochs"] == [1, 2]
    assert list_epochs(out / "checkpoints") == [0, 1]
    assert [r["epoch"] for r in read_log(out / "logs" / "finetune.jsonl")] == [0, 1]
    log = read_log(out / "logs" / "finetune.jsonl")
    assert all("loss_emb" not in r["losses"] and "loss_focal" in r["losses"] for r in log)  # embedding loss off
    metrics = result.summary["metrics"]
    assert set(metrics) == set(COCO_METRICS)
    assert 0.0 <= metrics["AP"] <= 1.0 and metrics["AR@100"] >= metrics["AR@10"] >= metrics["AR@1"]
    assert json.loads(Path(result.summary["metrics_file"]).read_text())["metrics"] == metrics
    ckpt = load_checkpoint(out / "checkpoints" / "epoch-0001.pt")
    assert ckpt["extra"]["num_classes"] == len(record["category_ids"]) + 1

    assert finetune(out, pretrained).skipped
    with pytest.raises(ValueError, match="new output directory"):
        finetune(out, out / "checkpoints" / "epoch-0000.pt")


def test_unlabelled_dataset_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    import cv2
    import numpy as np

    for i in range(2):
        cv2.imwrite(str(folder / f"{i}.png"), np.full((64, 64, 3), 40 * i, np.uint8))
    cfg = make_config("tiny", "folder", ["train.num_workers=0", f"data.root={folder}", "finetune.epochs=1"])
    with pytest.raises(ValueError, match="labelled dataset"):
        finetune(tmp_path / "ft", None, cfg)
