"""PriorStore: commit protocol, reads, staging shards, verify, gc, move_aside and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from joindet.priors import (
    BoxSet,
    CorruptFileError,
    PriorStore,
    RunNotFoundError,
    SchemaVersionError,
    StoreError,
    VersionExistsError,
    VersionNotFoundError,
    write_images_table,
)
from joindet.priors.store.images import read_images_table


def boxes(n: int, seed: int = 0, n_images: int = 10, kind: str = "smoothed") -> BoxSet:
    rng = np.random.default_rng(seed)
    xy = rng.random((n, 2)) * 0.5
    return BoxSet.from_arrays(
        rng.integers(0, n_images, n), np.concatenate([xy, xy + rng.random((n, 2)) * 0.5], 1), rng.random(n), kind
    )


def images(n: int = 10) -> pa.Table:
    return pa.table(
        {
            "image_id": np.arange(n),
            "file": [f"{i}.jpg" for i in range(n)],
            "width": np.full(n, 64, np.int32),
            "height": np.full(n, 48, np.int32),
        }
    )


@pytest.fixture()
def store(tmp_path: Path) -> PriorStore:
    write_images_table(tmp_path / "run", images())
    return PriorStore(tmp_path / "run")


def test_commit_read_round_trip_and_manifest(store: PriorStore) -> None:
    r0, s0 = boxes(40, 1, kind="region"), boxes(30, 2)
    m0 = store.commit(0, {"region": r0, "smoothed": s0}, parent=None, checkpoint_digest=None, config_digest="cfg")
    assert store.versions() == [0] and store.latest() == 0 and store.has_version(0)
    assert store.read(0).equals(s0) and store.read(0, "region").equals(r0)
    assert store.manifest(0) == m0
    assert m0.num_images == 10 and m0.num_boxes == 30 and m0.kinds == ["region", "smoothed"]
    assert m0.stats["smoothed"]["boxes_per_image_mean"] == pytest.approx(3.0)
    assert m0.stats["churn"] is None
    s10 = boxes(35, 3)
    m10 = store.commit(
        10,
        {"smoothed": s10},
        parent=0,
        checkpoint_digest="sha256:ab",
        config_digest="cfg",
        extra_stats={"epoch_loss": 1.5},
    )
    assert m10.parent == 0 and m10.stats["epoch_loss"] == 1.5
    churn = m10.stats["churn"]
    assert churn["matched"] + churn["removed"] == 30 and churn["matched"] + churn["added"] == 35
    assert store.versions() == [0, 10]
    assert store.verify() == []


def test_identical_parent_has_no_churn(store: PriorStore) -> None:
    s = boxes(20)
    store.commit(0, {"smoothed": s})
    m = store.commit(10, {"smoothed": s}, parent=0)
    assert m.stats["churn"] == {"matched": 20, "added": 0, "removed": 0, "mean_iou": 1.0}


def test_versions_are_immutable_and_move_aside(store: PriorStore) -> None:
    store.commit(0, {"smoothed": boxes(5)})
    with pytest.raises(VersionExistsError, match="already committed.*--force"):
        store.commit(0, {"smoothed": boxes(6)})
    moved = store.move_aside(0)
    assert moved.is_dir() and moved.parent.name == "_replaced" and moved.name.startswith("v0000-")
    assert store.versions() == []
    store.commit(0, {"smoothed": boxes(6)})
    assert len(store.read(0)) == 6


def test_commit_rejects_bad_input(store: PriorStore) -> None:
    with pytest.raises(StoreError, match="needs a 'smoothed' kind"):
        store.commit(0, {"region": boxes(3)})
    with pytest.raises(StoreError, match="unknown kind"):
        store.commit(0, {"smoothed": boxes(3), "proposals": boxes(3)})
    far = BoxSet.from_arrays([0], [[0.1, 0.1, 1.5, 0.9]])
    with pytest.raises(StoreError, match=r"normalised to \[0, 1\]"):
        store.commit(0, {"smoothed": far})
    with pytest.raises(StoreError, match=r"image_id\(s\) not in .*images.parquet \(e.g. 99\)"):
        store.commit(0, {"smoothed": BoxSet.from_arrays([99], [[0, 0, 1, 1]])})
    with pytest.raises(VersionNotFoundError):
        store.commit(10, {"smoothed": boxes(3)}, parent=0)
    assert store.versions() == []
    # float noise just outside [0, 1] is clipped, not refused
    store.commit(0, {"smoothed": BoxSet.from_arrays([0], [[-1e-6, 0, 1 + 1e-6, 1]])})
    assert store.read(0).boxes.min() == 0 and store.read(0).boxes.max() == 1


def test_missing_run_and_version_errors(tmp_path: Path, store: PriorStore) -> None:
    with pytest.raises(RunNotFoundError, match="does not exist"):
        PriorStore(tmp_path / "nope").manifest(0)
    store.commit(0, {"smoothed": boxes(3)})
    with pytest.raises(VersionNotFoundError, match=r"no committed prior version 7 \(committed: 0\)"):
        store.read(7)
    with pytest.raises(VersionNotFoundError, match="has no 'instance' boxes"):
        store.read(0, "instance")


def _data_file(store: PriorStore, version: int, kind: str = "smoothed") -> Path:
    return Path(store.file_path(version, kind))


@pytest.mark.parametrize("damage", ["truncate", "alter"])
def test_damaged_parquet_reported_by_verify_and_read(store: PriorStore, damage: str) -> None:
    store.commit(0, {"smoothed": boxes(200)})
    store.commit(10, {"smoothed": boxes(200, 1)}, parent=0)
    path = _data_file(store, 10)
    raw = bytearray(path.read_bytes())
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    else:
        raw[len(raw) // 3] ^= 0xFF
        path.write_bytes(bytes(raw))
    problems = store.verify()
    assert len(problems) == 1 and path.name in problems[0]
    with pytest.raises(CorruptFileError, match=path.name):
        store.read(10)
    assert len(store.read(0)) == 200  # other versions unaffected


def test_missing_data_file_reported(store: PriorStore) -> None:
    store.commit(0, {"smoothed": boxes(5)})
    path = _data_file(store, 0)
    path.unlink()
    assert any(path.name in p and "missing" in p for p in store.verify())
    with pytest.raises(CorruptFileError, match="missing"):
        store.read(0)


def test_unknown_schema_version_refused(store: PriorStore) -> None:
    store.commit(0, {"smoothed": boxes(5)})
    mpath = Path(store.run_dir) / "priors/v0000/manifest.json"
    obj = json.loads(mpath.read_text())
    obj["schema_version"] = 99
    mpath.write_text(json.dumps(obj))
    with pytest.raises(SchemaVersionError, match=r"manifest.json: schema_version 99 is not supported"):
        store.read(0)
    assert any("schema_version 99" in p for p in store.verify())


def test_corrupt_manifest_is_named(store: PriorStore) -> None:
    store.commit(0, {"smoothed": boxes(5)})
    mpath = Path(store.run_dir) / "priors/v0000/manifest.json"
    mpath.write_text('{"schema_version": 1, "vers')
    with pytest.raises(CorruptFileError, match=r"v0000/manifest.json: not valid JSON"):
        store.manifest(0)


def test_staging_both_forms_and_done_shards(store: PriorStore) -> None:
    a, b = boxes(10, 1, kind="region"), boxes(4, 2, kind="instance")
    store.write_shard(20, 0, {"region": a, "instance": b}, meta={"images": [0, 5]})
    store.write_shard(20, "region", 1, boxes(3, 3))
    store.write_shard(20, "instance", 1, boxes(2, 4))
    assert store.done_shards(20) == {0, 1}
    assert len(store.read_staged(20, "region")) == 13 and len(store.read_staged(20, "instance")) == 6
    assert store.staged_shards(20)[0].meta == {"images": [0, 5]}
    # rewriting one kind keeps the others and leaves one file per shard
    store.write_shard(20, "region", 1, boxes(5, 5))
    assert len(store.read_staged(20, "region")) == 15 and len(store.read_staged(20, "instance")) == 6
    stage = Path(store.run_dir) / "priors/_staging/v0020/mine"
    assert len(list(stage.glob("shard-00001-*.parquet"))) == 1


def test_damaged_shard_is_not_done(store: PriorStore) -> None:
    store.write_shard(20, 0, {"region": boxes(10)})
    store.write_shard(20, 1, {"region": boxes(10, 1)})
    shard = next((Path(store.run_dir) / "priors/_staging/v0020/mine").glob("shard-00001-*.parquet"))
    shard.write_bytes(shard.read_bytes()[:-10])
    (Path(store.run_dir) / "priors/_staging/v0020/mine/shard-00002-x.parquet").write_bytes(b"orphan, no marker")
    assert store.done_shards(20) == {0}
    assert store.shard_done(20, 0) and not store.shard_done(20, 1) and not store.shard_done(20, 2)
    assert len(store.read_staged(20, "region")) == 10


def test_gc_removes_staging_and_unreferenced(store: PriorStore) -> None:
    store.commit(0, {"smoothed": boxes(5)})
    store.write_shard(10, 0, {"region": boxes(3)})
    vdir = Path(store.run_dir) / "priors"
    (vdir / "v0000/smoothed-leftover.parquet").write_bytes(b"x")
    (vdir / "v0010").mkdir()
    (vdir / "v0010/region-partial.parquet").write_bytes(b"x")
    removed = store.gc()
    assert set(removed) == {"priors/_staging/v0010", "priors/v0000/smoothed-leftover.parquet", "priors/v0010"}
    assert store.versions() == [0] and store.verify() == [] and not (vdir / "_staging").exists()
    assert store.gc() == []


def test_write_shard_refused_for_committed_version(store: PriorStore) -> None:
    store.commit(0, {"smoothed": boxes(5)})
    with pytest.raises(VersionExistsError):
        store.write_shard(0, 0, {"region": boxes(3)})


def test_images_table_round_trip_and_validation(tmp_path: Path) -> None:
    write_images_table(tmp_path / "new_run", images(4).slice(0).take([3, 0, 2, 1]))
    t = read_images_table(tmp_path / "new_run")
    assert t.column("image_id").to_pylist() == [0, 1, 2, 3] and t.schema.field("width").type == pa.int32()
    bad = images(2).set_column(2, "width", pa.array([0, 5], pa.int32()))
    with pytest.raises(ValueError, match="field 'width' must be > 0"):
        write_images_table(tmp_path / "r2", bad)


def test_footer_edit_caught_by_full_hash_and_verify(store: PriorStore) -> None:
    store.commit(0, {"smoothed": boxes(50)})
    path = _data_file(store, 0)
    raw = path.read_bytes()
    at = raw.rindex(b"parquet-cpp-arrow")
    path.write_bytes(raw[:at] + b"P" + raw[at + 1 :])  # same size, data pages intact
    with pytest.raises(CorruptFileError, match=rf"{path.name} does not match its manifest's sha256"):
        store.read(0, full_hash=True)
    assert any(path.name in p for p in store.verify())
