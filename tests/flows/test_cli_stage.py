"""``joindet stage run``: init and mine take the runner options of ``flow run pretrain`` and run
their shards there; options a stage would ignore are refused."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from joindet.flows.cli import main
from joindet.pipeline.config import make_config
from joindet.pipeline.data import generate_synthetic, open_dataset
from joindet.pipeline.run_dir import RunDir

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _run(tmp_path: Path, name: str = "run", shards: int = 3) -> RunDir:
    """The tiny preset on 6 synthetic images, batches of 2: init is 3 batches."""
    data = tmp_path / "data"
    if not data.exists():
        generate_synthetic(data, num_images=6, size=64, val_images=1)
    overrides = [f"data.root={data}", f"mine.shards={shards}", "mine.batch_size=2", "mine.device=cpu"]
    cfg = make_config("tiny", "synthetic", overrides)
    return RunDir.create(tmp_path / name, cfg, dataset=open_dataset("synthetic", root=data, split="train"))


def _stage(*args: str, stdout: bool = False) -> tuple[int, str]:
    """Exit code and output (``stdout``: stdout alone, where --json goes; warnings go to stderr)."""
    result = CliRunner().invoke(main, ["stage", "run", *args])
    return result.exit_code, result.stdout if stdout else result.output


def _v0(run: RunDir) -> tuple[np.ndarray, np.ndarray]:
    b = run.store.read(0, "region")
    return b.image_ids, b.boxes


def test_init_runs_its_shards_on_the_thread_pool(tmp_path: Path) -> None:
    run = _run(tmp_path)
    code, out = _stage("init", str(run.path), "--threads", "3", "--json", "--quiet", stdout=True)
    assert code == 0, out
    result = json.loads(out)
    assert result["stage"] == "init_priors" and not result["skipped"] and result["summary"]["shards"] == 3
    assert sorted(run.store.staged_shards(0)) == [0, 1, 2] and run.store.has_version(0)
    one = _run(tmp_path, "one", shards=1)
    code, out = _stage("init", str(one.path), "--threads", "1", "--quiet")
    assert code == 0, out
    for a, b in zip(_v0(run), _v0(one)):
        assert np.array_equal(a, b)
    # again: committed, nothing computed
    code, out = _stage("init", str(run.path), "--threads", "3", "--json", "--quiet", stdout=True)
    assert code == 0 and json.loads(out)["skipped"], out


@pytest.mark.parametrize(
    "args, words",
    [
        (["smooth", "--workers", "2"], "place the shards of init and mine"),
        (["train", "--threads", "2"], "place the shards of init and mine"),
        (["init", "--set", "priors.tau=0.5"], "cluster.KEY=VALUE only"),
        (["init", "--workers", "2", "--no-prefect"], "drop --no-prefect"),
        (["init", "--cluster", "threads", "--workers", "2"], "--threads, not --workers"),
        (["mine", "--workers", "2", "--nnodes", "2"], "--nnodes trains"),
        (["init", "--nodes", "2"], "--cluster slurm|pbs"),
    ],
)
def test_runner_options_a_stage_would_ignore_are_refused(tmp_path: Path, args: list[str], words: str) -> None:
    stage, *options = args
    code, out = _stage(stage, str(tmp_path / "no-run"), *options)
    assert code == 2 and words in out, out


@pytest.mark.slow
@pytest.mark.cluster
def test_init_on_a_local_dask_cluster_gives_the_threads_v0(tmp_path: Path) -> None:
    threads = _run(tmp_path, "threads")
    assert _stage("init", str(threads.path), "--threads", "1", "--quiet")[0] == 0
    dask = _run(tmp_path, "dask")
    code, out = _stage("init", str(dask.path), "--workers", "2", "--json", "--quiet")
    assert code == 0, out
    for a, b in zip(_v0(threads), _v0(dask)):
        assert np.array_equal(a, b)
    markers = dask.store.staged_shards(0)
    assert sorted(markers) == [0, 1, 2]
    pids = {m.meta["pid"] for m in markers.values()}
    assert len(pids) <= 2 and os.getpid() not in pids  # the workers' processes, not this one
    assert all(m.meta["threads"] == 1 and m.meta["device"] == "cpu" for m in markers.values())
