"""The smooth stage's version equals what the previous implementation wrote: boxes, scores, churn
and statistics (the previous churn was a per-image Hungarian loop, redone here as the reference)."""

from __future__ import annotations

import importlib
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


@pytest.mark.parametrize("strategy", ["box_smooth", "direct", "nms", "fixed"])
def test_update_in_chunks_equals_one_update(monkeypatch: pytest.MonkeyPatch, strategy: str) -> None:
    smooth_module = importlib.import_module("joindet.pipeline.stages.smooth")
    rng = np.random.default_rng(4)

    def boxes(n: int, kind: str) -> BoxSet:
        xy = rng.random((n, 2)) * 0.6
        return BoxSet.from_arrays(
            rng.integers(0, 23, n), np.concatenate([xy, xy + 0.1 + rng.random((n, 2)) * 0.3], 1), rng.random(n), kind
        )

    prev, cur, r0 = boxes(400, "smoothed"), boxes(500, "region"), boxes(50, "smoothed")
    settings = {"momentum": 0.45, "iou_thr": 0.55, "min_score": 0.05, "max_per_image": 12}
    whole = update_priors(prev, cur, strategy, r0=r0, **settings)
    monkeypatch.setattr(smooth_module, "UPDATE_CHUNK_IMAGES", 5)
    chunked = smooth_module.update_in_chunks(prev, cur, strategy, r0=r0, **settings)
    assert chunked.equals(whole) and len(whole) > 0
