"""The smooth stage's version equals what the previous implementation wrote: boxes, scores, churn
and statistics (the previous churn was a per-image Hungarian loop, redone here as the reference)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from joindet.pipeline.run_dir import RunDir
from joindet.pipeline.stages import smooth
from joindet.priors import BoxSet, match_boxes, update_priors
from joindet.priors.store.stats import kind_stats

from .stage_fixtures import copy_run, initialised_run, synthetic_root  # noqa: F401
from .test_smooth import mined_run  # noqa: F401

pytestmark = pytest.mark.filterwarnings("ignore:DetectorConfig.backbone_weights is not set")


def reference_churn(prev: BoxSet, cur: BoxSet, iou_thr: float) -> tuple[int, float]:
    """The previous churn: per image, ``match_boxes`` (Hungarian on the whole IoU matrix) ->
    (matched pairs, their summed IoU)."""
    matched, total = 0, 0.0
    for image_id in np.union1d(prev.image_ids, cur.image_ids):
        _, _, iou = match_boxes(prev.for_image(image_id).boxes, cur.for_image(image_id).boxes, iou_thr)
        matched += len(iou)
        total += float(iou.sum())
    return matched, total


def test_version_equals_the_previous_implementation(tmp_path: Path, mined_run: RunDir) -> None:  # noqa: F811
    run = copy_run(mined_run, tmp_path / "run")
    p = run.config.priors
    # The previous stage: each kind read from every shard separately, concatenated, Box Smooth.
    staged = {k: run.store.read_staged(2, k) for k in ("region", "instance")}
    parent = run.store.read(0, "smoothed")
    expected = update_priors(
        parent,
        BoxSet.concat([staged["region"], staged["instance"]]),
        p.update,
        momentum=p.momentum,
        iou_thr=p.iou_thr,
        min_score=p.min_score,
        max_per_image=p.max_per_image,
    ).with_kind("smoothed")
    smooth(run, 2)
    m = run.store.manifest(2)
    smoothed = run.store.read(2, "smoothed")
    assert smoothed.equals(expected)
    np.testing.assert_array_equal(smoothed.scores, expected.scores)
    for k in ("region", "instance"):
        assert run.store.read(2, k).equals(staged[k].with_kind(k))
    n = run.images().num_rows
    for k, bs in {**staged, "smoothed": expected}.items():
        assert m.stats[k] == kind_stats(bs, n), k
    count, total = reference_churn(parent, expected, 0.5)
    assert m.stats["churn"]["matched"] == count
    assert m.stats["churn"]["added"] == len(expected) - count
    assert m.stats["churn"]["removed"] == len(parent) - count
    assert m.stats["churn"]["mean_iou"] == pytest.approx(round(total / count, 6), abs=1e-6)
    assert count > 0, "the test data must exercise matching"
