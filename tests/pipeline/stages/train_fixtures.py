"""A tiny run for the train/finetune tests: 6 synthetic 96-px images, tiny preset, v0 priors."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from joindet.pipeline.config import make_config
from joindet.pipeline.data import generate_synthetic, open_dataset
from joindet.pipeline.run_dir import RunDir
from joindet.priors import BoxSet

NUM_IMAGES = 6


def synthetic_root(base: Path) -> Path:
    data = base / "data"
    if not (data / "synthetic.json").exists():
        generate_synthetic(data, NUM_IMAGES, 96, 0, 4, "jpg")
    return data


def random_priors(ids: np.ndarray, per_image: int = 3, seed: int = 0) -> BoxSet:
    """``per_image`` random boxes (normalised xyxy, 10-50 % of each side) for every image id."""
    rng = np.random.default_rng(seed)
    n = len(ids) * per_image
    xy = rng.uniform(0.0, 0.5, (n, 2))
    wh = rng.uniform(0.1, 0.5, (n, 2))
    return BoxSet.from_arrays(np.repeat(ids, per_image), np.hstack([xy, xy + wh]), rng.uniform(0.3, 1.0, n))


def make_run(base: Path, epochs: int = 2, update_every: int = 1, overrides: tuple[str, ...] = ()) -> RunDir:
    """A run at ``base/run`` over the synthetic train split with version 0 committed."""
    data = synthetic_root(base)
    cfg = make_config(
        "tiny",
        "synthetic",
        [
            "train.num_workers=0",
            "train.batch_size=2",
            f"schedule.epochs={epochs}",
            f"schedule.update_every={update_every}",
            f"data.root={data}",
            *overrides,
        ],
    )
    run = RunDir.create(base / "run", cfg, dataset=open_dataset("synthetic", root=data, split="train"))
    if not run.store.versions():
        run.store.commit(0, {"smoothed": random_priors(run.image_ids())})
    return run


warnings.filterwarnings("ignore", message="DetectorConfig.backbone_weights is not set")
