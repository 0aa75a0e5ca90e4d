"""RunDir: run.json / images.parquet on create, reopen, mismatch, shards, quarantine, lock, status."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from joindet.pipeline.checkpoints import save_checkpoint
from joindet.pipeline.config import make_config
from joindet.pipeline.data import open_dataset
from joindet.pipeline.data.synthetic import generate_synthetic
from joindet.pipeline.run_dir import RunDir, RunMismatchError, RunNotFoundError
from joindet.pipeline.schedule import RunPlan, shard_ranges
from joindet.priors import BoxSet, CorruptFileError
from joindet.storage_schema import SCHEMA_VERSION


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic") / "data"
    generate_synthetic(root, 10, 64, seed=1, val_images=2)
    return root


def _cfg(*overrides: str):
    return make_config("tiny", "synthetic", ["mine.shards=3", *overrides])


def _create(path: Path, root: Path, *overrides: str, force: bool = False) -> RunDir:
    return RunDir.create(path, _cfg(*overrides), dataset=open_dataset("synthetic", root=root), force=force)


def test_create_writes_run_json_and_pins_the_index(tmp_path: Path, data_root: Path) -> None:
    run = _create(tmp_path / "run", data_root)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["schema_version"] == SCHEMA_VERSION
    assert info["config_digest"] == _cfg().digest()
    ds = open_dataset("synthetic", root=data_root)
    assert info["dataset"] == {
        "name": "synthetic",
        "root": str(data_root),
        "fingerprint": ds.fingerprint(),
        "num_images": 10,
        "split": "train",
    }
    assert {"created", "joindet_version"} <= set(info)
    assert pq.read_table(tmp_path / "run" / "images.parquet").equals(ds.index())
    reopened = RunDir.open(tmp_path / "run")
    assert reopened.config.to_dict() == run.config.to_dict()
    assert reopened.images().equals(ds.index())
    assert reopened.dataset().fingerprint() == ds.fingerprint()
    assert reopened.dataset("val").index().num_rows == 2


def test_create_again_reopens_and_mismatch_is_refused(tmp_path: Path, data_root: Path) -> None:
    _create(tmp_path / "run", data_root)
    assert _create(tmp_path / "run", data_root).config.mine.batch_size == 8
    again = _create(tmp_path / "run", data_root, "mine.batch_size=2", "train.num_workers=0")  # resume-safe keys
    assert again.config.mine.batch_size == 2 and again.config.train.num_workers == 0
    assert RunDir.open(tmp_path / "run").config.mine.batch_size == 2
    assert again.info["config_digest"] == _cfg().digest()
    with pytest.raises(RunMismatchError, match=r"priors\.momentum: 0\.45 -> 0\.3"):
        _create(tmp_path / "run", data_root, "priors.momentum=0.3")
    forced = _create(tmp_path / "run", data_root, "priors.momentum=0.3", force=True)
    assert forced.config.priors.momentum == 0.3
    assert RunDir.open(tmp_path / "run").config.priors.momentum == 0.3
    assert len(list((tmp_path / "run").glob("run.json.replaced-*"))) == 1


def test_force_never_swaps_the_dataset_under_committed_priors(tmp_path: Path, data_root: Path) -> None:
    run = _create(tmp_path / "run", data_root)
    ids = run.image_ids()
    run.store.commit(0, {"smoothed": BoxSet.from_arrays(ids[:1], [[0.1, 0.1, 0.5, 0.5]])})
    other = tmp_path / "other"
    generate_synthetic(other, 5, 64, seed=2, val_images=1)
    with pytest.raises(RunMismatchError, match="fingerprint"):
        RunDir.create(tmp_path / "run", _cfg(), dataset=open_dataset("synthetic", root=other), force=True)


def test_open_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(RunNotFoundError, match="does not exist"):
        RunDir.open(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunNotFoundError, match="not a joindet run"):
        RunDir.open(tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "run.json").write_text("{not json")
    with pytest.raises(RunMismatchError, match="not valid JSON"):
        RunDir.open(bad)
    (bad / "run.json").write_text(json.dumps({"schema_version": 99, "config": {}, "config_digest": "", "dataset": {}}))
    with pytest.raises(RunMismatchError, match="schema_version 99"):
        RunDir.open(bad)


@pytest.mark.parametrize("num_shards", [1, 3, 4, 10, 13])
def test_shards_are_contiguous_deterministic_and_cover_the_index(
    tmp_path: Path, data_root: Path, num_shards: int
) -> None:
    run = _create(tmp_path / "run", data_root)
    shards = shard_ranges(run.image_ids(), num_shards, 1)  # batches of one image: any cut
    assert len(shards) == num_shards
    assert np.array_equal(np.concatenate(shards), run.image_ids())
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1
    assert all(
        np.array_equal(a, b) for a, b in zip(shards, shard_ranges(RunDir.open(run.path).image_ids(), num_shards, 1))
    )
    with pytest.raises(ValueError, match="mine.shards"):
        shard_ranges(run.image_ids(), 0, 1)
    with pytest.raises(ValueError, match="mine.batch_size"):
        shard_ranges(run.image_ids(), num_shards, 0)


def test_quarantine_adds_each_image_once(tmp_path: Path, data_root: Path) -> None:
    run = _create(tmp_path / "run", data_root)
    assert run.quarantine().num_rows == 0
    assert run.add_quarantine([(3, "train/3.jpg", "truncated"), (1, "train/1.jpg", "empty file")]) == 2
    assert run.add_quarantine([(3, "train/3.jpg", "other reason"), (5, "x", "y"), (5, "x", "z")]) == 1
    q = RunDir.open(run.path).quarantine().to_pylist()
    assert [r["image_id"] for r in q] == [1, 3, 5]
    assert q[1]["reason"] == "truncated"
    assert run.quarantined_ids() == {1, 3, 5}


def test_lock_is_reentrant_in_process_and_exclusive_across_processes(tmp_path: Path, data_root: Path) -> None:
    run = _create(tmp_path / "run", data_root)
    other = RunDir.open(run.path)
    # Another process tries the store's lock file the way the store does (flock, non-blocking);
    # stdlib only, so the probe starts fast.
    probe = textwrap.dedent(
        f"""
        import fcntl, os
        fd = os.open({str(run.path / "priors" / ".writer.lock")!r}, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            print("acquired")
        except OSError:
            print("refused")
        """
    )

    def try_from_another_process() -> str:
        return subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60).stdout.strip()

    with run.lock(), other.lock(), run.lock():
        # a commit through another RunDir of the same run, while this process holds the lock
        other.store.commit(0, {"smoothed": BoxSet.from_arrays(run.image_ids()[:1], [[0, 0, 1, 1]])})
        assert try_from_another_process() == "refused"
    assert try_from_another_process() == "acquired"
    with other.lock():  # released fully: taken again
        pass


def test_status_follows_the_schedule(tmp_path: Path, data_root: Path) -> None:
    run = _create(tmp_path / "run", data_root, "schedule.epochs=4", "schedule.update_every=2")
    status = RunPlan(run).status()
    assert [e.name for e in status.entries] == [
        "init v0000",
        "train epochs 0-1",
        "mine v0002",
        "smooth v0002",
        "train epochs 2-3",
    ]
    assert all(e.state == "pending" for e in status.entries)
    assert status.next_command == f"joindet flow resume {run.path}" and not status.complete
    ids = run.image_ids()
    run.store.commit(0, {"smoothed": BoxSet.from_arrays(ids[:1], [[0, 0, 1, 1]])})
    save_checkpoint(run.checkpoint_path(0), model=torch.nn.Linear(1, 1), epoch=0, config_digest=run.config.digest())
    damaged = run.checkpoint_path(1)
    save_checkpoint(damaged, model=torch.nn.Linear(1, 1), epoch=1, config_digest=run.config.digest())
    damaged.write_bytes(damaged.read_bytes()[:-8] + b"xxxxxxxx")  # not counted: it does not verify
    planned = shard_ranges(run.image_ids(), 3, run.config.mine.batch_size)[1]
    meta = {
        "first_image_id": int(planned[0]),
        "last_image_id": int(planned[-1]),
        "batch_size": run.config.mine.batch_size,
    }
    run.store.write_shard(2, 1, {"region": BoxSet.empty(), "instance": BoxSet.empty()}, meta=meta)
    run.store.write_shard(2, 2, {"region": BoxSet.empty()}, meta=meta)  # staged under another plan
    assert RunPlan(run).done_shards(2) == {1}
    states = {e.name: (e.state, e.detail) for e in RunPlan(run).status().entries}
    assert states["init v0000"][0] == "done"
    assert states["train epochs 0-1"] == ("staged", "1 of 2 epochs")
    assert states["mine v0002"] == ("staged", "1 of 3 shards")
    assert states["smooth v0002"][0] == "pending"
    d = RunPlan(run).status().to_dict()
    assert d["latest_version"] == 0 and d["last_checkpoint"] == 0 and d["complete"] is False


def test_a_pickled_run_reopens_from_its_path(tmp_path: Path, data_root: Path) -> None:
    import pickle

    run = _create(tmp_path / "run", data_root)
    with run.lock():
        copy = pickle.loads(pickle.dumps(run))
    assert copy.path == run.path and copy.info == run.info and copy.config.digest() == run.config.digest()


def test_a_damaged_index_is_reported_by_name(tmp_path: Path, data_root: Path) -> None:
    _create(tmp_path / "run", data_root)
    (tmp_path / "run" / "images.parquet").write_bytes(b"PAR1 broken")
    with pytest.raises(CorruptFileError, match="images.parquet"):
        RunDir.open(tmp_path / "run").images()
