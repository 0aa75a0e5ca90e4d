"""evaluate: class-agnostic COCOeval of priors and proposals; conversions; clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from joindet.pipeline.data import open_dataset
from joindet.pipeline.run_dir import RunDir
from joindet.pipeline.stages import coco_metrics, evaluate_priors, evaluate_proposals
from joindet.pipeline.stages.evaluate import METRICS, detections_array
from joindet.priors import BoxSet
from joindet.storage_schema import IMAGES_SCHEMA

from .stage_fixtures import copy_run, initialised_run, synthetic_root, tiny_config  # noqa: F401

pytestmark = pytest.mark.filterwarnings("ignore:DetectorConfig.backbone_weights is not set")


@pytest.fixture(scope="module")
def val_gt(synthetic_root: Path) -> dict:  # noqa: F811
    return open_dataset("synthetic", root=synthetic_root, split="val").coco_ground_truth()


def _gt_detections(gt: dict, shift: float = 0.0) -> np.ndarray:
    """The ground-truth boxes as detections [N, 7], optionally shifted right by shift * width."""
    rows = [[a["image_id"], a["bbox"][0] + shift * a["bbox"][2], *a["bbox"][1:], 1.0, 1] for a in gt["annotations"]]
    return np.asarray(rows, np.float64)


def _sane(m: dict) -> None:
    assert set(m) == set(METRICS)
    assert all(0.0 <= m[k] <= 1.0 for k in METRICS), m
    assert m["AR@1"] <= m["AR@10"] <= m["AR@100"]
    assert m["AP75"] <= m["AP50"]


def test_perfect_detections_score_one_and_none_score_zero(val_gt: dict) -> None:
    perfect = coco_metrics(val_gt, _gt_detections(val_gt))
    assert perfect["AP"] == pytest.approx(1.0) and perfect["AR@100"] == pytest.approx(1.0)
    shifted = coco_metrics(val_gt, _gt_detections(val_gt, shift=0.3))  # IoU 0.54: counts at 0.5 only
    _sane(shifted)
    assert shifted["AP50"] == pytest.approx(1.0) and shifted["AP75"] == 0.0 and shifted["AP"] < 0.2
    assert coco_metrics(val_gt, np.zeros((0, 7))) == dict.fromkeys(METRICS, 0.0)
    # restricted to one image: the other images' boxes are not counted as misses
    first = val_gt["images"][0]["id"]
    one = _gt_detections(val_gt)
    assert coco_metrics(val_gt, one[one[:, 0] == first], [first])["AR@100"] == pytest.approx(1.0)


def test_evaluation_is_class_agnostic(val_gt: dict) -> None:
    dets = _gt_detections(val_gt)
    dets[:, 6] = 99  # a category the ground truth does not have
    assert coco_metrics(val_gt, dets)["AP"] == pytest.approx(1.0)


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(1, 150))
def test_metrics_of_random_detections_are_sane(val_gt: dict, seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    ids = np.array([im["id"] for im in val_gt["images"]])
    xy = rng.uniform(0, 100, (n, 2))
    wh = rng.uniform(1, 60, (n, 2))
    dets = np.column_stack([rng.choice(ids, n), xy, wh, rng.uniform(0, 1, n), np.ones(n)])
    _sane(coco_metrics(val_gt, dets))


def test_detections_array_converts_to_pixels_and_checks_ids() -> None:
    images = pa.table(
        {"image_id": [3, 7], "file": ["a", "b"], "width": [200, 100], "height": [100, 50]}, schema=IMAGES_SCHEMA
    )
    boxes = BoxSet.from_arrays([7, 3], [[0.1, 0.2, 0.5, 1.0], [0.0, 0.0, 1.0, 0.5]], [0.9, 0.4])
    rows = detections_array(boxes, images)
    np.testing.assert_allclose(rows, [[3, 0, 0, 200, 50, 0.4, 1], [7, 10, 10, 40, 40, 0.9, 1]], rtol=1e-6, atol=1e-4)
    assert detections_array(BoxSet.empty(), images).shape == (0, 7)
    with pytest.raises(ValueError, match="image id 5"):
        detections_array(BoxSet.from_arrays([5], [[0, 0, 1, 1]]), images)


def test_evaluate_priors_scores_every_version_and_writes_json(tmp_path: Path, initialised_run: RunDir) -> None:  # noqa: F811
    run = copy_run(initialised_run, tmp_path / "run")
    out = evaluate_priors(run)
    assert list(out) == ["v0000"] and list(out["v0000"]) == ["smoothed"]
    _sane(out["v0000"]["smoothed"])
    both = evaluate_priors(run, versions=[0], kinds=("region", "smoothed", "instance"))
    assert list(both["v0000"]) == ["region", "smoothed"]  # v0 has no instance kind
    _sane(both["v0000"]["region"])
    written = json.loads((run.path / "metrics" / "priors.json").read_text())
    assert written.pop("sample")["scored_images"] == {"v0000": run.images().num_rows}
    assert written == both


def test_evaluate_proposals_of_a_checkpoint_on_the_eval_split(tmp_path: Path, initialised_run: RunDir) -> None:  # noqa: F811
    run = copy_run(initialised_run, tmp_path / "run")
    result = evaluate_proposals(run)
    assert result["epoch"] == 1 and result["split"] == "val" and result["images"] == 4 and result["failed"] == 0
    _sane(result["metrics"])
    assert result["metrics"]["AR@100"] > 0, "100 boxes per image of a 4 x 4 grid must hit something"
    written = json.loads((run.path / "metrics" / "proposals-epoch-0001-val.json").read_text())
    assert written == result
    run.checkpoint_path(1).unlink()
    with pytest.raises(FileNotFoundError, match="epoch-0001.pt does not exist"):
        evaluate_proposals(run)


def test_datasets_without_ground_truth_are_refused(tmp_path: Path, synthetic_root: Path) -> None:  # noqa: F811
    folder = tmp_path / "images" / "train"
    shutil.copytree(synthetic_root / "train", folder)
    ds = open_dataset("folder", root=tmp_path / "images")
    run = RunDir.create(tmp_path / "run", tiny_config(), dataset=ds)
    with pytest.raises(ValueError, match="no ground-truth boxes"):
        evaluate_priors(run)


def test_ground_truth_committed_as_priors_scores_one(tmp_path: Path, initialised_run: RunDir) -> None:  # noqa: F811
    """The whole chain pixels -> normalised store rows -> pixels for COCOeval loses nothing."""
    run = copy_run(initialised_run, tmp_path / "run")
    gt = run.dataset().coco_ground_truth()
    size = {im["id"]: (im["width"], im["height"]) for im in gt["images"]}
    ids, boxes = [], []
    for a in gt["annotations"]:
        x, y, w, h = a["bbox"]
        iw, ih = size[a["image_id"]]
        ids.append(a["image_id"])
        boxes.append([x / iw, y / ih, (x + w) / iw, (y + h) / ih])
    run.store.commit(2, {"smoothed": BoxSet.from_arrays(ids, boxes)}, parent=0)
    m = evaluate_priors(run, versions=[2])["v0002"]["smoothed"]
    assert m["AP"] == pytest.approx(1.0) and m["AR@1"] <= m["AR@10"] == pytest.approx(1.0)
