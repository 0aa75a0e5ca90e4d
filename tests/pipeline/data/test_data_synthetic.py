"""Synthetic scenes: COCO files pycocotools loads, boxes that match the drawn objects, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from joindet.pipeline.data import generate_synthetic, open_dataset, render_scene, scene_rng, synthetic_categories
from joindet.pipeline.progress import RecordingProgress


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "ds"
    generate_synthetic(out, num_images=24, size=96, seed=5, val_images=6, image_format="png")
    return out


def test_layout_and_pycocotools_load(synth: Path) -> None:
    for split, n in [("train", 24), ("val", 6)]:
        coco = COCO(str(synth / "annotations" / f"instances_{split}.json"))
        assert sorted(coco.getImgIds()) == list(range(1, n + 1))
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == [c["name"] for c in synthetic_categories()]
        per_image = [len(coco.getAnnIds(imgIds=[i])) for i in coco.getImgIds()]
        assert min(per_image) >= 1 and max(per_image) <= 8
        for i in coco.getImgIds():
            assert (synth / split / coco.imgs[i]["file_name"]).is_file()
    assert json.loads((synth / "synthetic.json").read_text())["seed"] == 5


def test_boxes_are_the_boxes_of_the_rendered_object_masks(synth: Path) -> None:
    coco = COCO(str(synth / "annotations" / "instances_train.json"))
    ds = open_dataset("synthetic", root=synth, split="train")
    sizes = []
    for image_id in ds.image_ids().tolist():
        scene = render_scene(scene_rng(5, "train", image_id), 96)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
        assert len(anns) == len(scene.masks)
        # the file on disk is exactly the rendered picture (PNG is lossless)
        assert np.array_equal(ds.load(image_id), scene.image)
        for ann, mask, cat in zip(anns, scene.masks, scene.categories):
            ys, xs = np.nonzero(mask)
            assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert ann["category_id"] == cat and ann["area"] == mask.sum()
            assert np.array_equal(mask_utils.decode(ann["segmentation"]).astype(bool), mask)
            sizes.append(max(ann["bbox"][2], ann["bbox"][3]) / 96)
        # the objects are what changed the picture: strongly changed pixels lie in the boxes
        diff = np.abs(scene.image.astype(np.float32) - scene.background).max(axis=2)
        union = scene.masks.any(axis=0)
        assert (diff[union] > 40).mean() > 0.6
        near = cv2.dilate(union.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)  # blur reach: 2 px
        assert not (diff[~near] > 40).any()
    assert min(sizes) < 0.15 and max(sizes) > 0.4  # small to large objects


def test_objects_contrast_with_their_surroundings() -> None:
    """Saliency: an object's mean colour is far from the background around it."""
    contrasts = []
    for i in range(40):
        scene = render_scene(scene_rng(0, "train", i), 128)
        for mask in scene.masks:
            ys, xs = np.nonzero(mask)
            y0, y1, x0, x1 = max(ys.min() - 8, 0), ys.max() + 9, max(xs.min() - 8, 0), xs.max() + 9
            ring = np.zeros_like(mask)
            ring[y0:y1, x0:x1] = True
            ring &= ~scene.masks.any(axis=0)
            if ring.sum() < 20:
                continue
            img = scene.image.astype(np.float32)
            contrasts.append(np.linalg.norm(img[mask].mean(0) - img[ring].mean(0)))
    contrasts = np.array(contrasts)
    assert len(contrasts) > 60
    assert np.median(contrasts) > 80 and np.mean(contrasts > 35) > 0.9


def test_determinism_and_independence_of_count(tmp_path: Path, synth: Path) -> None:
    again = generate_synthetic(tmp_path / "again", num_images=3, size=96, seed=5, val_images=0, image_format="png")
    for name in ["000001.png", "000003.png"]:
        assert (again / "train" / name).read_bytes() == (synth / "train" / name).read_bytes()
    assert not (again / "val").exists() and not (again / "annotations" / "instances_val.json").exists()
    other = render_scene(scene_rng(6, "train", 1), 96).image
    assert not np.array_equal(other, render_scene(scene_rng(5, "train", 1), 96).image)


def test_refuses_non_empty_output_and_bad_arguments(tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty"):
        generate_synthetic(tmp_path / "full", num_images=2, size=32)
    assert (tmp_path / "full" / "x").read_text() == "keep me"
    with pytest.raises(ValueError, match="--images"):
        generate_synthetic(tmp_path / "a", num_images=0)
    with pytest.raises(ValueError, match="--size"):
        generate_synthetic(tmp_path / "b", num_images=1, size=8)
    with pytest.raises(ValueError, match="format"):
        generate_synthetic(tmp_path / "c", num_images=1, image_format="gif")
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temporary leftovers


def test_empty_existing_folder_is_used_and_progress_reported(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    rec = RecordingProgress()
    generate_synthetic(tmp_path / "empty", num_images=4, size=32, val_images=2, progress=rec)
    assert len(list((tmp_path / "empty" / "train").glob("*.jpg"))) == 4
    starts = [e[1] for e in rec.events if e[0] == "start"]
    assert starts == [("synthetic train", 4), ("synthetic val", 2)]
    assert sum(e[1][0] for e in rec.events if e[0] == "advance") == 6
