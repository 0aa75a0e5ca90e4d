"""coco_eval: the numpy per-image matching gives pycocotools' own records and numbers."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from joindet.pipeline.stages import coco_metrics
from joindet.pipeline.stages.coco_eval import GroundTruth, coco_params, evaluate_images, summarize
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


def _same_record(a: dict | None, b: dict | None) -> None:
    assert (a is None) == (b is None)
    if a is None:
        return
    assert set(a) == set(b)
    for key, value in a.items():
        if isinstance(value, (list, np.ndarray)):
            np.testing.assert_array_equal(np.asarray(value, np.float64), np.asarray(b[key], np.float64), err_msg=key)
        else:
            assert value == b[key], key


@pytest.mark.parametrize(("n_images", "per_image", "seed"), [(25, 40, 0), (12, 130, 1), (30, 1, 2), (8, 5, 3)])
def test_records_and_stats_equal_pycocotools(n_images: int, per_image: int, seed: int) -> None:
    gt, dets = make_case(n_images, per_image, seed, crowd=0.2)
    ids = [im["id"] for im in gt["images"]] + [999]  # an id without image entry or boxes
    reference = pycocotools_eval(gt, dets, ids)
    params = coco_params(ids)
    records = evaluate_images(GroundTruth.from_coco(gt), dets, params)
    assert len(records) == len(reference.evalImgs)
    for a, b in zip(reference.evalImgs, records):
        _same_record(a, b)
    if len(dets):
        np.testing.assert_allclose(summarize(records, params), reference.stats, rtol=0, atol=1e-12)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(1, 40), per_image=st.integers(1, 120))
def test_coco_metrics_equal_pycocotools_within_1e6(seed: int, n: int, per_image: int) -> None:
    gt, dets = make_case(n, per_image, seed)
    ids = [im["id"] for im in gt["images"]]
    subset = ids[::2]
    for image_ids in (ids, subset):
        chosen = dets[np.isin(dets[:, 0], image_ids)]
        if not len(chosen):  # pycocotools' loadRes refuses no results; the stage answers 0 itself
            continue
        reference = pycocotools_eval(gt, chosen, image_ids).stats
        ours = coco_metrics(gt, dets, image_ids)
        for name, i in zip(METRICS, (0, 1, 2, 6, 7, 8)):
            expected = None if reference[i] < 0 else reference[i]
            assert (ours[name] is None) == (expected is None), name
            if expected is not None:
                assert ours[name] == pytest.approx(expected, abs=1e-6), name


def test_blocks_of_images_give_the_same_records(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    module = importlib.import_module("joindet.pipeline.stages.coco_eval")
    gt, dets = make_case(20, 30, 7)
    params = coco_params([im["id"] for im in gt["images"]])
    whole = evaluate_images(GroundTruth.from_coco(gt), dets, params)
    monkeypatch.setattr(module, "_CELLS_PER_BLOCK", 1)  # one image per block
    for a, b in zip(whole, evaluate_images(GroundTruth.from_coco(gt), dets, params)):
        _same_record(a, b)
