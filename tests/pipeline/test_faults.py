"""Fault injection on a tiny run: nothing lost, nothing silently wrong (issue 15).

One small pretrain (6 images of 64 px, 2 epochs, a new version after each, 2 shards) is built
once; each test copies it and breaks one thing: a checkpoint's bytes, a manifest, the disk, the
lock, the images. The CLI side of these cases is tests/flows/test_cli_faults.py; the run's
settings and helpers are tests/fault_run.py.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import struct
import warnings
import zlib
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from fault_run import SETTINGS, copy_run, flip, sha

from joindet.pipeline import stages
from joindet.pipeline.checkpoints import (
    CheckpointError,
    checkpoint_problem,
    load_checkpoint,
    marker_path,
    verified_epochs,
)
from joindet.pipeline.config import make_config
from joindet.pipeline.data import open_dataset
from joindet.pipeline.pretrain import drive_pretrain
from joindet.pipeline.run_checks import verify_run
from joindet.pipeline.run_dir import RunDir, RunMismatchError
from joindet.pipeline.schedule import RunPlan, check_resumable
from joindet.priors import PriorStore, StoreLockedError
from joindet.priors.store.lock import WriterLock

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


class _Steps:
    """The stages called directly in this process (what flows.pretrain.PlainSteps does)."""

    def init_shards(self, run, shard_ids):
        return [stages.init_shard(str(run.path), s) for s in shard_ids]

    def init(self, run):
        return stages.commit_init(run)

    def train(self, run, end_epoch):
        return stages.train(run, end_epoch)

    def mine(self, run, version, shard_ids):
        return [stages.mine_shard(str(run.path), version, s) for s in shard_ids]

    def smooth(self, run, version):
        return stages.smooth(run, version)

    def evaluate(self, run, version):
        return {}

    def publish(self, run, report):
        pass


def pretrain(path: Path, dataset: str, root: Path, *extra: str) -> RunDir:
    cfg = make_config("tiny", dataset, [*SETTINGS, f"data.root={root}", *extra])
    with warnings.catch_warnings(), RunDir.writer_lock(path):
        warnings.simplefilter("ignore")
        run = RunDir.create(path, cfg)
        drive_pretrain(run, _Steps(), evaluate=False)
    return RunDir.open(path)


def huge_png(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` pixels (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def add_bad_images(folder: Path, good: Path) -> dict[str, str]:
    """Write a 0-byte, a text, a huge-header and a truncated image into ``folder``; returns
    file name -> the start of the reason they must be quarantined with."""
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("this is not an image\n")
    (folder / "huge.png").write_bytes(huge_png(100000, 100000))
    data = good.read_bytes()
    (folder / "trunc.jpg").write_bytes(data[: len(data) // 2])
    return {
        "zero.jpg": "empty file",
        "text.jpg": "not a",
        "huge.png": "too large (100000 x 100000)",
        "trunc.jpg": "truncated JPEG",
    }


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, fault_data: Path) -> Path:
    """A complete tiny run: v0, v1 committed; checkpoints of epochs 0 and 1."""
    path = tmp_path_factory.mktemp("base") / "run"
    pretrain(path, "synthetic", fault_data)
    return path


@pytest.fixture
def run(base: Path, tmp_path: Path) -> RunDir:
    return RunDir.open(copy_run(base, tmp_path))


# ---------------------------------------------------------------------------- checkpoints
def test_corrupt_checkpoint_refused_by_train_mine_and_eval(run: RunDir) -> None:
    ckpt0 = run.checkpoint_path(0)
    flip(ckpt0)
    hint = "epoch-0000.pt is damaged .*delete it .*to retrain epoch 0"
    assert checkpoint_problem(ckpt0) is not None and verified_epochs(run.path / "checkpoints") == [1]
    with pytest.raises(CheckpointError, match=hint):
        load_checkpoint(ckpt0)
    # train: resuming from epoch 0's checkpoint
    for f in (run.checkpoint_path(1), marker_path(run.checkpoint_path(1))):
        f.unlink()
    with pytest.raises(CheckpointError, match=hint):
        stages.train(run, 2)
    assert not run.checkpoint_path(1).exists()
    # mine: version 1 is mined with epoch 0's checkpoint
    run.store.move_aside(1)
    shutil.rmtree(run.path / "priors" / "_staging")
    with pytest.raises(CheckpointError, match=hint):
        stages.mine(run, 1)
    assert run.store.staged_shards(1) == {}
    # evaluate: proposals of epoch 0
    with pytest.raises(CheckpointError, match=hint):
        stages.evaluate_proposals(run, epoch=0)


def test_checkpoint_without_marker_is_an_unfinished_write(run: RunDir) -> None:
    marker_path(run.checkpoint_path(1)).unlink()
    assert run.last_checkpoint() == 0 and RunPlan(run).last_checkpoint() == 0
    assert "has no marker" in checkpoint_problem(run.checkpoint_path(1))


def test_disk_full_while_saving_a_checkpoint_then_resume_is_byte_identical(
    run: RunDir, base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for f in (run.checkpoint_path(1), marker_path(run.checkpoint_path(1))):
        f.unlink()
    real_fsync = os.fsync

    def full(fd: int) -> None:  # the disk fills up while the checkpoint's data is flushed
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(".epoch-0001.pt."):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(CheckpointError) as info:
        stages.train(run, 2)
    message = str(info.value)
    assert "\n" not in message and "epoch-0001.pt" in message and "No space left on device" in message
    assert "free space" in message and "retrain epoch 1" in message
    left = sorted(p.name for p in (run.path / "checkpoints").iterdir())
    assert left == ["epoch-0000.json", "epoch-0000.pt"]  # nothing half-written
    monkeypatch.setattr(os, "fsync", real_fsync)
    stages.train(run, 2)
    assert sha(run.checkpoint_path(1)) == sha(base / "checkpoints" / "epoch-0001.pt")
    assert verify_run(run.path) == []


def test_non_finite_loss_stops_training_with_a_clear_error(run: RunDir, monkeypatch: pytest.MonkeyPatch) -> None:
    from joindet.detector.criterion import SetCriterion

    for f in (run.checkpoint_path(1), marker_path(run.checkpoint_path(1))):
        f.unlink()
    monkeypatch.setattr(SetCriterion, "total", lambda self, losses: torch.tensor(float("nan")))
    with pytest.raises(FloatingPointError, match="training loss is nan"):
        stages.train(run, 2)
    assert not run.checkpoint_path(1).exists()


def test_image_failing_during_training_is_quarantined(run: RunDir, monkeypatch: pytest.MonkeyPatch) -> None:
    from joindet.pipeline.data import ImageLoadError
    from joindet.pipeline.data.dataset import Dataset

    for f in (run.checkpoint_path(1), marker_path(run.checkpoint_path(1))):
        f.unlink()
    victim = int(run.image_ids()[1])
    real_load = Dataset.load

    def load(self, image_id: int):
        if image_id == victim:  # the file went bad after init and mining read it
            raise ImageLoadError(image_id, self.file(image_id), "truncated JPEG (no end-of-image marker)")
        return real_load(self, image_id)

    monkeypatch.setattr(Dataset, "load", load)
    result = stages.train(run, 2)
    assert not result.skipped and run.checkpoint_path(1).exists()
    assert run.quarantine().to_pylist() == [
        {"image_id": victim, "file": run.dataset().file(victim), "reason": "truncated JPEG (no end-of-image marker)"}
    ]
    log = [json.loads(line) for line in (run.path / "logs" / "train.jsonl").read_text().splitlines()]
    assert log[-1]["epoch"] == 1 and log[-1]["failed_images"][0][0] == victim


# ---------------------------------------------------------------------------- lock and config
def test_refused_second_writer_changes_nothing(run: RunDir, fault_data: Path) -> None:
    before = {n: sha(run.path / n) for n in ("run.json", "images.parquet")}
    other = PriorStore(run.path)  # another writer: its own lock object
    with other.lock():
        for extra in (["schedule.epochs=6"], ["mine.shards=3"]):
            cfg = make_config("tiny", "synthetic", [*SETTINGS, f"data.root={fault_data}", *extra])
            with pytest.raises(StoreLockedError, match="locked by another writer"):
                RunDir.create(run.path, cfg, force=True)
            assert {n: sha(run.path / n) for n in before} == before
    assert not list(run.path.glob("run.json.replaced-*"))


def test_config_change_is_refused_before_any_work_when_checkpoints_disagree(run: RunDir, fault_data: Path) -> None:
    before = sha(run.path / "run.json")
    cfg = make_config("tiny", "synthetic", [*SETTINGS, f"data.root={fault_data}", "model.lr=0.001"])
    with pytest.raises(RunMismatchError, match="epoch-0000.pt .*trained under another configuration"):
        RunDir.create(run.path, cfg, force=True)
    assert sha(run.path / "run.json") == before
    # a run.json edited by hand: checked before any stage works
    info = json.loads((run.path / "run.json").read_text())
    info["config_digest"] = cfg.digest()
    info["config"] = cfg.to_dict()
    (run.path / "run.json").write_text(json.dumps(info))
    with pytest.raises(RunMismatchError, match="trained under another configuration"):
        check_resumable(RunDir.open(run.path))


def test_stale_lock_of_a_live_unrelated_pid_is_taken(tmp_path: Path) -> None:
    path = tmp_path / "w.lock"
    unrelated = os.getppid()  # alive, and not holding the flock
    path.write_text(json.dumps({"pid": unrelated, "host": socket.gethostname(), "since": 0}))
    with WriterLock(path):
        assert json.loads(path.read_text())["pid"] == os.getpid()


# ---------------------------------------------------------------------------- status and store
def test_damaged_manifest_is_reported_and_blocks_resume_with_the_repair(run: RunDir) -> None:
    (run.path / "priors" / "v0001" / "manifest.json").write_text("{ not json")
    status = RunPlan(run).status()
    entry = {e.name: e for e in status.entries}["smooth v0001"]
    assert entry.state == "damaged" and "manifest.json" in entry.detail
    assert not status.complete and status.latest_version == 0
    assert "stage run mine" in status.next_command and "--force" in status.next_command
    with pytest.raises(ValueError, match="version 1 is damaged.*stage run mine .*--version 1 --force"):
        check_resumable(run)


def test_deleted_or_damaged_newest_checkpoint_is_not_counted(run: RunDir) -> None:
    for damage in ("delete", "flip"):
        ckpt = run.checkpoint_path(1)
        good = ckpt.read_bytes()
        ckpt.unlink() if damage == "delete" else flip(ckpt)
        states = {e.name: e.detail for e in RunPlan(run).status().entries}
        assert states["train epochs 0-0"] == "1 of 1 epochs"
        assert states["train epochs 1-1"] == "0 of 1 epochs", damage
        assert RunPlan(run).last_checkpoint() == 0 and not RunPlan(run).status().complete
        ckpt.write_bytes(good)
    assert RunPlan(run).status().complete


def test_smooth_force_on_unmined_shards_leaves_the_committed_version(run: RunDir) -> None:
    manifest = sha(run.path / "priors" / "v0001" / "manifest.json")
    shutil.rmtree(run.path / "priors" / "_staging")
    with pytest.raises(ValueError, match="shards not mined"):
        stages.smooth(run, 1, force=True)
    assert run.store.has_version(1) and sha(run.path / "priors" / "v0001" / "manifest.json") == manifest
    assert run.store.replaced() == []


def test_moved_aside_version_is_restored(run: RunDir) -> None:
    before = run.store.read(1)
    run.store.move_aside(1)
    assert not run.store.has_version(1) and [v for v, _ in run.store.replaced()] == [1]
    run.store.restore(1)
    assert run.store.has_version(1) and len(run.store.read(1, full_hash=True)) == len(before)


def test_gc_dry_run_removes_nothing(run: RunDir) -> None:
    staged = sorted(p.name for p in (run.path / "priors" / "_staging").iterdir())
    assert staged  # the committed versions' shards are still staged
    would = run.store.gc(dry_run=True)
    assert would and sorted(p.name for p in (run.path / "priors" / "_staging").iterdir()) == staged
    assert run.store.gc() == would and not (run.path / "priors" / "_staging").exists()


# ---------------------------------------------------------------------------- runs verify
def test_verify_run_passes_a_good_run_and_names_each_damage(run: RunDir) -> None:
    assert verify_run(run.path) == []
    files = {
        "checkpoint": run.checkpoint_path(1),
        "manifest": run.path / "priors" / "v0001" / "manifest.json",
        "data": next((run.path / "priors" / "v0000").glob("smoothed-*.parquet")),
        "images": run.path / "images.parquet",
        "run.json": run.path / "run.json",
    }
    for what, f in files.items():
        good = f.read_bytes()
        if what in ("manifest", "run.json"):
            f.write_bytes(good[: len(good) // 2])  # a torn write
        else:
            flip(f, start=len(good) // 3, count=16)
        problems = verify_run(run.path)
        assert problems and any(f.name in p for p in problems), (what, problems)
        f.write_bytes(good)
        assert verify_run(run.path) == [], what
    run.checkpoint_path(0).unlink()
    assert any("epoch-0000.pt is missing" in p for p in verify_run(run.path))
    pq.write_table(pq.read_table(run.path / "images.parquet"), run.path / "quarantine.parquet")
    assert any("quarantine.parquet" in p for p in verify_run(run.path))


# ---------------------------------------------------------------------------- images
@pytest.mark.parametrize("layout", ["folder", "coco-json"])
def test_unreadable_images_are_quarantined_and_the_run_finishes(tmp_path: Path, fault_data: Path, layout: str) -> None:
    images = tmp_path / "images"
    shutil.copytree(fault_data / "train", images)
    good = sorted(images.iterdir())
    expected = add_bad_images(images, good[0])
    extra: list[str] = []
    if layout == "coco-json":
        ann = json.loads(next((fault_data / "annotations").glob("*train*.json")).read_text())
        next_id = max(im["id"] for im in ann["images"]) + 1
        for i, name in enumerate(sorted(expected)):  # sizes as an annotation tool would record them
            ann["images"].append({"id": next_id + i, "file_name": name, "width": 64, "height": 64})
        ann["annotations"][0]["bbox"] = [4, 4, -3, 5]  # negative width: dropped and counted
        ann["annotations"][1]["bbox"] = [4, 4, 0, 0]  # zero size: dropped and counted
        (tmp_path / "ann.json").write_text(json.dumps(ann))
        extra = [f"data.annotations={tmp_path / 'ann.json'}"]
    run = pretrain(tmp_path / "run", layout, images, *extra)
    quarantine = {r["file"]: r["reason"] for r in run.quarantine().to_pylist()}
    assert set(quarantine) == set(expected), quarantine
    for name, reason in expected.items():
        assert reason in quarantine[name], (name, quarantine[name])
    assert RunPlan(run).status().complete and verify_run(run.path) == []
    if layout == "coco-json":
        assert open_dataset("coco-json", root=images, annotations=tmp_path / "ann.json").dropped_boxes() == 2
        assert "dropped 2 ground-truth boxes" in (run.path / "logs" / "dataset.log").read_text()
