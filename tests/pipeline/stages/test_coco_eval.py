"""coco_eval: faster-coco-eval's COCOeval, fed as coco_eval feeds it, gives pycocotools' numbers."""

from __future__ import annotations

import contextlib
import gc
import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from joindet.pipeline.stages import coco_metrics
from joindet.pipeline.stages.coco_eval import GroundTruth, coco_stats
from joindet.pipeline.stages.evaluate import METRICS


def make_case(n_images: int, dets_per_image: int, seed: int, crowd: float = 0.1) -> tuple[dict, np.ndarray]:
    """A COCO dict (3 categories, some crowd boxes, areas that differ from w x h, one image
    without boxes) and detections [N, 7]: 30% jittered ground truth, scores rounded (ties)."""
    rng = np.random.default_rng(seed)
    images = [{"id": i + 10, "width": 640, "height": 480} for i in range(n_images)]
    anns = []
    for im in images[1:]:
        for _ in range(rng.poisson(6)):
            w, h = np.exp(rng.uniform(np.log(3), np.log(300), 2))
            box = [float(rng.uniform(0, 500)), float(rng.uniform(0, 400)), float(w), float(h)]
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": im["id"],
                    "category_id": int(rng.integers(1, 4)),
                    "bbox": box,
                    "area": float(w * h * rng.uniform(0.4, 1.0)),
                    "iscrowd": int(rng.random() < crowd),
                }
            )
    n = n_images * dets_per_image
    img = rng.integers(10, 10 + n_images, n).astype(np.float64)
    xywh = np.column_stack([rng.uniform(0, 500, n), rng.uniform(0, 400, n), np.exp(rng.uniform(1, 5.7, (n, 2)))])
    if anns:
        near = rng.random(n) < 0.3
        pick = rng.integers(0, len(anns), n)
        xywh[near] = np.asarray([anns[k]["bbox"] for k in pick[near]]).reshape(-1, 4) * rng.normal(
            1, 0.05, (int(near.sum()), 4)
        )
        img[near] = [anns[k]["image_id"] for k in pick[near]]
    dets = np.column_stack([img, xywh, np.round(rng.random(n), 2), rng.integers(1, 4, n)])
    return {"images": images, "annotations": anns, "categories": [{"id": c} for c in (1, 2, 3)]}, dets


def pycocotools_eval(gt: dict, dets: np.ndarray, image_ids: list[int]) -> COCOeval:
    """Plain pycocotools, as the evaluate stage ran it before: one category, loadRes, evaluate."""
    anns = [{**a, "category_id": 1} for a in gt["annotations"]]
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"images": gt["images"], "annotations": anns, "categories": [{"id": 1, "name": "object"}]}
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(np.column_stack([dets[:, :6], np.ones(len(dets))])), "bbox")
        ev.params.useCats = 0
        ev.params.maxDets = [1, 10, 100]
        ev.params.imgIds = image_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


@pytest.mark.parametrize(("n_images", "per_image", "seed"), [(25, 40, 0), (12, 130, 1), (30, 1, 2), (8, 5, 3)])
def test_stats_equal_pycocotools(n_images: int, per_image: int, seed: int) -> None:
    """All 12 stats: crowd boxes, areas unlike w x h (area ranges), an image without boxes, an id
    without image entry, tied scores, more detections per image than maxDets (130)."""
    gt, dets = make_case(n_images, per_image, seed, crowd=0.2)
    ids = [im["id"] for im in gt["images"]] + [999]
    reference = pycocotools_eval(gt, dets, ids).stats
    np.testing.assert_allclose(coco_stats(GroundTruth(gt), dets, np.asarray(ids)), reference, rtol=0, atol=1e-6)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(1, 40), per_image=st.integers(1, 120))
def test_coco_metrics_equal_pycocotools_within_1e6(seed: int, n: int, per_image: int) -> None:
    gt, dets = make_case(n, per_image, seed)
    ids = [im["id"] for im in gt["images"]]
    subset = ids[::2]
    for image_ids in (ids, subset):
        chosen = dets[np.isin(dets[:, 0], image_ids)]
        if not len(chosen):  # pycocotools' loadRes refuses no results (see the test below)
            continue
        reference = pycocotools_eval(gt, chosen, image_ids).stats
        ours = coco_metrics(gt, dets, image_ids)
        for name, i in zip(METRICS, (0, 1, 2, 6, 7, 8)):
            expected = None if reference[i] < 0 else reference[i]
            assert (ours[name] is None) == (expected is None), name
            if expected is not None:
                assert ours[name] == pytest.approx(expected, abs=1e-6), name


def test_no_detections_score_zero_where_there_is_a_box_else_none() -> None:
    gt, _ = make_case(6, 1, 4, crowd=0.0)
    crowd = {**gt, "annotations": [{**a, "iscrowd": 1} for a in gt["annotations"]]}
    none = np.zeros((0, 7))
    assert coco_metrics(gt, none) == dict.fromkeys(METRICS, 0.0)
    assert coco_metrics(crowd, none) == dict.fromkeys(METRICS, None)
    assert coco_metrics(gt, none, [gt["images"][0]["id"]]) == dict.fromkeys(METRICS, None)  # image without boxes


def test_ground_truth_fills_defaults_and_leaves_the_callers_dicts_and_the_collector_alone() -> None:
    gt = {
        "images": [{"id": 1, "width": 50, "height": 50}],
        "annotations": [{"id": 7, "image_id": 1, "category_id": 3, "bbox": [0, 0, 10, 20]}],
        "categories": [{"id": 3}],
    }
    truth = GroundTruth(gt)
    assert truth.coco.anns[7] == {
        "id": 7,
        "image_id": 1,
        "category_id": 1,
        "bbox": [0.0, 0.0, 10.0, 20.0],
        "area": 200.0,
        "iscrowd": 0,
    }
    assert coco_stats(truth, np.array([[1, 0, 0, 10, 20, 0.5, 3]]), np.array([1]))[0] == pytest.approx(1.0)
    assert gc.isenabled()  # the collector paused while feeding COCOeval is back on
    assert gt["annotations"][0] == {"id": 7, "image_id": 1, "category_id": 3, "bbox": [0, 0, 10, 20]}
