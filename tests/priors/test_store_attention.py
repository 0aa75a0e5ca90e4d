"""Eigen attention maps in attention/vNNNN.zarr: per-image shapes, float16, missing maps, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from joindet.priors import StoreError, VersionNotFoundError
from joindet.priors.store.attention_maps import AttentionStore


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
    # one chunk per image: a worker's write touches only its image
    chunks = list((tmp_path / "attention/v0010.zarr/maps/c").rglob("*"))
    assert len([c for c in chunks if c.is_file()]) == 2


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
