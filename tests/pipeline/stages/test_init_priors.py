"""init_priors: version 0 (region + smoothed), skip / force, quarantine, progress, cap_per_image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from joindet.pipeline.progress import RecordingProgress
from joindet.pipeline.run_dir import RunDir
from joindet.pipeline.stages import init_priors
from joindet.pipeline.stages.init_priors import cap_per_image
from joindet.priors import BoxSet

from .stage_fixtures import NUM_IMAGES, initialised_run, new_run, synthetic_root, tiny_config, with_unreadable_image  # noqa: F401

pytestmark = pytest.mark.filterwarnings("ignore:DetectorConfig.backbone_weights is not set")


def test_commits_version_0_with_region_and_smoothed(initialised_run: RunDir) -> None:  # noqa: F811
    run = initialised_run
    store = run.store
    assert store.versions() == [0]
    manifest = store.manifest(0)
    assert manifest.kinds == ["region", "smoothed"] and manifest.parent is None
    assert manifest.config_digest == run.config.digest()
    region, smoothed = store.read(0, "region"), store.read(0, "smoothed")
    assert len(region) > 0, "the test setup must produce region priors (see stage_fixtures)"
    assert set(region.kind_names()) == {"region"} and set(smoothed.kind_names()) == {"smoothed"}
    assert np.isin(region.image_ids, run.image_ids()).all()
    assert (region.boxes >= 0).all() and (region.boxes <= 1).all()
    assert ((region.boxes[:, 2] > region.boxes[:, 0]) & (region.boxes[:, 3] > region.boxes[:, 1])).all()
    assert ((region.scores > 0) & (region.scores <= 1)).all()
    # smoothed = region with the score floor and the per-image cap of the config
    p = run.config.priors
    assert smoothed.equals(cap_per_image(region, p.min_score, p.max_per_image).with_kind("smoothed"))


def test_is_skipped_when_committed_and_force_moves_aside(tmp_path: Path, synthetic_root: Path) -> None:  # noqa: F811
    run = new_run(tmp_path / "run", synthetic_root)
    progress = RecordingProgress()
    first = init_priors(run, progress)
    assert not first.skipped and first.summary["images"] == NUM_IMAGES
    starts = [e for e in progress.events if e[0] == "start"]
    assert starts == [("start", ("init_priors R_0", NUM_IMAGES))]
    assert sum(e[1][0] for e in progress.events if e[0] == "advance") == NUM_IMAGES
    assert progress.events[-1] == ("end", first.summary)
    before = run.store.read(0, "region")

    again = init_priors(run)
    assert again.skipped and again.summary == {"version": 0}

    forced = init_priors(run, force=True)
    assert not forced.skipped
    assert run.store.read(0, "region").equals(before)  # deterministic
    assert len(list((run.path / "priors" / "_replaced").iterdir())) == 1


def test_unreadable_images_are_quarantined_and_skipped(tmp_path: Path, synthetic_root: Path) -> None:  # noqa: F811
    ds, broken = with_unreadable_image(synthetic_root, tmp_path, 3)
    run = RunDir.create(tmp_path / "run", tiny_config(), dataset=ds)
    progress = RecordingProgress()
    result = init_priors(run, progress)
    assert result.summary["quarantined"] == 1 and result.summary["images"] == NUM_IMAGES - 1
    q = run.quarantine().to_pylist()
    assert [(r["image_id"], r["file"]) for r in q] == [(broken, ds.file(broken))]
    assert "empty" in q[0]["reason"] or "0 bytes" in q[0]["reason"]
    assert broken not in run.store.read(0, "region").image_ids
    assert any(e[0] == "log" and str(broken) in e[1] for e in progress.events)
    assert run.store.manifest(0).stats["quarantined"] == 1


def _boxsets() -> st.SearchStrategy[BoxSet]:
    def build(rows: list[tuple[int, float, float]]) -> BoxSet:
        ids = np.array([r[0] for r in rows], np.int64)
        lo = np.array([r[1] for r in rows], np.float32).reshape(-1)
        boxes = np.stack([lo, lo, lo + 0.1, lo + 0.1], 1) if rows else np.zeros((0, 4), np.float32)
        return BoxSet.from_arrays(ids, boxes, np.array([r[2] for r in rows], np.float32), "region")

    row = st.tuples(st.integers(0, 4), st.floats(0, 0.875, width=32), st.sampled_from([0.0, 0.01, 0.3, 0.5, 0.9, 1.0]))
    return st.lists(row, max_size=40).map(build)


@settings(max_examples=60, deadline=None)
@given(boxes=_boxsets(), min_score=st.sampled_from([0.0, 0.05, 0.5]), cap=st.sampled_from([None, 0, 1, 3]))
def test_cap_per_image_keeps_the_best_boxes_of_each_image(boxes: BoxSet, min_score: float, cap: int | None) -> None:
    out = cap_per_image(boxes, min_score, cap)
    assert (np.diff(out.image_ids) >= 0).all()
    assert (out.scores >= min_score).all()
    for image_id in np.unique(boxes.image_ids):
        mine = out.for_image(image_id)
        eligible = np.sort(boxes.for_image(image_id).scores[boxes.for_image(image_id).scores >= min_score])[::-1]
        expected = eligible if cap is None else eligible[:cap]
        assert np.array_equal(mine.scores, expected)  # best first, ties kept
        for b in mine.boxes:  # every kept box is one of the input boxes of that image
            assert (boxes.for_image(image_id).boxes == b).all(axis=1).any()
