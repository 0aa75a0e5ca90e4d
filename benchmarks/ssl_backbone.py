"""What a self-supervised backbone buys: R_0 (and optionally the loop) with each feature source.

For every variant, a run of the ``tiny`` preset on the same synthetic images:

- ``colour``: R_0 from weight-free colour tokens (the tiny preset's default), random backbone;
- ``random``: R_0 from the random backbone's C5 (``priors.init_features=backbone``);
- ``NAME=WEIGHTS``: R_0 from the C5 of the backbone in WEIGHTS (``joindet backbone pretrain``);
- ``NAME=WEIGHTS:colour``: the detector on those weights, R_0 from colour tokens.

Prints one JSON line per variant: v0 AR@100/AR@1/AP50 of the smoothed priors (train split), and
with ``--epochs``, the last version's and the final checkpoint's top-100 proposals on val.

``--diagnose``: no runs; for each variant's backbone, region priors of C4 and C5 tokens, raw and
centred on each image's mean token (``priors.centre_tokens``), scored with pycocotools (AR@100,
class-agnostic, train split): does the backbone carry objects that the pipeline's R_0 misses?

    python3 benchmarks/ssl_backbone.py --data-root /tmp/syn192 --out /tmp/ssl-abl \\
        random colour simclr=/tmp/ssl-simclr.pth [--epochs 12 --update-every 4]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import torch

from joindet.flows.pretrain import PlainSteps
from joindet.pipeline import stages
from joindet.pipeline.config import make_config
from joindet.pipeline.pretrain import drive_pretrain
from joindet.pipeline.run_dir import RunDir


def overrides_of(variant: str) -> tuple[str, list[str]]:
    """(name, --set strings) of one variant (see the module docstring)."""
    if variant == "colour":
        return "colour", ["priors.init_features=colour"]
    if variant == "random":
        return "random", ["priors.init_features=backbone"]
    name, _, spec = variant.partition("=")
    weights, _, features = spec.partition(":")
    features = features or "backbone"
    return name, [f"model.backbone_weights={Path(weights).absolute()}", f"priors.init_features={features}"]


def metrics_of(block: dict) -> dict:
    keys = ("AR@100", "AR@1", "AP50")
    return {k: round(float(block[k]), 4) for k in keys if block.get(k) is not None}


def diagnose(variant: str, data_root: str) -> list[dict]:
    """Rows ``{variant, level, tokens, AR@100, boxes_per_image}`` (see ``--diagnose``); square, unpadded
    images (every token valid), as the synthetic scenes are."""
    import numpy as np
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from joindet.detector import build_model
    from joindet.pipeline.data import open_dataset
    from joindet.pipeline.stages.image_batches import ImageBatches
    from joindet.priors import centre_tokens, eigen_attention, region_priors

    name, sets = overrides_of(variant)
    cfg = make_config("tiny", "synthetic", sets)
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model).eval()
    ds = open_dataset("synthetic", root=data_root)
    gt = COCO()
    gt.dataset = ds.coco_ground_truth()
    gt.createIndex()
    sizes = {int(i["id"]): (i["width"], i["height"]) for i in gt.dataset["images"]}
    rows = []
    for level in ("layer3", "layer4"):
        for centred in (False, True):
            dets = []
            batches = ImageBatches(ds, ds.image_ids(), cfg.model.test_size, cfg.model.max_size, 8)
            with torch.inference_mode():
                for batch in batches:
                    feat = model.backbone.stem_to(batch.images, level)[-1]
                    valid = torch.ones(feat.shape[0], *feat.shape[-2:], dtype=torch.bool)
                    tokens = feat.permute(0, 2, 3, 1)
                    tokens = centre_tokens(tokens, valid) if centred else tokens
                    maps = eigen_attention(tokens, valid, tau=cfg.priors.tau, eps=cfg.priors.eps)
                    bidx, boxes, scores = region_priors(maps, valid, max_boxes=cfg.priors.max_region_boxes)
                    for b, box, sc in zip(bidx, boxes, scores):
                        image_id = int(batch.image_ids[int(b)])
                        w, h = sizes[image_id]
                        x0, y0, x1, y1 = (float(v) for v in box)
                        bbox = [x0 * w, y0 * h, (x1 - x0) * w, (y1 - y0) * h]
                        dets.append({"image_id": image_id, "category_id": 1, "bbox": bbox, "score": float(sc)})
            ar = 0.0
            if dets:
                ev = COCOeval(gt, gt.loadRes(dets), "bbox")
                ev.params.useCats = 0
                ev.evaluate()
                ev.accumulate()
                recall = ev.eval["recall"][:, :, 0, -1]  # [iou, cat] at area all, maxDets 100
                ar = float(np.mean(recall[recall > -1])) if (recall > -1).any() else 0.0
            rows.append(
                {
                    "variant": name,
                    "level": {"layer3": "C4", "layer4": "C5"}[level],
                    "tokens": "centred" if centred else "raw",
                    "AR@100": round(ar, 4),
                    "boxes_per_image": round(len(dets) / len(ds), 2),
                }
            )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("variants", nargs="+")
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, default=0, help="0: R_0 only; else schedule.epochs of the loop")
    ap.add_argument("--update-every", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--set", dest="extra", action="append", default=[])
    ap.add_argument("--diagnose", action="store_true", help="backbone tokens C4/C5, raw/centred; no runs")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="DetectorConfig.backbone_weights is not set")
    if args.diagnose:
        for variant in args.variants:
            for row in diagnose(variant, args.data_root):
                print(json.dumps(row), flush=True)
        return

    for variant in args.variants:
        name, sets = overrides_of(variant)
        loop = [f"schedule.epochs={args.epochs}", f"schedule.update_every={args.update_every}"] if args.epochs else []
        cfg = make_config("tiny", "synthetic", [*sets, *loop, "train.num_workers=0", "mine.shards=1", *args.extra])
        cfg.data.root = str(Path(args.data_root).absolute())
        t0 = time.perf_counter()
        run = RunDir.create(Path(args.out) / name, cfg)
        row: dict = {"variant": name, "sets": sets}
        if args.epochs:
            with run.lock():
                drive_pretrain(run, PlainSteps(), evaluate=False)
        else:
            stages.init_priors(run)
        versions = run.store.versions()
        scores = stages.evaluate_priors(run, versions=versions)
        row["v0"] = metrics_of(scores["v0000"]["smoothed"])
        if args.epochs:
            last = versions[-1]
            row[f"v{last}"] = metrics_of(scores[f"v{last:04d}"]["smoothed"])
            proposals = stages.evaluate_proposals(run)
            row["proposals_val"] = metrics_of(proposals["metrics"])
        row["seconds"] = round(time.perf_counter() - t0, 1)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
