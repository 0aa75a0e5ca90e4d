"""COCO JSON export/import: pixel conversion, round trip, clipping and rejection rules."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from joindet.priors import BoxSet, StoreError
from joindet.priors.coco_io import (
    AGNOSTIC_CATEGORY_ID,
    agnostic_ground_truth,
    export_coco_dataset,
    export_coco_results,
    import_coco,
    read_coco,
)


def _images() -> pa.Table:
    return pa.table(
        {
            "image_id": pa.array([1, 2], pa.int64()),
            "file": ["a.jpg", "b.jpg"],
            "width": pa.array([200, 100], pa.int32()),
            "height": pa.array([100, 50], pa.int32()),
        }
    )


def _annotations(anns: list[dict]) -> dict:
    return {
        "images": [
            {"id": 1, "file_name": "a.jpg", "width": 200, "height": 100},
            {"id": 2, "file_name": "b.jpg", "width": 100, "height": 50},
        ],
        "annotations": anns,
        "categories": [{"id": 3, "name": "cat"}],
    }


def test_export_pixels_and_category() -> None:
    bs = BoxSet.from_arrays([1, 2], [[0.1, 0.2, 0.6, 0.8], [0, 0, 1, 1]], [0.9, 0.5])
    out = export_coco_results(bs, _images())
    assert out[0]["image_id"] == 1 and out[0]["category_id"] == AGNOSTIC_CATEGORY_ID == 0
    np.testing.assert_allclose(out[0]["bbox"], [20, 20, 100, 60], atol=1e-4)
    np.testing.assert_allclose(out[1]["bbox"], [0, 0, 100, 50])
    assert out[0]["score"] == pytest.approx(0.9)
    with pytest.raises(StoreError, match="image_id 5 is not in"):
        export_coco_results(BoxSet.from_arrays([5], [[0, 0, 1, 1]]), _images())


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([1, 2]),
            st.floats(0, 0.9),
            st.floats(0, 0.9),
            st.floats(0.01, 0.1),
            st.floats(0.01, 0.1),
            st.floats(0, 1),
        ),
        max_size=20,
    )
)
def test_export_import_round_trip(rows: list[tuple]) -> None:
    ids = [r[0] for r in rows]
    boxes = [[r[1], r[2], r[1] + r[3], r[2] + r[4]] for r in rows]
    bs = BoxSet.from_arrays(ids, np.array(boxes, np.float32).reshape(-1, 4), [r[5] for r in rows])
    back, images = import_coco(export_coco_results(bs, _images()), _images())
    assert images is not None and len(back) == len(bs)
    np.testing.assert_array_equal(back.image_ids, bs.image_ids)
    np.testing.assert_allclose(back.boxes, bs.boxes, atol=1e-6)
    np.testing.assert_allclose(back.scores, bs.scores, atol=1e-6)


def test_annotations_give_sizes_and_out_of_image_boxes_are_clipped_or_rejected() -> None:
    anns = [
        {"image_id": 1, "bbox": [20, 10, 40, 20]},  # inside: kept as is
        {"image_id": 1, "bbox": [-10, 90, 50, 30]},  # reaches outside: clipped to [0,90]-[40,100]
        {"image_id": 2, "bbox": [150, 10, 20, 20]},  # wholly outside: degenerate after clipping
        {"image_id": 2, "bbox": [10, 10, 0, 5]},  # zero width: degenerate
        {"image_id": 2, "bbox": [10, 10, -5, 5]},  # negative width: malformed
        {"image_id": 2, "bbox": [10, float("nan"), 5, 5]},  # NaN: malformed
        {"image_id": 2, "bbox": [1, 2, 3]},  # wrong length: malformed
        {"image_id": 2, "bbox": [0, 0, 10, 10], "score": "high"},  # bad score: malformed
    ]
    imp = read_coco(_annotations(anns))
    assert imp.is_annotations and imp.images.num_rows == 2
    assert imp.summary() == {
        "boxes_in_file": 8,
        "imported": 2,
        "clipped": 1,
        "rejected_malformed": 4,
        "rejected_degenerate": 2,
    }
    np.testing.assert_allclose(imp.boxes.boxes, [[0.1, 0.1, 0.3, 0.3], [0, 0.9, 0.2, 1.0]], atol=1e-6)
    assert (imp.boxes.boxes >= 0).all() and (imp.boxes.boxes <= 1).all()
    np.testing.assert_array_equal(imp.boxes.scores, [1, 1])


def test_results_json_needs_the_run_index() -> None:
    results = [{"image_id": 1, "bbox": [0, 0, 10, 10], "score": 0.3, "category_id": 1}]
    with pytest.raises(StoreError, match="results JSON, which has no image sizes"):
        import_coco(results)
    with pytest.raises(StoreError, match="image_id 9 is not in the run's image index"):
        import_coco([{**results[0], "image_id": 9}], _images())


def test_annotations_conflicting_with_run_index_refused() -> None:
    doc = _annotations([])
    doc["images"][0]["width"] = 201
    with pytest.raises(StoreError, match="image 1 has width 201 but the run's images.parquet says 200"):
        import_coco(doc, _images())


def test_malformed_documents() -> None:
    with pytest.raises(StoreError, match="needs 'images' and 'annotations'"):
        import_coco({"images": []})
    with pytest.raises(StoreError, match="needs id, width and height"):
        import_coco({"images": [{"id": 1}], "annotations": []})
    with pytest.raises(StoreError, match="record 0 is not an object"):
        import_coco([3], _images())


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([1, 2]),
            *[st.one_of(st.floats(-300, 300), st.sampled_from([float("nan"), float("inf")]))] * 4,
        ),
        max_size=25,
    )
)
@example([(1, 0.0, 0.0, 1.0, 4.3798139591324355e-139)])  # positive in pixels, zero once float32
def test_import_never_yields_out_of_image_boxes(rows: list[tuple]) -> None:
    results = [{"image_id": r[0], "bbox": list(r[1:]), "score": 0.5, "category_id": 1} for r in rows]
    imp = read_coco(results, _images())
    b = imp.boxes.boxes
    assert len(imp.boxes) + imp.rejected == imp.total == len(rows)
    assert np.isfinite(b).all() and (b >= 0).all() and (b <= 1).all()
    assert ((b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])).all() if len(b) else True


def _coco_eval(gt: dict, results: list[dict], use_cats: int) -> float:
    """AP of ``results`` against ``gt`` with pycocotools (the library users evaluate with)."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(results), "bbox")
        ev.params.useCats = use_cats
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0])


