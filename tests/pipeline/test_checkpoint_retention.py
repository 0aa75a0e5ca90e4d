"""Checkpoint retention (train.keep_checkpoints): the newest N plus those a prior version is
mined with are kept; the rest are deleted as training goes, marker first."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from joindet.pipeline.checkpoints import epochs_to_prune, list_epochs, prune_checkpoints, save_checkpoint
from joindet.pipeline.config import make_config


def test_epochs_to_prune_keeps_the_newest_and_the_needed() -> None:
    assert epochs_to_prune(list(range(10)), 2, {4}) == [0, 1, 2, 3, 5, 6, 7]
    assert epochs_to_prune(list(range(10)), 2, set()) == list(range(8))
    assert epochs_to_prune([3, 1, 2], 5, set()) == []
    assert epochs_to_prune(list(range(10)), 0, set()) == []  # 0: keep every checkpoint


def test_prune_deletes_file_and_marker(tmp_path: Path) -> None:
    d = tmp_path / "checkpoints"
    for epoch in range(4):
        save_checkpoint(d / f"epoch-{epoch:04d}.pt", model=torch.nn.Linear(2, 2), epoch=epoch, config_digest="x")
    removed = prune_checkpoints(d, 1, {1})
    assert [p.name for p in removed] == ["epoch-0000.pt", "epoch-0002.pt"]
    assert list_epochs(d) == [1, 3]
    assert sorted(p.name for p in d.iterdir()) == [
        "epoch-0001.json",
        "epoch-0001.pt",
        "epoch-0003.json",
        "epoch-0003.pt",
    ]


def test_keep_checkpoints_default_and_validation() -> None:
    import pytest

    from joindet.pipeline.config import ConfigError

    cfg = make_config("tiny")
    assert cfg.train.keep_checkpoints == 2
    # a retention change is no change of results: the config digest (resume check) ignores it
    assert make_config("tiny", overrides=["train.keep_checkpoints=0"]).digest() == cfg.digest()
    with pytest.raises(ConfigError, match="keep_checkpoints"):
        make_config("tiny", overrides=["train.keep_checkpoints=-1"])


def test_training_keeps_the_newest_and_the_mining_checkpoints(tmp_path: Path) -> None:
    """5 epochs, versions mined after epochs 1 and 3 (update_every 2): keep 1 leaves epoch 4 (newest)
    and epochs 1 and 3 (they mine v2 and v4)."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent / "stages"))
    from train_fixtures import make_run

    from joindet.pipeline.stages import train

    warnings.filterwarnings("ignore", message="DetectorConfig.backbone_weights is not set")
    run = make_run(tmp_path, epochs=5, update_every=2, overrides=("train.keep_checkpoints=1", "train.max_images=2"))
    train(run, 5)
    assert list_epochs(run.path / "checkpoints") == [1, 3, 4]
    assert sorted(p.name for p in (run.path / "checkpoints").glob("*.pt")) == [
        "epoch-0001.pt",
        "epoch-0003.pt",
        "epoch-0004.pt",
    ]
