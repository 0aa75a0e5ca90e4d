"""``joindet priors ...``: every command, its JSON output, and one-line errors (never a traceback)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner

from joindet.flows.cli import main
from joindet.priors import BoxSet, PriorStore, write_images_table
from joindet.priors.store.attention_maps import AttentionStore


def _boxes(seed: int, n: int = 12) -> BoxSet:
    rng = np.random.default_rng(seed)
    xy = rng.random((n, 2)) * 0.5
    return BoxSet.from_arrays(rng.integers(1, 4, n), np.concatenate([xy, xy + 0.3], 1), rng.random(n))


@pytest.fixture()
def run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    write_images_table(
        run,
        pa.table(
            {
                "image_id": [1, 2, 3],
                "file": ["1.png", "2.png", "3.png"],
                "width": pa.array([40, 40, 40], pa.int32()),
                "height": pa.array([30, 30, 30], pa.int32()),
            }
        ),
    )
    store = PriorStore(run)
    store.commit(0, {"region": _boxes(0).with_kind("region"), "smoothed": _boxes(0)})
    store.commit(10, {"smoothed": _boxes(1)}, parent=0)
    return run


def invoke(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(main, ["priors", *args])
    assert "Traceback" not in res.output and "Traceback" not in (res.stderr or "")
    if res.exception and not isinstance(res.exception, SystemExit):
        raise res.exception
    return res.exit_code, res.stdout, res.stderr


def test_ls_table_and_json(run: Path) -> None:
    code, out, _ = invoke("ls", str(run))
    assert code == 0 and "v0000" in out and "v0010" in out
    code, out, _ = invoke("ls", str(run), "--json")
    rows = json.loads(out)
    assert [r["version"] for r in rows] == [0, 10]
    assert rows[0]["kinds"] == {"region": 12, "smoothed": 12} and rows[1]["parent"] == 0
    assert set(rows[1]["churn"]) == {"matched", "added", "removed", "mean_iou"}


def test_show_version_and_image(run: Path) -> None:
    code, out, _ = invoke("show", str(run))
    assert code == 0 and "v0010" in out and "smoothed" in out
    code, out, _ = invoke("show", str(run), "--version", "0", "--image", "2", "--kind", "region", "--json")
    doc = json.loads(out)
    expected = _boxes(0).for_image(2)
    assert len(doc["boxes"]) == len(expected) and all(b["kind"] == "region" for b in doc["boxes"])


def test_diff_counts(run: Path) -> None:
    code, out, _ = invoke("diff", str(run), "0", "10", "--json")
    doc = json.loads(out)
    assert doc["matched"] + doc["removed"] == 12 and doc["matched"] + doc["added"] == 12
    code, out, _ = invoke("diff", str(run), "0", "0", "--json")
    assert json.loads(out)["added"] == 0 and json.loads(out)["mean_iou"] == 1.0
    code, out, _ = invoke("diff", str(run), "0", "10")
    assert code == 0 and "matched" in out


def test_export_import_round_trip_and_clipping(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "v10.json"
    code, _, err = invoke("export", str(run), "--version", "10", "-o", str(out))
    assert code == 0 and "wrote 12 boxes" in err
    results = json.loads(out.read_text())
    assert all(r["category_id"] == 0 and len(r["bbox"]) == 4 for r in results)
    results.append({"image_id": 1, "bbox": [35, 25, 10, 10], "score": 0.5, "category_id": 1})  # clipped
    results.append({"image_id": 1, "bbox": [45, 0, 5, 5], "score": 0.5, "category_id": 1})  # outside: rejected
    out.write_text(json.dumps(results))
    code, text, _ = invoke("import", str(run), str(out), "--version", "20", "--parent", "10")
    assert code == 0 and "imported 13 of 14" in text and "clipped to the image: 1" in text and "1 empty" in text
    back = PriorStore(run).read(20)
    assert len(back) == 13 and back.boxes.max() <= 1.0
    np.testing.assert_allclose(back.for_image(1).boxes[-1], [35 / 40, 25 / 30, 1, 1], atol=1e-6)
    m = PriorStore(run).manifest(20)
    assert m.stats["import"]["rejected_degenerate"] == 1 and m.stats["churn"]["removed"] == 0
    code, _, err = invoke("import", str(run), str(out), "--version", "20")
    assert code == 1 and "already committed" in err
    code, _, err = invoke("import", str(run), str(out), "--version", "20", "--force")
    assert code == 0 and "moved the existing v0020" in err


def test_import_annotations_creates_run(tmp_path: Path) -> None:
    ann = {
        "images": [{"id": 5, "file_name": "a.jpg", "width": 100, "height": 50}],
        "annotations": [{"image_id": 5, "bbox": [10, 10, 20, 20], "category_id": 3}],
    }
    f = tmp_path / "ann.json"
    f.write_text(json.dumps(ann))
    new = tmp_path / "fresh"
    code, text, _ = invoke("import", str(new), str(f), "--version", "0")
    assert code == 0 and (new / "images.parquet").exists()
    np.testing.assert_allclose(PriorStore(new).read(0).boxes, [[0.1, 0.2, 0.3, 0.6]], atol=1e-6)
    code, _, err = invoke(
        "import", str(tmp_path / "other"), str(tmp_path / "ann.json").replace("ann", "res"), "--version", "0"
    )
    assert code == 2  # click: the file does not exist


def test_import_results_into_missing_run_is_one_line(tmp_path: Path) -> None:
    f = tmp_path / "res.json"
    f.write_text(json.dumps([{"image_id": 1, "bbox": [0, 0, 1, 1], "score": 1, "category_id": 1}]))
    code, _, err = invoke("import", str(tmp_path / "none"), str(f), "--version", "0")
    assert code == 1 and err.count("\n") == 1 and "import the dataset's annotations JSON first" in err


def test_verify_ok_then_bad_file_named(run: Path) -> None:
    code, out, _ = invoke("verify", str(run))
    assert code == 0 and "OK: 2 versions" in out
    bad = Path(PriorStore(run).file_path(10))
    bad.write_bytes(bad.read_bytes()[:100])
    code, _, err = invoke("verify", str(run))
    assert code == 1 and bad.name in err
    code, _, err = invoke("show", str(run), "--version", "10", "--image", "1")
    assert code == 1 and bad.name in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("ls", "{missing}"), "does not exist"),
        (("show", "{run}", "--version", "7"), "no committed prior version 7"),
        (("diff", "{run}", "0", "99"), "no committed prior version 99"),
        (("export", "{run}", "--version", "3", "-o", "{tmp}/x.json"), "no committed prior version 3"),
        (("gc", "{missing}"), "does not exist"),
    ],
)
def test_errors_are_one_line(run: Path, tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    filled = [a.format(run=run, missing=tmp_path / "missing", tmp=tmp_path) for a in args]
    code, _, err = invoke(*filled)
    assert code == 1 and message in err and err.startswith("Error:") and err.count("\n") == 1


def test_gc_lists_asks_and_removes(run: Path) -> None:
    PriorStore(run).write_shard(20, 0, {"region": _boxes(3).with_kind("region")})
    code, out, _ = invoke("gc", str(run), "--dry-run")
    assert code == 0 and "would remove priors/_staging/v0020" in out and (run / "priors/_staging/v0020").exists()
    code, out, _ = invoke("gc", str(run))  # no --yes, no answer on stdin: the question is declined
    assert code == 1 and "nothing removed" in out and (run / "priors/_staging/v0020").exists()
    code, out, _ = invoke("gc", str(run), "--yes")
    assert code == 0 and "priors/_staging/v0020" in out and not (run / "priors/_staging").exists()


def test_plot_with_attention(run: Path, tmp_path: Path) -> None:
    root = tmp_path / "images"
    root.mkdir()
    cv2.imwrite(str(root / "2.png"), np.full((30, 40, 3), 128, np.uint8))
    att = AttentionStore(run)
    att.create(10, [1, 2, 3], (8, 8))
    att.write(10, 2, np.random.default_rng(0).random((3, 4)))
    out = tmp_path / "p.png"
    code, text, _ = invoke(
        "plot", str(run), "--version", "10", "--image", "2", "-o", str(out), "--data-root", str(root)
    )
    assert code == 0 and out.exists() and cv2.imread(str(out)) is not None
    code, _, err = invoke("plot", str(run), "--image", "2", "-o", str(out))
    assert code == 1 and "run.json is missing" in err
    code, _, err = invoke("plot", str(run), "--image", "1", "-o", str(out), "--data-root", str(root))
    assert code == 1 and "cannot read image" in err


def test_plot_reads_image_root_from_run_json(run: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    cv2.imwrite(str(root / "1.png"), np.zeros((30, 40, 3), np.uint8))
    (run / "run.json").write_text(json.dumps({"config": {"data": {"root": str(root)}}}))
    out = tmp_path / "one.png"
    code, text, _ = invoke("plot", str(run), "--image", "1", "--kind", "smoothed", "-o", str(out))
    assert code == 0 and out.exists()
    code, _, err = invoke("plot", str(run), "--image", "9", "-o", str(out))
    assert code == 1 and "image_id 9 is not in" in err
