"""``joindet data synth`` and ``joindet data check`` through the click runner."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from click.testing import CliRunner
from pycocotools.coco import COCO

from joindet.flows.cli import main
from joindet.pipeline.data import open_dataset, render_scene, scene_rng


def test_synth_writes_a_coco_dataset_whose_boxes_match_the_objects(tmp_path: Path) -> None:
    out = tmp_path / "scenes"
    res = CliRunner().invoke(
        main, ["data", "synth", str(out), "--images", "6", "--size", "64", "--seed", "3", "--val-images", "2"]
    )
    assert res.exit_code == 0, res.output
    assert "wrote 6 train and 2 val images" in res.output
    coco = COCO(str(out / "annotations" / "instances_train.json"))
    assert len(coco.getImgIds()) == 6
    for image_id in coco.getImgIds():
        masks = render_scene(scene_rng(3, "train", image_id), 64).masks
        boxes = [a["bbox"] for a in coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))]
        expected = []
        for m in masks:
            ys, xs = np.nonzero(m)
            expected.append([xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1])
        assert boxes == expected
    assert len(open_dataset("synthetic", root=out, split="val")) == 2


def test_synth_refuses_an_existing_folder_cleanly(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "f").write_text("")
    res = CliRunner().invoke(main, ["data", "synth", str(tmp_path / "x"), "--images", "2"])
    assert res.exit_code == 1 and "not empty" in res.output and "Traceback" not in res.output


def test_check_reports_skipped_images(tmp_path: Path) -> None:
    out = tmp_path / "s"
    assert (
        CliRunner()
        .invoke(main, ["data", "synth", str(out), "--images", "3", "--size", "32", "--val-images", "0"])
        .exit_code
        == 0
    )
    res = CliRunner().invoke(main, ["data", "check", "--dataset", "synthetic", "--data-root", str(out)])
    assert res.exit_code == 0, res.output  # every image decodes
    (out / "train" / "000002.jpg").write_bytes(b"")
    res = CliRunner().invoke(main, ["data", "check", "--dataset", "synthetic", "--data-root", str(out)])
    assert res.exit_code == 1, res.output  # the command did not find what was asked: a usable dataset
    assert "3 images" in res.output and "1 would be skipped" in res.output and "000002.jpg: empty file" in res.output
    assert "1 of 3 images of synthetic (train) cannot be decoded" in res.output


def test_check_takes_annotations_like_set_data_annotations(tmp_path: Path) -> None:
    out = tmp_path / "s"
    CliRunner().invoke(main, ["data", "synth", str(out), "--images", "3", "--size", "32", "--val-images", "0"])
    ann = out / "annotations" / "instances_train.json"
    args = ["data", "check", "--dataset", "coco-json", "--annotations", str(ann), "--data-root", str(out / "train")]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "coco-json (train)" in res.output and "3 images" in res.output


def test_check_missing_dataset_is_one_clear_line(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("JOINDET_DATA", str(tmp_path))
    res = CliRunner().invoke(main, ["data", "check", "--dataset", "coco"])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "--dataset synthetic" in res.output and str(tmp_path / "coco") in res.output


def test_dataset_choices_match_the_registry() -> None:
    from joindet.flows.cli_types import DATASET_CHOICES
    from joindet.pipeline.data import DATASET_NAMES

    assert sorted(DATASET_CHOICES) == sorted(DATASET_NAMES)
