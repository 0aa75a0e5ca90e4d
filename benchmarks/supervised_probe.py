"""Can a detector preset learn boxes at all on the synthetic scenes? Train it on ground truth.

The loop can only improve priors if the detector learns to localise within the run's budget. This
probe takes the pretraining path (``build_train_parts``, ``PriorTrainingSet``, ``run_epoch``:
same losses, embedding targets, optimiser and augmentation as the train stage) but feeds the
**ground-truth boxes** of the synthetic train split as the priors, and scores the top-100
class-agnostic proposals (COCOeval, maxDets 1/10/100) on the val split and on 32 train images
every ``--every`` epochs. It prints one JSON line per evaluation, plus a ``chance`` line (100
random crops per image on val) for scale. Usage::

    python benchmarks/supervised_probe.py --epochs 40 --every 10 [--set model.num_feature_levels=1]

Results of the recorded runs are in docs/ablations.md ("CPU-scale preset").
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from joindet.pipeline.config import make_config
from joindet.pipeline.data import open_dataset
from joindet.pipeline.data.synthetic import SyntheticSpec, generate_synthetic
from joindet.pipeline.distributed import DistInfo
from joindet.pipeline.progress import NULL_PROGRESS
from joindet.pipeline.stages.evaluate import coco_metrics, detections_array, model_proposals
from joindet.pipeline.stages.image_batches import ImageBatches
from joindet.pipeline.stages.train_loop import build_train_parts, make_loader, run_epoch
from joindet.pipeline.training_data import PriorTrainingSet
from joindet.priors import random_crops
from joindet.priors.coco_io import read_coco


def proposal_metrics(model: torch.nn.Module, dataset, ids: np.ndarray, size: int) -> dict[str, float]:
    """AP50 / AR@10 / AR@100 of the model's top-100 proposals on ``ids`` of ``dataset``."""
    model.eval()
    props = model_proposals(model, ImageBatches(dataset, ids, size, size, batch_size=32), torch.device("cpu"), 100)
    model.train()
    m = coco_metrics(dataset.coco_ground_truth(), detections_array(props, dataset.index()), ids)
    return {k: round(float(m[k]), 4) for k in ("AP50", "AR@10", "AR@100")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("/tmp/joindet-supervised-probe"), help="data folder")
    p.add_argument("--images", type=int, default=96)
    p.add_argument("--size", type=int, default=160)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--every", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    args = p.parse_args()
    warnings.filterwarnings("ignore", message="DetectorConfig.backbone_weights is not set")
    torch.set_num_threads(2)
    data = args.out / SyntheticSpec(images=args.images, val_images=32, size=args.size, seed=args.seed).slug()
    if not (data / "synthetic.json").exists():
        generate_synthetic(data, args.images, args.size, args.seed, val_images=32)
    train, val = (open_dataset("synthetic", root=data, split=s) for s in ("train", "val"))
    cfg = make_config("tiny", "synthetic", [f"train.seed={args.seed}", "train.num_workers=0", *args.set])
    cfg.model = cfg.model.with_(test_size=args.size, max_size=args.size)
    torch.manual_seed(args.seed)
    info = DistInfo()
    parts = build_train_parts(cfg, info)
    dataset = PriorTrainingSet(
        train,
        train.image_ids(),
        read_coco(train.coco_ground_truth(), train.index()).boxes,
        parts.transforms,
        seed=args.seed,
    )
    val_ids, train_ids = val.image_ids(), train.image_ids()[:32]
    crops = random_crops(val_ids, 100, seed=args.seed)
    chance = coco_metrics(val.coco_ground_truth(), detections_array(crops, val.index()))
    print(
        json.dumps(
            {"setting": "chance (100 random crops per image, val)", "AR@100": round(float(chance["AR@100"]), 4)}
        ),
        flush=True,
    )
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        stats = run_epoch(parts, make_loader(dataset, cfg.train, info, epoch), info, NULL_PROGRESS)
        parts.scheduler.step()
        if (epoch + 1) % args.every == 0 or epoch == args.epochs - 1:
            print(
                json.dumps(
                    {
                        "overrides": args.set,
                        "images": args.images,
                        "epoch": epoch,
                        "loss": round(stats.loss, 3),
                        "seconds": round(time.perf_counter() - t0, 1),
                        "val": proposal_metrics(parts.model, val, val_ids, args.size),
                        "train": proposal_metrics(parts.model, train, train_ids, args.size),
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
