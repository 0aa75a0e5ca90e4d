"""TensorBoard event files of a run (``pipeline/tensorboard_log.py``), read back with tensorboard's
own event reader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from fault_run import SETTINGS

from joindet.flows.cli import main
from joindet.pipeline.tensorboard_log import log_epoch, log_version, tensorboard_dir

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")

#: Two update rounds of one epoch: versions 0, 1, 2 and checkpoints of epochs 0, 1, 2 (the fault
#: run's settings, one epoch more).
TWO_ROUNDS = [s for s in SETTINGS if not s.startswith("schedule.epochs=")] + ["schedule.epochs=3"]


def _events(run: Path) -> event_accumulator.EventAccumulator:
    acc = event_accumulator.EventAccumulator(str(tensorboard_dir(run)), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    return acc


def _scalars(acc: event_accumulator.EventAccumulator, tag: str) -> dict[int, float]:
    return {e.step: e.value for e in acc.Scalars(tag)}


def test_epoch_and_version_records_are_written_as_scalars_and_images(tmp_path: Path) -> None:
    record = {
        "epoch": 3,
        "loss": 1.5,
        "losses": {"loss_ce": 0.5, "loss_bbox": 0.25, "loss_emb": float("nan")},
        "lr": 2e-4,
        "images_per_s": 12.5,
        "prior_version": 2,
        "time": "2026-12-03T10:00:00+00:00",
    }
    written = log_epoch(tmp_path, record)
    assert "train/loss_emb" not in written and "train/time" not in written
    stats = {"boxes_per_image": 7.25, "churn": {"matched": 10, "added": 3, "removed": 2, "mean_iou": None}}
    metrics = {"v0002": {"smoothed": {"AR@100": 0.125, "AP": 0.01}}}
    image = np.zeros((40, 60, 3), np.uint8)
    log_version(tmp_path, 2, stats, metrics, [(image, np.array([[0.1, 0.2, 0.5, 0.9]]))])

    acc = _events(tmp_path)
    assert _scalars(acc, "train/loss") == {3: 1.5}
    assert _scalars(acc, "train/loss_bbox") == {3: 0.25}
    assert _scalars(acc, "train/lr")[3] == pytest.approx(2e-4)
    assert _scalars(acc, "train/images_per_s") == {3: 12.5}
    assert _scalars(acc, "priors/boxes_per_image") == {2: 7.25}
    assert _scalars(acc, "priors/AR@100") == {2: 0.125}
    assert _scalars(acc, "priors/churn/added") == {2: 3.0}
    assert "priors/churn/mean_iou" not in acc.Tags()["scalars"]
    [picture] = acc.Images("priors/images/0")
    assert picture.step == 2 and (picture.width, picture.height) == (60, 40)


@pytest.mark.slow
def test_pretrain_with_tensorboard_logs_every_epoch_and_version(tmp_path: Path) -> None:
    from joindet.pipeline.data.synthetic import generate_synthetic

    data = generate_synthetic(tmp_path / "synthetic", num_images=8, size=64, val_images=2)
    run = tmp_path / "run"
    args = ["flow", "run", "pretrain", "--dataset", "synthetic", "--data-root", str(data), "--preset", "tiny"]
    args += ["--run-dir", str(run), "--quiet", "--threads", "1", "--no-prefect"]
    for override in TWO_ROUNDS + ["train.tensorboard=true"]:
        args += ["--set", override]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    acc = _events(run)
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/images_per_s", "train/loss_bbox", "priors/boxes_per_image"} <= tags
    assert sorted(_scalars(acc, "train/loss")) == [0, 1, 2]
    assert sorted(_scalars(acc, "priors/boxes_per_image")) == [0, 1, 2]
    assert sorted(_scalars(acc, "priors/AR@100")) == [0, 1, 2]  # synthetic data has ground truth
    assert sorted(_scalars(acc, "priors/churn/matched")) == [1, 2]  # v0 has no parent
    assert len(acc.Images("priors/images/0")) == 3
