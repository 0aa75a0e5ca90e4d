"""Eigen attention maps in attention/vNNNN.zarr: per-image shapes, float16, missing maps, errors,
shard files per row group, buffered writers, the layout of earlier runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from joindet.priors import StoreError, VersionNotFoundError
from joindet.priors.store.attention_maps import AttentionLayoutError, AttentionStore, row_layout
from joindet.storage_schema.attention import ATTENTION_IMAGES_PER_SHARD


def test_maps_of_different_shapes_round_trip(tmp_path: Path) -> None:
    store = AttentionStore(tmp_path)
    store.create(10, np.array([7, 3, 11]), (6, 5))
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((6, 5)), rng.standard_normal((2, 3))
    store.write(10, 3, a)
    store.write(10, 11, b)
    np.testing.assert_allclose(store.read(10, 3), a, rtol=1e-3, atol=1e-3)  # float16 storage
    back = store.read(10, 11)
    assert back.shape == (2, 3) and back.dtype == np.float32
    assert store.read(10, 7) is None
    assert store.versions() == [10]
    store.create(10, np.array([3, 7, 11]), (6, 5))  # idempotent for the same ids (another worker)
    assert store.read(10, 11) is not None
    # one shard file holds the maps of the (single) row group, one inner chunk per image
    chunks = list((tmp_path / "attention/v0010.zarr/maps/c").rglob("*"))
    assert len([c for c in chunks if c.is_file()]) == 1


def test_errors(tmp_path: Path) -> None:
    store = AttentionStore(tmp_path)
    with pytest.raises(VersionNotFoundError, match="no attention maps for version 0"):
        store.read(0, 1)
    store.create(0, [1], (4, 4))
    with pytest.raises(StoreError, match=r"shape \[5, 2\]; expected \[h, w\] within 4 x 4"):
        store.write(0, 1, np.zeros((5, 2)))
    with pytest.raises(StoreError, match="NaN"):
        store.write(0, 1, np.full((2, 2), np.nan))
    with pytest.raises(StoreError, match="image 9 is not among"):
        store.write(0, 9, np.zeros((2, 2)))
    with pytest.raises(StoreError, match="other image ids"):
        store.create(0, [1, 2], (4, 4))


def test_open_or_create_per_version_handle(tmp_path: Path) -> None:
    from joindet.priors import AttentionStore as Exported

    maps = Exported.open_or_create(tmp_path / "attention" / "v0003.zarr", np.array([5, 6]), 3)
    maps.write(6, np.ones((4, 7)))
    assert maps.read(6).shape == (4, 7) and maps.read(5) is None
    assert AttentionStore(tmp_path).read(3, 6).shape == (4, 7)
    with pytest.raises(StoreError, match="attention maps live at"):
        Exported.open_or_create(tmp_path / "elsewhere.zarr", np.array([5]), 3)


def test_concurrent_creators_share_one_group(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    ids = np.arange(6, dtype=np.int64)
    store = AttentionStore(tmp_path)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: store.create(2, ids, (8, 8)), range(8)))
    store.write(2, 3, np.ones((4, 5), np.float32))
    store.create(2, ids, (8, 8))  # idempotent: keeps the written map
    assert store.read(2, 3).shape == (4, 5)
    leftovers = [p.name for p in (tmp_path / "attention").iterdir() if p.name != "v0002.zarr"]
    assert leftovers == []


def _files(path: Path) -> list[Path]:
    return sorted(p for p in (path / "maps" / "c").rglob("*") if p.is_file())


def test_row_groups_start_on_shard_file_boundaries() -> None:
    ids = np.arange(10, 20)
    groups = np.array_split(ids, 3)  # 4, 3, 3 images
    sorted_ids, rows, per_file = row_layout(ids[::-1], groups)
    assert per_file == 4 and np.array_equal(sorted_ids, ids)
    assert rows.tolist() == [0, 1, 2, 3, 4, 5, 6, 8, 9, 10]
    big = np.arange(3 * ATTENTION_IMAGES_PER_SHARD)
    _, rows, per_file = row_layout(big, np.array_split(big, 2))
    assert per_file == ATTENTION_IMAGES_PER_SHARD and rows[len(big) // 2] == 2 * ATTENTION_IMAGES_PER_SHARD
    with pytest.raises(StoreError, match="contiguous ranges"):
        row_layout(ids, [ids[::2], ids[1::2]])


def test_writers_of_groups_write_bounded_files_concurrently(tmp_path: Path) -> None:
    """Each mining shard's writer fills its own shard files, in parallel, once; maps read back per image."""
    from concurrent.futures import ThreadPoolExecutor

    ids = np.arange(100, 2700, dtype=np.int64)
    groups = np.array_split(ids, 3)  # 867 images each: one shard file per group
    store = AttentionStore(tmp_path)
    store.create(4, ids, (6, 7), groups)
    rng = np.random.default_rng(1)
    maps = {int(i): rng.standard_normal((int(rng.integers(1, 7)), int(rng.integers(1, 8)))) for i in ids}

    def mine_group_paired(group: np.ndarray) -> None:
        handle = store.maps(4)
        with handle.writer(group) as writer:
            for batch in np.array_split(group, 50):
                kept = [int(i) for i in batch if int(i) != 2000]
                writer.add(kept, [maps[i] for i in kept])

    with ThreadPoolExecutor(3) as pool:
        list(pool.map(mine_group_paired, groups))
    assert len(_files(store.path(4))) == 3
    handle = store.maps(4)
    for i in rng.choice(ids, 40).tolist() + [int(ids[0]), int(ids[-1])]:
        if i != 2000:
            np.testing.assert_allclose(handle.read(i), maps[i], rtol=1e-3, atol=1e-3)
    assert handle.read(2000) is None
    with pytest.raises(StoreError, match="not among the images of this attention writer"):
        handle.writer(groups[0]).add([int(groups[1][0])], [np.ones((2, 2))])


