"""The train stage: checkpoints and log per epoch, resume after SIGKILL, prior versions, torchrun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from joindet.pipeline.checkpoints import CheckpointError, list_epochs, load_checkpoint, save_checkpoint
from joindet.pipeline.progress import RecordingProgress
from joindet.pipeline.run_dir import RunDir
from joindet.pipeline.schedule import prior_version_for_epoch
from joindet.pipeline.stages.train import train
from joindet.pipeline.stages.train_loop import read_log

ROOT = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # train_fixtures, however pytest names this directory

from train_fixtures import NUM_IMAGES, make_run, random_priors  # noqa: E402

torch.set_num_threads(1)


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_prior_version_for_epoch() -> None:
    assert prior_version_for_epoch([0], 3, 2) == 0
    assert prior_version_for_epoch([0, 2, 4], 3, 2) == 2
    assert prior_version_for_epoch([0, 2, 4], 4, 2) == 4
    assert prior_version_for_epoch([0, 4], 3, 2) == 0  # v2 missing: latest committed <= block start
    with pytest.raises(ValueError, match="init_priors"):
        prior_version_for_epoch([], 0, 2)


def test_writes_one_checkpoint_per_epoch_and_the_log(tmp_path: Path) -> None:
    run = make_run(tmp_path, epochs=2, update_every=2)
    progress = RecordingProgress()
    result = train(run, 2, progress)
    assert result.stage == "train" and not result.skipped
    assert result.summary["epochs"] == [0, 2] and result.summary["prior_versions"] == [0]
    assert list_epochs(run.path / "checkpoints") == [0, 1]
    for epoch in (0, 1):
        ckpt = load_checkpoint(run.checkpoint_path(epoch))
        assert (ckpt["epoch"], ckpt["prior_version"], ckpt["config_digest"]) == (epoch, 0, run.config.digest())
        assert ckpt["optimizer"]["state"] and ckpt["scheduler"]["last_epoch"] == epoch + 1
    log = read_log(run.path / "logs" / "train.jsonl")
    assert [r["epoch"] for r in log] == [0, 1]
    for rec in log:
        assert rec["prior_version"] == 0 and rec["images"] == NUM_IMAGES and rec["images_per_s"] > 0
        assert {"loss_focal", "loss_bbox", "loss_giou", "loss_emb"} <= set(rec["losses"])
        assert all(v == v and v >= 0 for v in rec["losses"].values())  # finite, non-negative
        assert rec["lr"] == pytest.approx(run.config.model.lr)
    advances = [m for kind, (n, m) in ((k, e) for k, e in progress.events if k == "advance")]
    assert advances and all({"loss", "lr"} <= set(m) for m in advances)
    assert sum(n for k, (n, _) in ((k, e) for k, e in progress.events if k == "advance")) == 2 * NUM_IMAGES

    again = train(run, 2)
    assert again.skipped and list_epochs(run.path / "checkpoints") == [0, 1]


def test_resume_in_steps_equals_one_call(tmp_path: Path) -> None:
    whole = make_run(tmp_path / "a", epochs=2)
    train(whole, 2)
    parts = make_run(tmp_path / "b", epochs=2)
    train(parts, 1)
    assert list_epochs(parts.path / "checkpoints") == [0]
    train(parts, 2)
    a, b = load_checkpoint(whole.checkpoint_path(1)), load_checkpoint(parts.checkpoint_path(1))
    assert _states_equal(a["model"], b["model"])
    assert [r["loss"] for r in read_log(whole.path / "logs" / "train.jsonl")] == [
        r["loss"] for r in read_log(parts.path / "logs" / "train.jsonl")
    ]


def test_each_block_trains_on_its_version(tmp_path: Path) -> None:
    run = make_run(tmp_path, epochs=3, update_every=1)
    run.store.commit(1, {"smoothed": random_priors(run.image_ids(), per_image=2, seed=1)}, parent=0)
    progress = RecordingProgress()
    result = train(run, 3, progress)
    # epoch 2's block starts at 2; v2 is not committed, so the latest <= 2 (v1) is used, with a word
    assert [r["prior_version"] for r in read_log(run.path / "logs" / "train.jsonl")] == [0, 1, 1]
    logs = [m for kind, m in progress.events if kind == "log"]
    assert [m for m in logs if "v0002 of its block is not committed" in m] and not [m for m in logs if "v0001 of" in m]
    assert result.summary["prior_versions"] == [0, 1]
    assert load_checkpoint(run.checkpoint_path(2))["prior_version"] == 1


def test_bad_end_epoch_and_foreign_checkpoint_are_refused(tmp_path: Path) -> None:
    run = make_run(tmp_path, epochs=2)
    with pytest.raises(ValueError, match="schedule.epochs"):
        train(run, 3)
    with pytest.raises(ValueError, match="end_epoch"):
        train(run, 0)
    save_checkpoint(run.checkpoint_path(0), model=torch.nn.Linear(1, 1), epoch=0, config_digest="another-config")
    with pytest.raises(CheckpointError, match="another configuration"):
        train(run, 2)


CHILD = textwrap.dedent(
    """
    import sys, time, torch
    torch.set_num_threads(1)
    from joindet.pipeline.progress import NullProgress
    from joindet.pipeline.run_dir import RunDir
    from joindet.pipeline.stages.train import train

    class StallAfterFirstEpoch(NullProgress):
        def start(self, task, total, unit="img"):
            if task.startswith("train epoch 1"):
                time.sleep(120)  # the parent kills us here, after epoch 0's checkpoint

    train(RunDir.open(sys.argv[1]), 3, StallAfterFirstEpoch())
    """
)


@pytest.mark.timeout(150)
def test_sigkill_during_train_then_resume_continues(tmp_path: Path) -> None:
    run = make_run(tmp_path, epochs=3)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(ROOT), str(HERE)]))
    proc = subprocess.Popen([sys.executable, str(script), str(run.path)], env=env, stderr=subprocess.PIPE)
    first = run.checkpoint_path(0)
    deadline = time.time() + 100
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert first.exists(), proc.stderr.read().decode()[-2000:] if proc.poll() is not None else "no checkpoint in time"
    time.sleep(0.3)  # let it reach the stall
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    before = first.read_bytes()
    assert list_epochs(run.path / "checkpoints") == [0]

    result = train(RunDir.open(run.path), 3)  # the dead child's lock is stale and taken over
    assert result.summary["epochs"] == [1, 3]
    assert list_epochs(run.path / "checkpoints") == [0, 1, 2]
    assert first.read_bytes() == before  # continued, not restarted
    assert [r["epoch"] for r in read_log(run.path / "logs" / "train.jsonl")] == [0, 1, 2]
    assert load_checkpoint(run.checkpoint_path(2))["epoch"] == 2


@pytest.mark.timeout(180)
def test_two_process_torchrun_writes_one_checkpoint_per_epoch(tmp_path: Path) -> None:
    run = make_run(tmp_path, epochs=2)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop("JOINDET_LOCK_HELD_BY", None)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "joindet.pipeline.stages.train_worker",
        "--run-dir",
        str(run.path),
        "--end-epoch",
        "2",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])
    assert summary["summary"]["world_size"] == 2 and summary["summary"]["epochs"] == [0, 2]
    assert list_epochs(run.path / "checkpoints") == [0, 1]
    log = read_log(run.path / "logs" / "train.jsonl")
    assert [r["epoch"] for r in log] == [0, 1]  # rank 0 alone writes
    assert all(r["world_size"] == 2 and r["images"] == NUM_IMAGES for r in log)
    assert load_checkpoint(run.checkpoint_path(1))["extra"]["world_size"] == 2
