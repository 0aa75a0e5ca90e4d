"""Shared setup of the stage tests: a tiny synthetic dataset, the tiny preset, runs and checkpoints.

Everything is small (8 training images and 4 validation images of 128 px, ResNet-18 tiny
preset at 128 px, 4 x 4 feature maps) so that a stage runs in a few seconds on a shared core.

No pretrained backbone can be downloaded here, so the backbone is random: its features are all
alike (cosine 0.5-0.85), so the tests use ``priors.tau=0.5`` to get non-degenerate attention maps
and hence region priors; the test checkpoint's class head has a zero bias so that about half
of the queries predict foreground and the instance path is exercised.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from joindet.detector import build_model
from joindet.pipeline.checkpoints import save_checkpoint
from joindet.pipeline.config import RunConfig, make_config
from joindet.pipeline.data import open_dataset
from joindet.pipeline.data.synthetic import generate_synthetic
from joindet.pipeline.run_dir import RunDir

NUM_IMAGES = 8
VAL_IMAGES = 4
SIZE = 128


def tiny_config(*overrides: str) -> RunConfig:
    """The tiny preset on 128 px images, 2 shards of mining, no attention maps (unless overridden)."""
    cfg = make_config(
        "tiny",
        "synthetic",
        [
            "mine.shards=2",
            "mine.batch_size=4",
            "mine.device=cpu",
            "mine.save_attention=false",
            "priors.tau=0.5",
            *overrides,
        ],
    )
    cfg.model = cfg.model.with_(test_size=SIZE, max_size=SIZE)
    return cfg


def new_run(path: Path, data_root: Path, cfg: RunConfig | None = None) -> RunDir:
    return RunDir.create(path, cfg or tiny_config(), dataset=open_dataset("synthetic", root=data_root))


def with_unreadable_image(synthetic_root: Path, tmp_path: Path, index: int) -> tuple[Any, int]:
    """A copy of the synthetic dataset under ``tmp_path/data`` whose ``index``-th image file is
    empty (unreadable): (the opened dataset, that image's id)."""
    root = tmp_path / "data"
    shutil.copytree(synthetic_root, root)
    ds = open_dataset("synthetic", root=root)
    broken = int(ds.image_ids()[index])
    (root / ds.file(broken)).write_bytes(b"")
    return ds, broken


def write_checkpoint(run: RunDir, epoch: int, seed: int = 0) -> Path:
    """A checkpoint in ``pipeline.checkpoints`` format from a freshly built (random) tiny model."""
    torch.manual_seed(seed)
    model = build_model(run.config.model)
    with torch.no_grad():
        model.class_embed.bias.zero_()  # undo the focal prior (p_fg = 0.01): some queries say foreground
    return save_checkpoint(
        run.checkpoint_path(epoch), model=model, epoch=epoch, config_digest=run.config.digest(), prior_version=0
    )


def copy_run(src: RunDir, dst: Path) -> RunDir:
    shutil.copytree(src.path, dst)
    return RunDir.open(dst)


def rewrite_config(run: RunDir, section: str, **changes: object) -> RunDir:
    """Rewrite run.json with some fields of ``section`` changed (as if the run had been created
    so; ``dataset`` changes the recorded dataset) and reopen the run from disk."""
    info = json.loads((run.path / "run.json").read_text())
    if section == "dataset":
        info["dataset"].update(changes)
    else:
        info["config"][section].update(changes)
        info["config_digest"] = RunConfig.from_dict(info["config"]).digest()
    (run.path / "run.json").write_text(json.dumps(info))
    return RunDir.open(run.path)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic") / "data"
    generate_synthetic(root, NUM_IMAGES, SIZE, seed=0, val_images=VAL_IMAGES)
    return root


@pytest.fixture(scope="session")
def initialised_run(tmp_path_factory: pytest.TempPathFactory, synthetic_root: Path) -> RunDir:
    """A run with R_0 committed and a checkpoint of epoch 1 (so version 2 can be mined).

    Session-wide and read-only: tests that write copy it with ``copy_run``.
    """
    from joindet.pipeline.stages import init_priors

    run = new_run(tmp_path_factory.mktemp("runs") / "base", synthetic_root)
    init_priors(run)
    write_checkpoint(run, 1)
    return run