def test_writer_close_rewrites_the_whole_group(tmp_path: Path) -> None:
    """A shard redone after a crash leaves no map of the earlier attempt; out-of-order maps keep earlier ones."""
    ids = np.arange(8, dtype=np.int64)
    groups = np.array_split(ids, 2)
    store = AttentionStore(tmp_path)
    store.create(2, ids, (4, 4), groups)
    with store.maps(2).writer(groups[0]) as w:
        w.add(groups[0], [np.full((2, 2), 1.0)] * 4)
    with store.maps(2).writer(groups[0]) as w:  # the redo could read image 0 only
        w.add([0], [np.full((3, 3), 2.0)])
    assert store.read(2, 0).shape == (3, 3) and store.read(2, 1) is None
    with store.maps(2).writer(groups[1]) as w:
        w.add([7, 4], [np.ones((1, 2)), np.ones((2, 1))])
        w.add([6], [np.ones((2, 2))])
    assert [store.read(2, i) is not None for i in range(4, 8)] == [True, False, True, True]


def test_another_row_layout_is_refused_and_can_be_removed(tmp_path: Path) -> None:
    ids = np.arange(6)
    store = AttentionStore(tmp_path)
    store.create(2, ids, (4, 4), np.array_split(ids, 2))
    with pytest.raises(AttentionLayoutError, match="row groups"):
        store.create(2, ids, (4, 4), np.array_split(ids, 3))
    store.remove(2)
    assert store.versions() == []
    store.create(2, ids, (4, 4), np.array_split(ids, 3))
    assert store.versions() == [2]


def test_maps_of_runs_written_before_sharding_are_read(tmp_path: Path) -> None:
    """Layout padded-nan-v1: no rows array, one chunk per image (as the earlier joindet wrote it)."""
    import zarr

    from joindet.storage_schema import SCHEMA_VERSION

    path = tmp_path / "attention" / "v0002.zarr"
    group = zarr.open_group(str(path), mode="w-")
    group.attrs.update(
        {"schema_version": SCHEMA_VERSION, "version": 2, "max_h": 4, "max_w": 5, "layout": "padded-nan-v1"}
    )
    group.create_array("image_ids", data=np.array([3, 8, 9], np.int64), chunks=(3,))
    maps = group.create_array("maps", shape=(3, 4, 5), chunks=(1, 4, 5), dtype="float16", fill_value=np.nan)
    block = np.full((1, 4, 5), np.nan, np.float16)
    block[0, :2, :3] = 0.5
    maps[1:2] = block
    store = AttentionStore(tmp_path)
    assert store.versions() == [2]
    np.testing.assert_array_equal(store.read(2, 8), np.full((2, 3), 0.5, np.float32))
    assert store.read(2, 3) is None and store.read(2, 9) is None
    store.write(2, 9, np.ones((4, 5)))
    assert store.read(2, 9).shape == (4, 5)
