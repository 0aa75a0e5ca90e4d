"""init_priors by priors.source: v0 of the baselines (random crops, selective search, predictions),
the mined level and degenerate-map share in the manifest, and update=fixed keeping v0."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from joindet.pipeline.model_loading import initial_model
from joindet.pipeline.progress import RecordingProgress
from joindet.pipeline.run_dir import RunDir
from joindet.pipeline.stages import init_priors, mine, smooth
from joindet.pipeline.stages.image_batches import ImageBatches
from joindet.priors import random_crops, selective_search
from joindet.priors.sources import image_seed

from .stage_fixtures import NUM_IMAGES, new_run, synthetic_root, tiny_config, write_checkpoint  # noqa: F401

pytestmark = pytest.mark.filterwarnings("ignore:DetectorConfig.backbone_weights is not set")


def _per_image(boxes) -> np.ndarray:
    return np.bincount(boxes.image_ids)[np.unique(boxes.image_ids)]


def test_random_crops_v0_is_exactly_the_crops_and_fixed_keeps_it(tmp_path: Path, synthetic_root: Path) -> None:  # noqa: F811
    cfg = tiny_config("priors.source=random_crops", "priors.update=fixed", "priors.random_crops=25")
    assert cfg.priors.max_per_image == 20  # the cap of the tiny preset does not apply to the crops
    run = new_run(tmp_path / "run", synthetic_root, cfg)
    init_priors(run)
    v0 = run.store.read(0, "smoothed")
    assert len(np.unique(v0.image_ids)) == NUM_IMAGES
    assert (_per_image(v0) == 25).all()
    assert np.array_equal(v0.boxes, random_crops(run.image_ids(), 25, seed=0).boxes)
    assert run.store.manifest(0).stats["source"] == "random_crops"
    # later versions: crops of another seed are mined, fixed keeps v0
    for version in (2, 4):
        mine(run, version)
        smooth(run, version)
        later = run.store.read(version, "smoothed")
        assert np.array_equal(later.image_ids, v0.image_ids) and np.array_equal(later.boxes, v0.boxes)
        assert np.array_equal(later.scores, v0.scores)
        mined = run.store.read(version, "region")
        assert not np.array_equal(mined.boxes, v0.boxes)  # the test would pass trivially otherwise


def test_selective_search_v0_holds_its_boxes_and_fixed_keeps_them(tmp_path: Path, synthetic_root: Path) -> None:  # noqa: F811
    cfg = tiny_config("priors.source=selective_search", "priors.update=fixed")
    run = new_run(tmp_path / "run", synthetic_root, cfg)
    init_priors(run)
    v0 = run.store.read(0, "smoothed")
    ids = run.image_ids()
    assert np.array_equal(np.unique(v0.image_ids), np.sort(ids)) and run.store.manifest(0).stats["source"] == (
        "selective_search"
    )
    # each image's v0 is DETReg's top 30 of selective search on it, with the image's seed
    for image_id in ids.tolist():
        want = selective_search(run.dataset().load(image_id), max_boxes=30, seed=image_seed(0, image_id))
        assert len(want) == cfg.priors.random_crops == 30
        assert np.array_equal(v0.for_image(image_id).boxes, want)
    assert np.array_equal(run.store.read(0, "region").boxes, v0.boxes)
    # later versions: selective search with another order is mined, fixed keeps v0
    mine(run, 2)
    smooth(run, 2)
    later = run.store.read(2, "smoothed")
    assert np.array_equal(later.image_ids, v0.image_ids) and np.array_equal(later.boxes, v0.boxes)
    assert np.array_equal(later.scores, v0.scores)
    mined = run.store.read(2, "region")
    first = int(ids[0])
    assert np.array_equal(
        mined.for_image(first).boxes,
        selective_search(run.dataset().load(first), max_boxes=30, seed=image_seed(2, first)),
    )
    assert not np.array_equal(mined.boxes, v0.boxes)  # the test would pass trivially otherwise


def test_predictions_v0_is_the_untrained_models_top_boxes(tmp_path: Path, synthetic_root: Path) -> None:  # noqa: F811
    cfg = tiny_config("priors.source=predictions")
    run = new_run(tmp_path / "run", synthetic_root, cfg)
    init_priors(run)
    v0 = run.store.read(0, "smoothed")
    assert (_per_image(v0) <= cfg.priors.max_per_image).all() and len(v0) > 0
    # the same boxes straight from the initial model's outputs
    model = initial_model(run.config, torch.device("cpu"))
    batch = next(iter(ImageBatches(run.dataset(), run.image_ids()[:2], cfg.model.test_size, cfg.model.max_size, 2)))
    with torch.inference_mode():
        out = model(batch.images, batch.pad_mask)
    prob = out["pred_logits"].softmax(-1)[0, :, 1]
    best = int(prob.argmax())
    cx, cy, w, h = out["pred_boxes"][0, best].tolist()
    want = np.clip([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 0, 1)
    got = v0.for_image(int(batch.image_ids[0]))
    assert np.allclose(got.boxes[0], want, atol=1e-6)
    assert got.scores[0] == pytest.approx(float(prob[best]), abs=1e-6)


def test_eigen_v0_records_level_and_degenerate_share(tmp_path: Path, synthetic_root: Path) -> None:  # noqa: F811
    run = new_run(tmp_path / "run", synthetic_root)
    progress = RecordingProgress()
    init_priors(run, progress)
    logs = [e[1] for e in progress.events if e[0] == "log"]
    assert any("encoder level C3" in m for m in logs), logs  # printed at start
    stats = run.store.manifest(0).stats
    assert stats["source"] == "region+instance"
    assert stats["mined_level"] == {"index": 0, "name": "C3", "stride": 8}
    assert 0.0 <= stats["degenerate_maps"] <= 1.0


def test_random_crops_run_is_recorded_by_smooth(tmp_path: Path, synthetic_root: Path) -> None:  # noqa: F811
    run: RunDir = new_run(tmp_path / "run", synthetic_root, tiny_config("priors.source=random_crops"))
    init_priors(run)
    write_checkpoint(run, 1)
    mine(run, 2)
    smooth(run, 2)
    assert run.store.manifest(2).stats["source"] == "random_crops"


def test_mined_versions_record_level_and_degenerate_share(tmp_path: Path, synthetic_root: Path) -> None:  # noqa: F811
    run: RunDir = new_run(tmp_path / "run", synthetic_root)
    init_priors(run)
    write_checkpoint(run, 1)
    mine(run, 2)
    smooth(run, 2)
    stats = run.store.manifest(2).stats
    assert stats["mined_level"] == {"index": 0, "name": "C3", "stride": 8}
    assert 0.0 <= stats["degenerate_maps"] <= 1.0
