"""Round trips and validation of every on-disk table and document of storage_schema."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from joindet.storage_schema import (
    BOXES_SCHEMA,
    IMAGES_SCHEMA,
    QUARANTINE_SCHEMA,
    SCHEMA_VERSION,
    FileEntry,
    Manifest,
    SchemaError,
    SchemaVersionError,
    ShardMarker,
    validate_boxes_table,
    validate_images_table,
    validate_quarantine_table,
)


def _parquet_round_trip(table: pa.Table) -> pa.Table:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    buf.seek(0)
    return pq.read_table(buf)


def _images() -> pa.Table:
    return pa.table({"image_id": [3, 1], "file": ["a/3.jpg", "1.png"], "width": [640, 10], "height": [480, 20]}).cast(
        IMAGES_SCHEMA
    )


def _boxes() -> pa.Table:
    kind = pa.DictionaryArray.from_arrays(pa.array([0, 2], pa.int8()), ["region", "instance", "smoothed"])
    return pa.Table.from_arrays(
        [
            pa.array([1, 3], pa.int64()),
            *(pa.array(v, pa.float32()) for v in ([0, 0.1], [0, 0.2], [0.5, 0.3], [0.5, 0.9], [1, 0.5])),
            kind,
        ],
        schema=BOXES_SCHEMA,
    )


def test_images_round_trip() -> None:
    t = _images()
    back = validate_images_table(_parquet_round_trip(t), "x.parquet")
    assert back.equals(t)


def test_boxes_round_trip() -> None:
    t = _boxes()
    back = validate_boxes_table(_parquet_round_trip(t), "x.parquet")
    assert back.column("image_id").to_pylist() == [1, 3]
    assert back.column("kind").cast(pa.string()).to_pylist() == ["region", "smoothed"]
    assert back.schema.equals(BOXES_SCHEMA)


def test_quarantine_round_trip() -> None:
    t = pa.table({"image_id": [7], "file": ["x.jpg"], "reason": ["truncated JPEG"]}).cast(QUARANTINE_SCHEMA)
    assert validate_quarantine_table(_parquet_round_trip(t)).equals(t)


def test_images_validation_names_file_and_field() -> None:
    with pytest.raises(SchemaError, match=r"idx\.parquet: field 'width' must be > 0"):
        validate_images_table(pa.table({"image_id": [1], "file": ["a"], "width": [0], "height": [3]}), "idx.parquet")
    with pytest.raises(SchemaError, match=r"field 'image_id' has duplicate"):
        validate_images_table(
            pa.table({"image_id": [1, 1], "file": ["a", "b"], "width": [2, 2], "height": [3, 3]}), "i"
        )
    with pytest.raises(SchemaError, match=r"field 'height' is missing"):
        validate_images_table(pa.table({"image_id": [1], "file": ["a"], "width": [2]}), "i")
    with pytest.raises(SchemaError, match=r"field 'width' has type string"):
        validate_images_table(pa.table({"image_id": [1], "file": ["a"], "width": ["wide"], "height": [3]}), "i")


def test_boxes_validation_rejects_nan_inverted_and_wrong_kind() -> None:
    t = _boxes()
    nan = t.set_column(1, "x0", pa.array([float("nan"), 0.1], pa.float32()))
    with pytest.raises(SchemaError, match=r"b\.parquet: field 'x0' has NaN"):
        validate_boxes_table(nan, "b.parquet")
    inverted = t.set_column(3, "x1", pa.array([0.5, 0.05], pa.float32()))
    with pytest.raises(SchemaError, match=r"field 'x1/y1'"):
        validate_boxes_table(inverted, "b.parquet")
    with pytest.raises(SchemaError, match=r"must be 'region' on every row"):
        validate_boxes_table(t, "b.parquet", kind="region")


def _manifest() -> Manifest:
    entry = FileEntry(path="smoothed-abc.parquet", rows=5, bytes=100, sha256="0" * 64)
    return Manifest(
        version=10,
        parent=0,
        created="2026-01-01T00:00:00+00:00",
        files={"smoothed": entry},
        num_images=3,
        num_boxes=5,
        checkpoint_digest="sha256:1",
        config_digest="c",
        stats={"smoothed": {"boxes": 5}, "churn": None},
    )


def test_manifest_round_trip() -> None:
    m = _manifest()
    assert Manifest.from_json(m.to_json()) == m
    assert m.kinds == ["smoothed"]


def test_manifest_unknown_schema_version_refused() -> None:
    obj = _manifest().to_dict()
    obj["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(SchemaVersionError, match=r"m\.json: schema_version 2 is not supported .*newer joindet"):
        Manifest.from_json(json.dumps(obj), "m.json")


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"version": "ten"}, r"field 'version' must be an integer"),
        ({"parent": 10}, r"field 'parent' must be null or an earlier version"),
        ({"files": {}}, r"field 'files' must be a non-empty object"),
        ({"files": {"boxes": {}}}, r"field 'files.boxes' unknown kind"),
        ({"files": {"smoothed": {"path": "../x", "rows": 1, "bytes": 1, "sha256": "0" * 64}}}, r"files.smoothed.path"),
    ],
)
def test_manifest_validation_names_field(patch: dict, message: str) -> None:
    obj = {**_manifest().to_dict(), **patch}
    with pytest.raises(SchemaError, match=message):
        Manifest.from_json(json.dumps(obj), "m.json")


def test_manifest_not_json() -> None:
    with pytest.raises(SchemaError, match=r"m\.json: not valid JSON"):
        Manifest.from_json("{trunc", "m.json")


def test_shard_marker_round_trip() -> None:
    mk = ShardMarker(
        20,
        3,
        FileEntry("shard-00003-x.parquet", 4, 50, "a" * 64),
        {"region": 3, "instance": 1},
        "2026-01-01T00:00:00+00:00",
        {"images": [0, 100]},
    )
    assert ShardMarker.from_json(mk.to_json(), "s.json") == mk
