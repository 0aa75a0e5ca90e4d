"""Fault injection through the command line (issue 15): every expected failure is one line naming
the file and the fix, no traceback, a non-zero exit; a refused command changes nothing.

The pipeline side of these cases is tests/pipeline/test_faults.py. One tiny run (6 images of
64 px, 2 epochs, a version after each) is built once, in this process and without Prefect; each
test works on a copy. The run's settings and helpers are tests/fault_run.py.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
from pathlib import Path

import pytest
from click.testing import CliRunner
from fault_run import SETTINGS, copy_run, flip, sha

from joindet.flows.cli import main
from joindet.priors import PriorStore

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def cli(*args: str) -> tuple[int, str, str]:
    """Run ``joindet ARGS`` in this process; returns (exit code, stdout, stderr). Never a traceback."""
    res = CliRunner().invoke(main, [str(a) for a in args])
    out, err = res.stdout, res.stderr or ""
    assert "Traceback" not in out + err, out + err
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return res.exit_code, out, err


def one_line_error(err: str, *needles: str) -> None:
    # A one-line warning (e.g. no backbone weights) may precede the error; nothing else may.
    err = "".join(line for line in err.splitlines(keepends=True) if not line.startswith("warning: "))
    assert err.startswith("Error: ") and err.count("\n") == 1, err
    for n in needles:
        assert n in err, (n, err)


def pretrain_args(data: Path, run: Path, *extra: str) -> list[str]:
    args = ["flow", "run", "pretrain", "--dataset", "synthetic", "--data-root", data, "--run-dir", run]
    for s in SETTINGS:
        args += ["--set", s]
    return [*args, "--no-prefect", "--quiet", *extra]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, fault_data: Path) -> Path:
    run = tmp_path_factory.mktemp("base") / "run"
    code, out, err = cli(*pretrain_args(fault_data, run))
    assert code == 0, out + err
    return run


@pytest.fixture
def run(base: Path, tmp_path: Path) -> Path:
    return copy_run(base, tmp_path)


def test_runs_verify_good_run_exits_0(run: Path) -> None:
    code, out, _ = cli("runs", "verify", run)
    assert code == 0 and out.startswith("OK:")


def test_corrupt_checkpoint_refused_by_resume_and_verify(run: Path) -> None:
    flip(run / "checkpoints" / "epoch-0000.pt")
    for f in ("epoch-0001.pt", "epoch-0001.json"):
        (run / "checkpoints" / f).unlink()
    code, _, err = cli("flow", "resume", run, "--no-prefect", "--quiet")
    assert code == 1
    one_line_error(err, "epoch-0000.pt is damaged", "delete it", "retrain epoch 0")
    assert not (run / "checkpoints" / "epoch-0001.pt").exists()
    code, _, err = cli("runs", "verify", run)
    assert code == 1 and "BAD: " in err and "epoch-0000.pt" in err
    code, _, err = cli("eval", "proposals", run, "--epoch", "0")
    assert code == 1 and "epoch-0000.pt is damaged" in err


def test_refused_second_writer_leaves_run_json_and_images_byte_identical(run: Path, fault_data: Path) -> None:
    before = {n: sha(run / n) for n in ("run.json", "images.parquet")}
    with PriorStore(run).lock():  # a running writer
        code, _, err = cli(*pretrain_args(fault_data, run, "--force", "--set", "schedule.epochs=6"))
        assert code == 1
        one_line_error(err, "locked by another writer")
        code, _, err = cli(*pretrain_args(fault_data, run, "--shards", "3"))
        assert code == 1 and "locked by another writer" in err
    assert {n: sha(run / n) for n in before} == before
    assert not list(run.glob("run.json.replaced-*"))


def test_changed_config_refused_before_any_work(run: Path, fault_data: Path) -> None:
    before = sha(run / "run.json")
    code, _, err = cli(*pretrain_args(fault_data, run, "--force", "--set", "model.lr=0.001"))
    assert code == 1
    one_line_error(err, "epoch-0000.pt", "trained under another configuration")
    assert sha(run / "run.json") == before


def test_disk_full_during_checkpoint_save_then_resume_is_byte_identical(
    run: Path, base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for f in ("epoch-0001.pt", "epoch-0001.json"):
        (run / "checkpoints" / f).unlink()
    real_fsync = os.fsync

    def full(fd: int) -> None:  # the disk fills up while epoch 1's checkpoint is flushed
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(".epoch-0001.pt."):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full)
    code, _, err = cli("stage", "run", "train", "--run", run, "--epoch", "2", "--quiet")
    assert code == 1
    one_line_error(err, "cannot write checkpoint", "epoch-0001.pt", "No space left on device", "free space")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch-0000.json", "epoch-0000.pt"]
    monkeypatch.setattr(os, "fsync", real_fsync)
    code, _, err = cli("flow", "resume", run, "--no-prefect", "--quiet")
    assert code == 0, err
    assert sha(run / "checkpoints" / "epoch-0001.pt") == sha(base / "checkpoints" / "epoch-0001.pt")


def test_damaged_manifest_in_status_ls_and_resume(run: Path) -> None:
    (run / "priors" / "v0001" / "manifest.json").write_text("{ torn")
    code, out, _ = cli("runs", "status", run, "--json")
    assert code == 0 and '"damaged"' in out and "manifest.json" in out
    code, out, _ = cli("priors", "ls", run, "--json")
    rows = json.loads(out)
    assert code == 0 and [r["version"] for r in rows] == [0, 1]
    assert "error" not in rows[0] and "manifest.json" in rows[1]["error"]
    code, _, err = cli("flow", "resume", run, "--no-prefect", "--quiet")
    assert code == 1
    one_line_error(err, "version 1 is damaged", "stage run mine", "--version 1 --force")
    # the repair the message gives
    code, _, err = cli("stage", "run", "mine", "--run", run, "--version", "1", "--force", "--quiet")
    assert code == 0, err
    code, _, err = cli("flow", "resume", run, "--no-prefect", "--quiet")
    assert code == 0, err
    code, out, _ = cli("runs", "verify", run)
    assert code == 0, out


def test_smooth_force_on_unmined_shards_keeps_the_version_and_restore_puts_one_back(run: Path) -> None:
    manifest = sha(run / "priors" / "v0001" / "manifest.json")
    code, out, _ = cli("priors", "gc", run, "--dry-run")
    assert code == 0 and "would remove priors/_staging/v0001" in out and (run / "priors" / "_staging").exists()
    code, _, _ = cli("priors", "gc", run, "--yes")
    assert code == 0 and not (run / "priors" / "_staging").exists()
    code, _, err = cli("stage", "run", "smooth", "--run", run, "--version", "1", "--force", "--quiet")
    assert code == 1
    one_line_error(err, "shards not mined")
    assert sha(run / "priors" / "v0001" / "manifest.json") == manifest
    assert not (run / "priors" / "_replaced").exists()
    # mine --force re-mines (the committed version is moved aside) ...
    code, out, err = cli("stage", "run", "mine", "--run", run, "--version", "1", "--force", "--json")
    assert code == 0 and '"skipped": false' in out, out + err
    assert not (run / "priors" / "v0001").exists()
    # ... and what was moved aside can be listed and put back
    code, out, _ = cli("priors", "restore", run, "--version", "1", "--list")
    assert code == 0 and out.startswith("v0001-")
    code, _, _ = cli("priors", "restore", run, "--version", "1")
    assert code == 0 and sha(run / "priors" / "v0001" / "manifest.json") == manifest
    code, _, err = cli("priors", "restore", run, "--version", "1")
    assert code == 1 and "no moved-aside copy" in err


def test_malicious_or_unreadable_backbone_file_is_one_line(fault_data: Path, tmp_path: Path) -> None:
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    evil = tmp_path / "resnet.pth"
    evil.write_bytes(pickle.dumps({"conv1.weight": Payload()}))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00" * 100)
    for weights, needle in ((evil, "cannot be loaded as weights only"), (garbage, "cannot be loaded as weights only")):
        run = tmp_path / f"run-{weights.stem}"
        code, _, err = cli(*pretrain_args(fault_data, run, "--set", f"model.backbone_weights={weights}"))
        assert code == 1
        one_line_error(err, weights.name, needle)
        assert "weights_only" not in err and not (run / "checkpoints").exists()
