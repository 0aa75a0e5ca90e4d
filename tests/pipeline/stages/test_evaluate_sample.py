"""Prior evaluation on a fixed sample of the split: setting, drawing, recording, skipping."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from joindet.pipeline.config import ConfigError, make_config
from joindet.pipeline.pretrain import drive_pretrain
from joindet.pipeline.run_dir import RunDir
from joindet.pipeline.stages import coco_metrics, evaluate_priors
from joindet.pipeline.stages.evaluate import (
    boxes_of_images,
    detections_array,
    prior_sample,
    sample_image_ids,
    sample_size,
)
from joindet.priors import BoxSet

from .stage_fixtures import copy_run, initialised_run, synthetic_root  # noqa: F401
from .test_coco_eval import pycocotools_eval

pytestmark = pytest.mark.filterwarnings("ignore:DetectorConfig.backbone_weights is not set")


def _with_eval(run: RunDir, **changes: Any) -> RunDir:
    info = json.loads((run.path / "run.json").read_text())
    info["config"]["eval"].update(changes)
    (run.path / "run.json").write_text(json.dumps(info))
    return RunDir.open(run.path)


def test_setting_and_drawing_the_sample() -> None:
    assert sample_size("all") is None and sample_size(" ALL ") is None
    assert sample_size("5000") == 5000 and sample_size(12) == 12
    for bad in ("0", "-3", "half", "1.5"):
        with pytest.raises(ValueError, match="sample_images"):
            sample_size(bad)
    assert make_config("tiny", "synthetic", ["eval.sample_images=all"]).eval.sample_images == "all"
    assert make_config("tiny", "synthetic").eval.sample_images == "5000"
    with pytest.raises(ConfigError, match="sample_images"):
        make_config("tiny", "synthetic", ["eval.sample_images=zero"])
    # evaluation settings do not change a run's results: resuming with others is allowed
    a, b = make_config("tiny", "synthetic"), make_config("tiny", "synthetic", ["eval.sample_images=7", "eval.priors=0"])
    assert a.digest() == b.digest()

    ids = np.arange(100, 1100, 3)
    s = sample_image_ids(ids[::-1], 50, seed=4)
    assert len(s) == 50 and (np.diff(s) > 0).all() and np.isin(s, ids).all()
    np.testing.assert_array_equal(s, sample_image_ids(ids, 50, seed=4))  # same draw every time
    assert not np.array_equal(s, sample_image_ids(ids, 50, seed=5))
    np.testing.assert_array_equal(sample_image_ids(ids, 10_000, 0), ids)  # smaller split: all of it
    np.testing.assert_array_equal(sample_image_ids(ids, None, 0), ids)

    boxes = BoxSet.from_arrays([1, 1, 2, 5, 5, 5, 9], np.tile([[0, 0, 0.5, 0.5]], (7, 1)), np.arange(7))
    picked = boxes_of_images(boxes, np.array([1, 3, 5]))
    assert picked.image_ids.tolist() == [1, 1, 5, 5, 5] and picked.scores.tolist() == [0, 1, 3, 4, 5]


def test_tiny_split_is_evaluated_whole_and_recorded(tmp_path: Path, initialised_run: RunDir) -> None:  # noqa: F811
    run = copy_run(initialised_run, tmp_path / "run")
    out = evaluate_priors(run)
    everything = run.image_ids()
    np.testing.assert_array_equal(prior_sample(run), everything)  # 8 images < 5000: the whole split
    gt = run.dataset().coco_ground_truth()
    dets = detections_array(run.store.read(0), run.images())
    assert out["v0000"]["smoothed"] == coco_metrics(gt, dets, everything)
    record = json.loads((run.path / "metrics" / "priors.json").read_text())["sample"]
    assert record["image_ids"] == everything.tolist() and record["seed"] == 0
    assert record["sample_images"] == "5000" and record["scored_images"] == {"v0000": len(everything)}


def test_a_sample_scores_the_same_images_for_every_version(tmp_path: Path, initialised_run: RunDir) -> None:  # noqa: F811
    run = _with_eval(copy_run(initialised_run, tmp_path / "run"), sample_images="3", sample_seed=1)
    sample = prior_sample(run)
    assert len(sample) == 3
    v0 = run.store.read(0)
    run.store.commit(2, {"smoothed": v0}, parent=0)
    out = evaluate_priors(run)
    assert out["v0000"] == out["v0002"]
    gt = run.dataset().coco_ground_truth()
    dets = detections_array(v0, run.images())
    expected = pycocotools_eval(gt, dets[np.isin(dets[:, 0], sample)], sample.tolist()).stats
    got = out["v0002"]["smoothed"]
    assert got["AP"] == pytest.approx(expected[0], abs=1e-12) and got["AR@100"] == pytest.approx(expected[8], abs=1e-12)
    record = json.loads((run.path / "metrics" / "priors.json").read_text())["sample"]
    assert record["image_ids"] == sample.tolist() and record["seed"] == 1 and record["split_images"] == 8
    # a quarantined image leaves the sample's scoring, not the sample
    run.add_quarantine([(int(sample[0]), "x.png", "unreadable")])
    evaluate_priors(run, versions=[2])
    record = json.loads((run.path / "metrics" / "priors.json").read_text())["sample"]
    assert record["image_ids"] == sample.tolist() and record["scored_images"] == {"v0000": 3, "v0002": 2}


class _RecordingSteps:
    """Steps that do nothing but record which were called (the plan sees a finished run)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def init_shards(self, run: RunDir, shard_ids: list[int]) -> list:
        self.calls.append("init shards")
        return []

    def init(self, run: RunDir) -> None:
        self.calls.append("init")

    def train(self, run: RunDir, end_epoch: int) -> None:
        self.calls.append("train")

    def mine(self, run: RunDir, version: int, shard_ids: list[int]) -> list:
        return []

    def smooth(self, run: RunDir, version: int) -> None:
        self.calls.append("smooth")

    def evaluate(self, run: RunDir, version: int) -> dict:
        self.calls.append(f"evaluate {version}")
        return {}

    def publish(self, run: RunDir, report: Any) -> None:
        pass


@pytest.mark.parametrize("priors", [True, False])
def test_eval_priors_false_skips_prior_evaluation(tmp_path: Path, initialised_run: RunDir, priors: bool) -> None:  # noqa: F811
    base = copy_run(initialised_run, tmp_path / "run")
    for v in (0,):
        assert base.store.has_version(v)
    run = _with_eval(base, priors=priors)
    (run.path / "priors" / "v0000" / "manifest.json").rename(run.path / "v0.json")  # v0 is "new" again
    steps = _RecordingSteps()
    with run.lock():
        drive_pretrain(run, steps)
    assert ("evaluate 0" in steps.calls) == priors