def test_exported_results_cannot_be_scored_as_a_ground_truth_class() -> None:
    """Priors equal to the ground truth: AP 1 against the ground truth relabelled to one class
    (the documented evaluation); against the raw ground truth AP 0 whatever useCats says, never a
    figure that looks plausible (category 0 is no class of a COCO-style file)."""
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [20, 20, 100, 60], "area": 6000, "iscrowd": 0},
        {"id": 2, "image_id": 2, "category_id": 2, "bbox": [10, 5, 50, 25], "area": 1250, "iscrowd": 0},
    ]
    gt = _annotations(anns) | {"categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    priors = BoxSet.from_arrays([1, 2], [[0.1, 0.2, 0.6, 0.8], [0.1, 0.1, 0.6, 0.6]], [0.9, 0.8])
    results = export_coco_results(priors, _images())
    for use_cats in (0, 1):
        assert _coco_eval(agnostic_ground_truth(gt), results, use_cats) == pytest.approx(1.0)
        assert _coco_eval(gt, results, use_cats) == 0.0
    assert gt["annotations"][1]["category_id"] == 2  # the input is not changed


def test_export_as_dataset_is_a_coco_annotations_file(tmp_path) -> None:
    import json

    from pycocotools.coco import COCO

    priors = BoxSet.from_arrays([1, 1], [[0.1, 0.2, 0.6, 0.8], [0.5, 0.5, 1, 1]], [0.9, 0.4])
    doc = export_coco_dataset(priors, _images(), description="v0004 of a run")
    path = tmp_path / "pseudo.json"
    path.write_text(json.dumps(doc))
    coco = COCO(str(path))
    assert coco.getCatIds() == [1] and coco.loadCats(1)[0]["name"] == "object"
    assert sorted(coco.getImgIds()) == [1, 2]  # image 2 has no prior and is still listed
    assert coco.loadImgs(2)[0]["file_name"] == "b.jpg"
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[1]))
    assert len(anns) == 2 and {a["category_id"] for a in anns} == {1} and {a["iscrowd"] for a in anns} == {0}
    np.testing.assert_allclose(anns[0]["bbox"], [20, 20, 100, 60], atol=1e-4)
    assert anns[0]["area"] == pytest.approx(6000, rel=1e-4) and anns[0]["score"] == pytest.approx(0.9)
    back = read_coco(doc)  # and it reads back as the same boxes
    np.testing.assert_allclose(back.boxes.boxes, priors.boxes, atol=1e-6)
