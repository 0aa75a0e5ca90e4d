"""Ablations of the paper's Tables 5, 6 and 7 at any scale (CPU default: synthetic scenes).

Table 5 varies the prior source (``priors.source``: region+instance, region, instance,
predictions, region0) with Box Smooth updates; Table 6 varies the update (``priors.update``:
box_smooth, direct, nms, fixed) with region+instance priors; Table 7 varies the augmentation with
R_0 fixed (``priors.update=fixed``: no jittering, large-scale jittering, jittering + copy-paste);
the random-crop baseline (``random_crops`` + ``fixed``) runs for reference. Every setting runs the
same pretrain schedule as ``joindet flow run pretrain --no-prefect``
(``pipeline.pretrain.drive_pretrain`` with ``PlainSteps``) on the same data, with the same seed
and the same budget, then scores:

- the smoothed priors of v0 and of the last version against the train split's ground truth,
- the last checkpoint's top-k class-agnostic proposals on the val split, and
- as the paper scores its ablations: finetuning from the last checkpoint for
  ``--finetune-epochs`` epochs on ``--finetune-fraction`` of the labelled train split, once per
  seed (``--finetune-seeds``, subset seeds 42, 43, ...), category-aware COCO AP on the val split:
  mean and std over seeds (``--finetune-epochs 0`` skips it),

and prints one JSON line per setting (plus one ``chance`` line: ``priors.sources.random_crops``
boxes scored the same way, for scale). Usage::

    python benchmarks/ablation.py --out /tmp/ablation [--images 384 --size 160 --epochs 12 --update-every 4 --jobs 2]

Results and budget of the recorded run are in docs/ablations.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

#: (table, name, overrides); the default JoinDet setting appears in both tables and runs once.
SETTINGS: list[tuple[str, str, list[str]]] = [
    ("5+6", "region+instance / box_smooth", ["priors.source=region+instance", "priors.update=box_smooth"]),
    ("5", "region", ["priors.source=region", "priors.update=box_smooth"]),
    ("5", "instance", ["priors.source=instance", "priors.update=box_smooth"]),
    ("5", "predictions", ["priors.source=predictions", "priors.update=box_smooth"]),
    ("5", "region0", ["priors.source=region0", "priors.update=box_smooth"]),
    ("6", "direct", ["priors.source=region+instance", "priors.update=direct"]),
    ("6", "nms", ["priors.source=region+instance", "priors.update=nms"]),
    ("6", "fixed", ["priors.source=region+instance", "priors.update=fixed"]),
    ("7", "R_0 fixed, no jittering", ["priors.update=fixed", "train.jitter=1.0,1.0"]),
    ("7", "R_0 fixed, jittering", ["priors.update=fixed"]),
    ("7", "R_0 fixed, jittering + copy-paste", ["priors.update=fixed", "train.copy_paste=true"]),
    ("ref", "random_crops / fixed", ["priors.source=random_crops", "priors.update=fixed"]),
]


def base_overrides(args: argparse.Namespace, data: Path) -> list[str]:
    """The budget shared by every setting."""
    return [
        f"data.root={data}",
        f"schedule.epochs={args.epochs}",
        f"schedule.update_every={args.update_every}",
        f"train.seed={args.seed}",
        "train.num_workers=0",
        f"train.batch_size={args.batch_size}",
        "train.device=cpu",
        "mine.device=cpu",
        "mine.shards=1",
        "mine.batch_size=8",
        "mine.save_attention=false",
        *args.set,
    ]


def run_setting(table: str, name: str, overrides: list[str], args: argparse.Namespace, data: Path) -> dict:
    """Pretrain one setting from scratch and score it; returns the JSON line's dict."""
    import torch

    torch.set_num_threads(1)
    # The stages build the random backbone from the global RNG without seeding it, so R_0 would
    # depend on what ran before in this worker process: seed it so every setting starts alike.
    torch.manual_seed(args.seed)
    warnings.filterwarnings("ignore", message="DetectorConfig.backbone_weights is not set")
    from joindet.flows.pretrain import PlainSteps
    from joindet.pipeline import stages
    from joindet.pipeline.config import make_config
    from joindet.pipeline.data import open_dataset
    from joindet.pipeline.pretrain import drive_pretrain
    from joindet.pipeline.run_dir import RunDir

    t0 = time.perf_counter()
    cfg = make_config("tiny", "synthetic", [*base_overrides(args, data), *overrides])
    cfg.model = cfg.model.with_(test_size=args.size, max_size=args.size, train_size=(args.size,), crop_size=args.size)
    slug = name.replace(" / ", "-").replace("+", "_")
    run = RunDir.create(args.out / "runs" / slug, cfg, dataset=open_dataset("synthetic", root=data, split="train"))
    with run.lock():
        drive_pretrain(run, PlainSteps(threads=1), evaluate=False)
    versions = run.store.versions()
    priors = stages.evaluate_priors(run, versions=sorted({0, versions[-1]}))
    props = stages.evaluate_proposals(run, epoch=run.last_checkpoint(), split="val")
    v0, last = priors["v0000"]["smoothed"], priors[f"v{versions[-1]:04d}"]["smoothed"]
    scores = finetune_scores(run, slug, args, data)
    return {
        "table": table,
        "setting": name,
        "source": cfg.priors.source,
        "update": cfg.priors.update,
        "final_version": versions[-1],
        "epochs": args.epochs,
        "seed": args.seed,
        "v0_AR@100": _r(v0["AR@100"]),
        "v0_AP50": _r(v0["AP50"]),
        "final_priors_AR@100": _r(last["AR@100"]),
        "final_priors_AP50": _r(last["AP50"]),
        "final_priors_boxes_per_image": round(
            run.store.manifest(versions[-1]).stats["smoothed"]["boxes_per_image_mean"], 3
        ),
        "proposals_val": {k: _r(v) for k, v in props["metrics"].items()},
        **scores,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def finetune_scores(run, slug: str, args: argparse.Namespace, data: Path) -> dict:
    """Finetune AP (val split) of the run's last checkpoint: per seed, mean and std (ddof 1)."""
    import statistics

    from joindet.pipeline.config import make_config
    from joindet.pipeline.stages.finetune import finetune

    if args.finetune_epochs <= 0:
        return {}
    init = run.checkpoint_path(run.last_checkpoint())
    aps = []
    for k in range(args.finetune_seeds):
        seed = 42 + k
        cfg = make_config(
            "tiny",
            "synthetic",
            [
                *base_overrides(args, data),
                f"finetune.epochs={args.finetune_epochs}",
                f"finetune.fraction={args.finetune_fraction}",
                f"finetune.seed={seed}",
                f"train.seed={seed}",  # the seed also drives initialisation and augmentation (as in DETReg)
            ],
        )
        cfg.model = run.config.model
        out = args.out / "finetune" / slug / f"s{seed}"
        result = finetune(out, init, cfg) if not (out / "run.json").exists() else finetune(out, init)
        aps.append(float(result.summary["metrics"]["AP"]))
    return {
        "finetune": {"epochs": args.finetune_epochs, "fraction": args.finetune_fraction, "seeds": args.finetune_seeds},
        "finetune_AP": [_r(a) for a in aps],
        "finetune_AP_mean": _r(statistics.fmean(aps)),
        "finetune_AP_std": _r(statistics.stdev(aps) if len(aps) > 1 else 0.0),
    }


def chance_line(args: argparse.Namespace, data: Path) -> dict:
    """Random crops (``priors.sources.random_crops``; 30 per image, and 100 = the top-100 budget of
    the proposals' AR@100) scored on both splits, for scale."""
    from joindet.pipeline.data import open_dataset
    from joindet.pipeline.stages.evaluate import coco_metrics, detections_array
    from joindet.priors import random_crops

    out = {"table": "-", "setting": "chance (30 / 100 random crops per image)"}
    for split in ("train", "val"):
        ds = open_dataset("synthetic", root=data, split=split)
        index = ds.index()
        for k in (30, 100):
            boxes = random_crops(index.column("image_id").to_numpy(), k, seed=args.seed)
            m = coco_metrics(ds.coco_ground_truth(), detections_array(boxes, index))
            suffix = "" if k == 30 else f"_{k}crops"
            out[f"{split}_AR@100{suffix}"], out[f"{split}_AP50{suffix}"] = _r(m["AR@100"]), _r(m["AP50"])
    return out


def _r(x: float | None) -> float | None:
    return None if x is None else round(float(x), 4)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="work folder (data and one run per setting)")
    p.add_argument("--images", type=int, default=384)
    p.add_argument("--val-images", type=int, default=32)
    p.add_argument("--size", type=int, default=160, help="image side in pixels (data and model)")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--update-every", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=2, help="settings run in parallel processes")
    p.add_argument("--only", nargs="*", default=None, help="setting names to run (default: all)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra override for every setting")
    p.add_argument("--finetune-epochs", type=int, default=2, help="finetune epochs per seed (0: no finetune score)")
    p.add_argument("--finetune-seeds", type=int, default=3, help="finetune subset seeds 42, 43, ...")
    p.add_argument("--finetune-fraction", type=float, default=1.0, help="labelled share of the train split")
    args = p.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from joindet.pipeline.data import generate_synthetic

    data = args.out / "data"
    if not (data / "synthetic.json").exists():
        generate_synthetic(data, args.images, args.size, args.seed, args.val_images, "jpg")
    print(
        json.dumps(
            {
                "budget": {
                    "images": args.images,
                    "val_images": args.val_images,
                    "size": args.size,
                    "epochs": args.epochs,
                    "update_every": args.update_every,
                    "seed": args.seed,
                    "overrides": base_overrides(args, data),
                }
            }
        ),
        flush=True,
    )
    print(json.dumps(chance_line(args, data)), flush=True)
    todo = [s for s in SETTINGS if args.only is None or s[1] in args.only]
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [pool.submit(run_setting, t, n, o, args, data) for t, n, o in todo]
        for f in futures:
            print(json.dumps(f.result()), flush=True)


if __name__ == "__main__":
    main()
