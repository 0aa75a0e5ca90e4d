"""A real writer subprocess killed with SIGKILL, and the one-writer lock."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from joindet.priors import BoxSet, PriorStore, StoreLockedError
from joindet.priors.store.lock import WriterLock

ROOT = Path(__file__).resolve().parents[2]

_WRITER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from joindet.priors import BoxSet, PriorStore
    from joindet.priors.store.fs import RunFS

    def boxes(seed):
        rng = np.random.default_rng(seed)
        xy = rng.random((20, 2)) * 0.5
        return BoxSet.from_arrays(rng.integers(0, 8, 20), np.concatenate([xy, xy + 0.3], 1), rng.random(20))

    real = RunFS.write_atomic
    def hang_on_manifest(self, rel, data):
        if rel.endswith("manifest.json"):
            print("at-manifest", flush=True)
            time.sleep(120)
        return real(self, rel, data)
    RunFS.write_atomic = hang_on_manifest

    store = PriorStore(sys.argv[1])
    for shard in range(3):
        store.write_shard(10, shard, {"region": boxes(shard), "instance": boxes(100 + shard)})
    staged = store.read_staged(10, "region")
    store.commit(10, {"region": staged, "smoothed": staged}, parent=0)
    print("committed", flush=True)
    """
)

_HOLDER = textwrap.dedent(
    """
    import sys, time
    from joindet.priors import PriorStore
    with PriorStore(sys.argv[1]).lock():
        print("locked", flush=True)
        time.sleep(120)
    """
)


def _spawn(code: str, run: Path, ready: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(run)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    line = proc.stdout.readline().strip()
    if line != ready:
        proc.kill()
        raise AssertionError(f"writer did not reach {ready!r}: {line!r} {proc.stderr.read()}")
    return proc


def _kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL


def _v0(run: Path) -> BoxSet:
    rng = np.random.default_rng(7)
    xy = rng.random((15, 2)) * 0.5
    v0 = BoxSet.from_arrays(rng.integers(0, 8, 15), np.concatenate([xy, xy + 0.2], 1), rng.random(15))
    PriorStore(run).commit(0, {"smoothed": v0})
    return v0


def test_sigkill_before_manifest_leaves_no_version_and_shards_reused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    v0 = _v0(run)
    proc = _spawn(_WRITER, run, "at-manifest")  # shards and data files written, manifest not yet
    _kill(proc)

    store = PriorStore(run)
    assert store.versions() == [0] and not store.has_version(10)
    assert store.read(0).equals(v0)
    assert store.verify() == []
    assert store.done_shards(10) == {0, 1, 2}
    leftovers = list((run / "priors/v0010").glob("*.parquet"))
    assert leftovers  # the killed commit's data files exist but are invisible

    # a new writer takes over the dead writer's lock and resumes from the valid shards
    staged = store.read_staged(10, "region")
    assert len(staged) == 60
    m = store.commit(10, {"region": staged, "smoothed": staged}, parent=0)
    assert store.versions() == [0, 10] and m.num_boxes == 60
    removed = store.gc()
    assert {f"priors/v0010/{p.name}" for p in leftovers} <= set(removed)
    assert store.verify() == [] and len(store.read(10)) == 60


def test_second_writer_refused_then_stale_lock_taken_over(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _v0(run)
    holder = _spawn(_HOLDER, run, "locked")
    try:
        store = PriorStore(run)
        with pytest.raises(StoreLockedError, match=rf"pid {holder.pid} on host {socket.gethostname()}"):
            store.commit(10, {"smoothed": store.read(0)}, parent=0)
        with pytest.raises(StoreLockedError):
            store.gc()
        assert store.versions() == [0]
    finally:
        _kill(holder)
    lock_file = run / "priors/.writer.lock"
    assert json.loads(lock_file.read_text())["pid"] == holder.pid  # stale record of a dead process
    with store.lock():
        assert json.loads(lock_file.read_text())["pid"] == os.getpid()
    assert lock_file.read_text() == ""


def test_lock_record_of_dead_pid_is_stale_but_other_host_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "w.lock"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    path.write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(), "since": 0}))
    with WriterLock(path):
        pass
    path.write_text(json.dumps({"pid": 1234, "host": "elsewhere.example", "since": 0}))
    with pytest.raises(StoreLockedError, match=r"pid 1234 on host elsewhere.example.*delete"):
        WriterLock(path).acquire()


def test_two_lock_objects_in_one_process_conflict(tmp_path: Path) -> None:
    a, b = PriorStore(tmp_path / "run"), PriorStore(tmp_path / "run")
    with a.lock(), a.lock(), pytest.raises(StoreLockedError), b.lock():  # re-entrant on the same store
        pass
