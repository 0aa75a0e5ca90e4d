"""The paper's low-data benchmark (Table 1) in one command: pretrain, then finetune on fractions.

For each pretraining variant

- ``joindet``: the default (region+instance priors, Box Smooth),
- ``detreg``: DETReg's priors (``priors.source=selective_search``, ``priors.update=fixed``: the
  top 30 of selective search, fast mode, on the image resized to 128 x 128, kept throughout),
- ``random_crops``: ``priors.source=random_crops``, ``priors.update=fixed`` (UP-DETR-like),
- ``none``: no detector pretraining (the backbone alone, the supervised-backbone baseline),

the pretraining runs once (``pipeline.pretrain.drive_pretrain``, the steps of ``joindet flow run
pretrain --no-prefect``), then for every fraction and seed the finetune stage runs as DETReg does
(pipeline/stages/finetune.py: subset ``default_rng(seed)`` of the train split, the same seed for
initialisation and augmentation (``train.seed``), backbone trained,
DETR augmentation, the fraction's schedule) and scores category-aware COCO AP on the val split.

Output: one JSON line per cell (``variant``, ``fraction``, ``seed``, ``AP``, ``AP50``, ``AP75``,
``seconds``), then one ``summary`` line with the mean and standard deviation (over seeds, ddof 1)
per (variant, fraction), and ``low_data.png`` in ``--out`` (AP vs fraction, one line per variant,
error bars = std over seeds). Usage::

    python benchmarks/low_data.py --out DIR --dataset coco --data-root /data/coco --preset paper \\
        --set model.backbone_weights=/w/swav.pth [--fractions 0.01 0.1 --seeds 3]
    python benchmarks/low_data.py --quick --out /tmp/low_data     # CPU check, < 10 minutes

``--quick``: tiny preset on generated synthetic scenes (48 train / 16 val images of 96 px), 2
pretraining epochs (priors updated every epoch), fractions 0.1 and 0.5, 3 seeds and the tiny
preset's ``finetune.epoch_scale=0.01`` (4 epochs at 10 %, 1 at 50 %). It shows that the protocol runs end to end; its AP says nothing
about the method (random backbone, minutes of training). docs/ablations.md records a run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

#: variant -> pretraining overrides (None: no detector pretraining).
VARIANTS: dict[str, list[str] | None] = {
    "joindet": [],
    "detreg": ["priors.source=selective_search", "priors.update=fixed"],
    "random_crops": ["priors.source=random_crops", "priors.update=fixed"],
    "none": None,
}
#: seeds of the low-data subsets: 42, 43, 44, ... (DETReg's default seed is 42).
FIRST_SEED = 42

QUICK_IMAGES, QUICK_VAL, QUICK_SIZE = 48, 16, 96
QUICK_SETTINGS = [
    f"model.test_size={QUICK_SIZE}",
    f"model.max_size={QUICK_SIZE}",
    f"model.train_size={QUICK_SIZE}",
    "schedule.epochs=2",
    "schedule.update_every=1",
    "finetune.epoch_scale=0.01",
]


def common_overrides(args: argparse.Namespace) -> list[str]:
    """Settings shared by pretraining and finetuning (CPU-friendly loaders, the user's --set)."""
    out = ["train.num_workers=0", "mine.shards=1", "mine.save_attention=false", "eval.priors=false"]
    if args.data_root:
        out.append(f"data.root={args.data_root}")
    return out + (QUICK_SETTINGS if args.quick else []) + list(args.set)


def pretrain(variant: str, args: argparse.Namespace) -> Path | None:
    """Pretrain ``variant`` into ``OUT/pretrain/VARIANT``; returns its last checkpoint (None for ``none``)."""
    from joindet.flows.pretrain import PlainSteps
    from joindet.pipeline.config import make_config
    from joindet.pipeline.data import open_dataset
    from joindet.pipeline.pretrain import drive_pretrain
    from joindet.pipeline.run_dir import RunDir

    overrides = VARIANTS[variant]
    if overrides is None:
        return None
    path = args.out / "pretrain" / variant
    if path.exists():
        run = RunDir.open(path)
    else:
        cfg = make_config(args.preset, args.dataset, [*common_overrides(args), *overrides])
        dataset = open_dataset(cfg.data.dataset, root=cfg.data.root, split=cfg.data.split)
        run = RunDir.create(path, cfg, dataset=dataset)
    with run.lock():
        drive_pretrain(run, PlainSteps(threads=1), evaluate=False)
    return run.checkpoint_path(run.last_checkpoint())


def finetune_cell(variant: str, init: Path | None, fraction: float, seed: int, args: argparse.Namespace) -> dict:
    """Finetune one (variant, fraction, seed) cell into ``OUT/finetune/...``; the JSON line's dict."""
    from joindet.pipeline.config import make_config
    from joindet.pipeline.stages.finetune import finetune

    t0 = time.perf_counter()
    cfg = make_config(
        args.preset,
        args.dataset,
        # one seed drives the subset, the new heads' initialisation and the augmentation (as in DETReg)
        [*common_overrides(args), f"finetune.fraction={fraction}", f"finetune.seed={seed}", f"train.seed={seed}"],
    )
    out = args.out / "finetune" / variant / f"f{fraction:g}-s{seed}"
    result = finetune(out, init, cfg) if not (out / "run.json").exists() else finetune(out, init)
    m = result.summary["metrics"]
    return {
        "variant": variant,
        "fraction": fraction,
        "seed": seed,
        "AP": _r(m["AP"]),
        "AP50": _r(m["AP50"]),
        "AP75": _r(m["AP75"]),
        "train_images": result.summary.get("num_train_images"),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def summarise(cells: list[dict]) -> list[dict]:
    """Mean and std (ddof 1; 0 with one seed) of AP/AP50/AP75 per (variant, fraction)."""
    groups: dict[tuple[str, float], list[dict]] = {}
    for c in cells:
        groups.setdefault((c["variant"], c["fraction"]), []).append(c)
    out = []
    for (variant, fraction), cs in groups.items():
        row: dict = {"variant": variant, "fraction": fraction, "seeds": len(cs)}
        for k in ("AP", "AP50", "AP75"):
            vals = [c[k] for c in cs]
            row[f"{k}_mean"] = _r(statistics.fmean(vals))
            row[f"{k}_std"] = _r(statistics.stdev(vals) if len(vals) > 1 else 0.0)
        out.append(row)
    return out


def plot(summary: list[dict], path: Path) -> None:
    """AP (mean, std error bars) against the labelled fraction, one line per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for variant in dict.fromkeys(r["variant"] for r in summary):
        rows = sorted((r for r in summary if r["variant"] == variant), key=lambda r: r["fraction"])
        ax.errorbar(
            [r["fraction"] * 100 for r in rows],
            [r["AP_mean"] * 100 for r in rows],
            yerr=[r["AP_std"] * 100 for r in rows],
            marker="o",
            capsize=3,
            label=variant,
        )
    ax.set_xscale("log")
    ax.set_xlabel("labelled images (% of the train split)")
    ax.set_ylabel("AP (%)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _r(x: float | None) -> float | None:
    return None if x is None else round(float(x), 4)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="work folder: data, runs, the plot")
    p.add_argument("--dataset", default="synthetic")
    p.add_argument("--data-root", default=None)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every run")
    p.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--fractions", nargs="*", type=float, default=None, help="default 0.01 0.1 (quick: 0.1 0.5)")
    p.add_argument("--seeds", type=int, default=3, help="subset seeds 42, 43, ...")
    p.add_argument("--quick", action="store_true", help="tiny preset, synthetic scenes, CPU budget")
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message="DetectorConfig.backbone_weights is not set")
    if args.quick:
        args.preset, args.dataset = "tiny", "synthetic"
        if args.data_root is None:
            from joindet.pipeline.data import generate_synthetic

            data = args.out / "data"
            if not (data / "synthetic.json").exists():
                generate_synthetic(data, QUICK_IMAGES, QUICK_SIZE, 0, QUICK_VAL, "jpg")
            args.data_root = str(data)
    fractions = args.fractions or ([0.1, 0.5] if args.quick else [0.01, 0.1])
    seeds = [FIRST_SEED + k for k in range(args.seeds)]
    args.out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    print(
        json.dumps(
            {
                "budget": {
                    "preset": args.preset,
                    "dataset": args.dataset,
                    "data_root": args.data_root,
                    "fractions": fractions,
                    "seeds": seeds,
                    "overrides": common_overrides(args),
                }
            }
        ),
        flush=True,
    )
    cells: list[dict] = []
    for variant in args.variants:
        t0 = time.perf_counter()
        init = pretrain(variant, args)
        print(json.dumps({"variant": variant, "pretrain_seconds": round(time.perf_counter() - t0, 1)}), flush=True)
        for fraction in fractions:
            for seed in seeds:
                cell = finetune_cell(variant, init, fraction, seed, args)
                cells.append(cell)
                print(json.dumps(cell), flush=True)
    summary = summarise(cells)
    plot_path = args.out / "low_data.png"
    if summary:
        plot(summary, plot_path)
    print(
        json.dumps(
            {
                "summary": summary,
                "plot": str(plot_path) if summary else None,
                "seconds": round(time.perf_counter() - t_start, 1),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
