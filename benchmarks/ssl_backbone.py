"""What a self-supervised backbone buys: R_0 (and optionally the loop) with each feature source.

For every variant, a run of the ``tiny`` preset on the same synthetic images:

- ``colour``: R_0 from weight-free colour tokens (the tiny preset's default), random backbone;
- ``random``: R_0 from the random backbone's C5 (``priors.init_features=backbone``);
- ``NAME=WEIGHTS``: R_0 from the C5 of the backbone in WEIGHTS (``joindet backbone pretrain``);
- ``NAME=WEIGHTS:colour``: the detector on those weights, R_0 from colour tokens.

Prints one JSON line per variant: v0 AR@100/AR@1/AP50 of the smoothed priors (train split), and
with ``--epochs``, the last version's and the final checkpoint's top-100 proposals on val.

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("variants", nargs="+")
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, default=0, help="0: R_0 only; else schedule.epochs of the loop")
    ap.add_argument("--update-every", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--set", dest="extra", action="append", default=[])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="DetectorConfig.backbone_weights is not set")

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
