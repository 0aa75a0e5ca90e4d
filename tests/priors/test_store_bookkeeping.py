"""Shard bookkeeping reads markers only; shard data are checked when read; one read for all kinds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from joindet.pipeline.stages.smooth import current_boxes
from joindet.priors import BoxSet, PriorStore
from joindet.priors.store.errors import CorruptFileError


def _boxes(n: int, first_image: int, kind: str, seed: int) -> BoxSet:
    rng = np.random.default_rng(seed)
    xy = rng.random((n, 2)) * 0.5
    ids = first_image + rng.integers(0, 4, n)
    return BoxSet.from_arrays(ids, np.concatenate([xy, xy + 0.3], 1), rng.random(n), kind)


@pytest.fixture
def store(tmp_path: Path) -> PriorStore:
    s = PriorStore(tmp_path / "run")
    for shard in range(3):
        s.write_shard(
            20,
            shard,
            {"region": _boxes(9, 4 * shard, "region", shard), "instance": _boxes(5, 4 * shard, "instance", 10 + shard)},
        )
    return s


def _shard_file(store: PriorStore, shard: int) -> Path:
    return next((Path(store.run_dir) / "priors/_staging/v0020/mine").glob(f"shard-{shard:05d}-*.parquet"))


def test_done_shards_never_read_shard_data(store: PriorStore, monkeypatch: pytest.MonkeyPatch) -> None:
    read = []
    original = store.rfs.read_bytes

    def spy(rel: str):  # noqa: ANN202
        read.append(rel)
        return original(rel)

    monkeypatch.setattr(type(store.rfs), "read_bytes", lambda self, rel: spy(rel))
    assert store.done_shards(20) == {0, 1, 2} and store.shard_done(20, 1)
    assert read and all(r.endswith(".json") for r in read), read


def test_altered_shard_is_done_but_refused_when_read(store: PriorStore) -> None:
    path = _shard_file(store, 1)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # same size, altered content
    path.write_bytes(bytes(raw))
    assert store.done_shards(20) == {0, 1, 2}  # bookkeeping: marker and size only
    with pytest.raises(CorruptFileError, match=path.name):
        store.read_staged_all(20)
    path.write_bytes(bytes(raw[:-3]))  # truncated: not done, so mining redoes it
    assert store.done_shards(20) == {0, 2} and not store.shard_done(20, 1)


def test_one_read_of_all_kinds_equals_per_kind_reads(store: PriorStore) -> None:
    every = store.read_staged_all(20)
    kinds = store.read_staged_kinds(20, ("region", "instance"))
    for k in ("region", "instance"):
        assert kinds[k].equals(store.read_staged(20, k))
        assert every.of_kind(k).equals(kinds[k])
    expected = BoxSet.concat([kinds["region"], kinds["instance"]])
    assert current_boxes(every, ("region", "instance")).equals(expected)
    assert current_boxes(every, ("instance",)).equals(kinds["instance"])


def test_current_boxes_falls_back_when_shard_rows_are_in_another_order(tmp_path: Path) -> None:
    """A shard written instance-first holds each image's instance rows before its region rows:
    the concatenation (region first) is then computed, not taken from the file order."""
    s = PriorStore(tmp_path / "run")
    s.write_shard(20, 0, {"instance": _boxes(6, 0, "instance", 1), "region": _boxes(8, 0, "region", 2)})
    every = s.read_staged_all(20)
    kinds = {k: every.of_kind(k) for k in ("region", "instance")}
    expected = BoxSet.concat([kinds["region"], kinds["instance"]])
    assert not every.equals(expected)
    assert current_boxes(every, ("region", "instance")).equals(expected)
    assert current_boxes(every, ("instance", "region")).equals(every)
