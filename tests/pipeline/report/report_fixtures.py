"""A real tiny run for the report tests: 6 synthetic 128-px images (4 x 4 feature maps), two versions, three epochs.

Built with the stages themselves (init_priors, train, mine, smooth, evaluate_proposals), with the
random backbone and ``priors.tau=0.5`` so that the attention maps are not degenerate (see
tests/pipeline/stages/stage_fixtures.py for why), and attention maps saved for the strip.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from joindet.pipeline.config import make_config
from joindet.pipeline.data import generate_synthetic, open_dataset
from joindet.pipeline.run_dir import RunDir

NUM_IMAGES = 6
SIZE = 128


def tiny_run(base: Path) -> RunDir:
    """Versions 0 and 1 committed, checkpoints of epochs 0 and 1, proposals of epoch 1 on val."""
    from joindet.pipeline import stages

    data = base / "data"
    generate_synthetic(data, NUM_IMAGES, SIZE, 0, 3, "jpg")
    cfg = make_config(
        "tiny",
        "synthetic",
        [
            "schedule.epochs=2",
            "schedule.update_every=1",
            "train.num_workers=0",
            "train.batch_size=3",
            "mine.shards=2",
            "mine.batch_size=3",
            "mine.device=cpu",
            "train.device=cpu",
            "mine.save_attention=true",
            "priors.tau=0.5",
            f"data.root={data}",
        ],
    )
    cfg.model = cfg.model.with_(test_size=SIZE, max_size=SIZE, train_size=(SIZE,), crop_size=SIZE)
    run = RunDir.create(base / "run", cfg, dataset=open_dataset("synthetic", root=data, split="train"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        stages.init_priors(run)
        stages.train(run, 1)
        stages.mine(run, 1)
        stages.smooth(run, 1)
        stages.train(run, 2)
    return run
