"""Each dataset layout on small fixtures built here; index, ground truth, errors."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pytest
from pycocotools.coco import COCO

from joindet.pipeline.data import (
    AnnotationError,
    DatasetNotFoundError,
    ImageLoadError,
    open_dataset,
)
from joindet.storage_schema import IMAGES_SCHEMA


def _img(path: Path, h: int, w: int, value: int = 90) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((h, w, 3), value, np.uint8))


def _check_index(table: pa.Table) -> None:
    assert table.schema.equals(IMAGES_SCHEMA)
    ids = table.column("image_id").to_numpy()
    assert np.all(np.diff(ids) > 0)


def _coco_dict(files: list[tuple[int, str, int, int]], with_boxes: bool = True) -> dict:
    d: dict = {"images": [{"id": i, "file_name": f, "width": w, "height": h} for i, f, w, h in files]}
    if with_boxes:
        d["annotations"] = [{"id": 1, "image_id": files[0][0], "category_id": 1, "bbox": [1, 2, 3, 4]}]
        d["categories"] = [{"id": 1, "name": "thing"}]
    return d


def test_coco_layout(tmp_path: Path) -> None:
    root = tmp_path / "coco"
    _img(root / "val2017" / "000000000139.jpg", 12, 16)
    _img(root / "val2017" / "000000000285.jpg", 20, 10)
    (root / "annotations").mkdir()
    coco = _coco_dict([(285, "000000000285.jpg", 10, 20), (139, "000000000139.jpg", 16, 12)])
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(coco))
    ds = open_dataset("coco", root=root, split="val", cache_dir=tmp_path / "cache")
    _check_index(ds.index())
    assert ds.index().to_pylist() == [
        {"image_id": 139, "file": "val2017/000000000139.jpg", "width": 16, "height": 12},
        {"image_id": 285, "file": "val2017/000000000285.jpg", "width": 10, "height": 20},
    ]
    assert ds.load(285).shape == (20, 10, 3)
    gt = ds.coco_ground_truth()
    assert {im["id"] for im in gt["images"]} == set(ds.image_ids().tolist())
    assert gt["annotations"][0]["iscrowd"] == 0 and gt["annotations"][0]["area"] == 12
    assert ds.categories() == [{"id": 1, "name": "thing"}]
    # the cached index is reused and equal
    assert list((tmp_path / "cache").glob("coco-index-*.parquet"))
    again = open_dataset("coco", root=root, split="val", cache_dir=tmp_path / "cache")
    assert again.fingerprint() == ds.fingerprint()
    # worker processes receive datasets by pickling
    copy = pickle.loads(pickle.dumps(ds))
    assert copy.load(139).shape == (12, 16, 3) and copy.fingerprint() == ds.fingerprint()


def test_data_root_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _img(tmp_path / "folder" / "a.png", 5, 7)
    monkeypatch.setenv("JOINDET_DATA", str(tmp_path))
    ds = open_dataset("folder")
    assert ds.root == tmp_path / "folder" and len(ds) == 1


def test_missing_dataset_says_where_it_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOINDET_DATA", str(tmp_path / "nowhere"))
    monkeypatch.chdir(tmp_path)
    for name in ["coco", "voc", "imagenet", "folder"]:
        with pytest.raises(DatasetNotFoundError) as info:
            open_dataset(name)
        msg = str(info.value)
        assert str(tmp_path / "nowhere" / name) in msg
        assert "--data-root" in msg and "JOINDET_DATA" in msg and "--dataset synthetic" in msg
        assert isinstance(info.value, FileNotFoundError)


def test_unknown_dataset_name() -> None:
    with pytest.raises(ValueError, match="choose one of"):
        open_dataset("cocoa")


def test_coco_json_with_subfolders_and_no_boxes(tmp_path: Path) -> None:
    _img(tmp_path / "imgs" / "cam1" / "a.jpg", 8, 6)
    _img(tmp_path / "imgs" / "cam2" / "b.png", 9, 4)
    ann = tmp_path / "mine.json"
    ann.write_text(json.dumps({"images": [{"id": 5, "file_name": "cam2/b.png"}, {"id": 2, "file_name": "cam1/a.jpg"}]}))
    ds = open_dataset("coco-json", root=tmp_path / "imgs", annotations=ann)
    _check_index(ds.index())
    # sizes come from the headers when the JSON has none
    assert ds.index().to_pylist()[1] == {"image_id": 5, "file": "cam2/b.png", "width": 4, "height": 9}
    assert ds.coco_ground_truth() is None and ds.categories() == []
    assert ds.load(2).shape == (8, 6, 3)


def test_coco_json_needs_annotations() -> None:
    with pytest.raises(ValueError, match="--annotations"):
        open_dataset("coco-json")


@pytest.mark.parametrize("bad", ["../outside.jpg", "/etc/passwd", "a/../../b.jpg", "C:\\x\\y.jpg", "..\\up.jpg"])
def test_path_escape_is_refused_naming_the_json(tmp_path: Path, bad: str) -> None:
    ann = tmp_path / "evil.json"
    ann.write_text(json.dumps({"images": [{"id": 1, "file_name": bad, "width": 2, "height": 2}]}))
    ds = open_dataset("coco-json", root=tmp_path, annotations=ann)
    with pytest.raises(AnnotationError) as info:
        ds.index()
    assert str(ann) in str(info.value) and "data root" in str(info.value)


@pytest.mark.parametrize(
    "text, problem",
    [
        ('{"images": [', "malformed JSON"),
        ("[1, 2]", "top level"),
        ('{"annotations": []}', "'images'"),
        ('{"images": [{"file_name": "a.jpg"}]}', "'id'"),
        ('{"images": [{"id": 1}]}', "file_name"),
        ('{"images": [], "annotations": [{"image_id": 1, "bbox": [1, 2]}]}', "bbox"),
        ('{"images": [{"id": 1, "file_name": "a"}, {"id": 1, "file_name": "b"}]}', "more than once"),
    ],
)
def test_malformed_json_names_file_and_problem(tmp_path: Path, text: str, problem: str) -> None:
    ann = tmp_path / "broken.json"
    ann.write_text(text)
    with pytest.raises(AnnotationError) as info:
        open_dataset("coco-json", root=tmp_path, annotations=ann).index()
    assert str(ann) in str(info.value) and problem in str(info.value)


def _voc(root: Path) -> None:
    dk = root / "VOCdevkit"
    for year, names in [("2007", ["000005", "000007"]), ("2012", ["2008_000008"])]:
        base = dk / f"VOC{year}"
        (base / "ImageSets" / "Main").mkdir(parents=True)
        (base / "Annotations").mkdir(parents=True)
        (base / "ImageSets" / "Main" / "trainval.txt").write_text("\n".join(names) + "\n")
        for n in names:
            _img(base / "JPEGImages" / f"{n}.jpg", 30, 40)
            (base / "Annotations" / f"{n}.xml").write_text(
                "<annotation><size><width>40</width><height>30</height><depth>3</depth></size>"
                "<object><name>dog</name><difficult>0</difficult><bndbox><xmin>3</xmin><ymin>4</ymin>"
                "<xmax>12</xmax><ymax>24</ymax></bndbox></object>"
                "<object><name>person</name><difficult>1</difficult><bndbox><xmin>1</xmin><ymin>1</ymin>"
                "<xmax>40</xmax><ymax>30</ymax></bndbox></object></annotation>"
            )
    (dk / "VOC2007" / "ImageSets" / "Main" / "test.txt").write_text("000007\n")


def test_voc_layout(tmp_path: Path) -> None:
    _voc(tmp_path)
    ds = open_dataset("voc", root=tmp_path, split="train")
    _check_index(ds.index())
    assert ds.image_ids().tolist() == [2007000005, 2007000007, 2008000008]
    assert ds.file(2008000008) == "VOCdevkit/VOC2012/JPEGImages/2008_000008.jpg"
    assert ds.load(2007000005).shape == (30, 40, 3)
    gt = ds.coco_ground_truth()
    dog = [a for a in gt["annotations"] if a["image_id"] == 2007000005 and a["category_id"] == 12][0]
    assert dog["bbox"] == [2.0, 3.0, 10.0, 21.0] and dog["iscrowd"] == 0
    assert sum(a["iscrowd"] for a in gt["annotations"]) == 3  # the difficult persons are ignored
    coco = COCO()
    coco.dataset = gt
    coco.createIndex()
    assert sorted(coco.getImgIds()) == ds.image_ids().tolist()
    assert pickle.loads(pickle.dumps(ds)).load(2008000008).shape == (30, 40, 3)
    test = open_dataset("voc", root=tmp_path, split="test")
    assert test.image_ids().tolist() == [2007000007]
    with pytest.raises(DatasetNotFoundError):
        open_dataset("voc", root=tmp_path, split="2012-val")


def test_voc_malformed_xml_names_the_file(tmp_path: Path) -> None:
    _voc(tmp_path)
    bad = tmp_path / "VOCdevkit" / "VOC2007" / "Annotations" / "000005.xml"
    bad.write_text("<annotation><size>")
    with pytest.raises(AnnotationError, match="000005.xml"):
        open_dataset("voc", root=tmp_path, split="trainval").index()


def test_imagenet_layout_and_class_list(tmp_path: Path) -> None:
    for cls, n in [("n01440764", 2), ("n01443537", 1), ("n99999999", 1)]:
        for i in range(n):
            _img(tmp_path / "train" / cls / f"{cls}_{i}.JPEG", 6 + i, 8)
    ds = open_dataset("imagenet", root=tmp_path)
    _check_index(ds.index())
    assert len(ds) == 4 and ds.coco_ground_truth() is None
    assert [c["name"] for c in ds.categories()] == ["n01440764", "n01443537", "n99999999"]
    assert ds.index().to_pylist()[1] == {
        "image_id": 2,
        "file": "train/n01440764/n01440764_1.JPEG",
        "width": 8,
        "height": 7,
    }
    lst = tmp_path / "in100.txt"
    lst.write_text("# ImageNet-100 subset\nn01443537\n\nn01440764\n")
    sub = open_dataset("imagenet", root=tmp_path, class_list=lst)
    assert len(sub) == 3 and all("n99999999" not in f for f in sub.index().column("file").to_pylist())
    lst.write_text("n00000000\n")
    with pytest.raises(AnnotationError, match="n00000000"):
        open_dataset("imagenet", root=tmp_path, class_list=lst).index()


def test_folder_layout_recursive_stable_ids_and_fingerprint(tmp_path: Path) -> None:
    _img(tmp_path / "b" / "deep" / "x.PNG", 3, 4)
    _img(tmp_path / "a.jpg", 5, 6)
    (tmp_path / "notes.txt").write_text("not an image")
    _img(tmp_path / ".hidden" / "h.jpg", 5, 6)
    (tmp_path / "broken.jpg").write_bytes(b"")
    ds = open_dataset("folder", root=tmp_path)
    _check_index(ds.index())
    rows = ds.index().to_pylist()
    assert [r["file"] for r in rows] == ["a.jpg", "b/deep/x.PNG", "broken.jpg"]
    assert rows[2]["width"] == 0  # unreadable header: quarantined when loaded
    with pytest.raises(ImageLoadError, match="empty file"):
        ds.load(3)
    fp = ds.fingerprint()
    assert fp == open_dataset("folder", root=tmp_path).fingerprint() and len(fp) == 64
    _img(tmp_path / "c.jpg", 5, 6)
    assert open_dataset("folder", root=tmp_path).fingerprint() != fp
    with pytest.raises(KeyError):
        ds.load(99)


def test_synthetic_generates_into_the_cache_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOINDET_CACHE", str(tmp_path))
    ds = open_dataset("synthetic")
    assert len(ds) == 96 and str(ds.root).startswith(str(tmp_path / "synthetic"))
    val = open_dataset("synthetic", split="val")
    assert len(val) == 32 and val.load(1).shape == (160, 160, 3)
    stamp = (ds.root / "train" / "000001.jpg").stat().st_mtime_ns
    assert open_dataset("synthetic").fingerprint() == ds.fingerprint()
    assert (ds.root / "train" / "000001.jpg").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="train and val"):
        open_dataset("synthetic", split="test")


def test_folder_header_sizes_are_cached_until_a_file_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import joindet.pipeline.data.folders as folders

    root, cache = tmp_path / "imgs", tmp_path / "cache"
    _img(root / "a.png", 5, 6)
    _img(root / "b.png", 7, 8)
    calls: list[Path] = []
    real = folders.header_size
    monkeypatch.setattr(folders, "header_size", lambda p: calls.append(p) or real(p))
    first = open_dataset("folder", root=root, cache_dir=cache).index()
    assert len(calls) == 2
    assert open_dataset("folder", root=root, cache_dir=cache).index().equals(first) and len(calls) == 2
    _img(root / "b.png", 9, 3, value=10)  # rewritten: new size on disk, new header
    os.utime(root / "b.png", ns=(1, 1))
    again = open_dataset("folder", root=root, cache_dir=cache).index().to_pylist()
    assert len(calls) == 3 and again[1]["width"] == 3 and again[1]["height"] == 9


def test_synthetic_refuses_a_foreign_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(DatasetNotFoundError, match="is not a synthetic dataset"):
        open_dataset("synthetic", root=tmp_path)
    assert (tmp_path / "mine.txt").read_text() == "precious"


def test_a_missing_data_root_is_an_error_naming_it_and_nothing_is_generated(tmp_path: Path) -> None:
    typo = tmp_path / "cocoo"
    for name in ("synthetic", "coco", "folder"):
        with pytest.raises(DatasetNotFoundError, match=f"--data-root {typo} does not exist"):
            open_dataset(name, root=typo)
    assert not typo.exists()


def test_synthetic_is_not_generated_into_an_empty_data_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="joindet data synth"):
        open_dataset("synthetic", root=tmp_path)
    assert list(tmp_path.iterdir()) == []
