"""The command line starts without the heavy libraries: every ``--help``, the read-only store
commands (``priors ls|show|diff|verify``) and ``runs status`` never import torch, prefect,
scipy.optimize or zarr.

Checked in a fresh interpreter (this test process has torch loaded already) by listing
``sys.modules`` after the commands ran. The wall time is measured by
``benchmarks/bench_cli_startup.py``, not here (a timed unit test fails on a loaded machine).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from joindet.priors import BoxSet, PriorStore, write_images_table

#: libraries that take seconds to import and that no help text or manifest read needs.
HEAVY = ("torch", "torchvision", "prefect", "scipy.optimize", "zarr", "cv2", "matplotlib", "pycocotools")

_PROBE = """
import json, sys
import click
from click.testing import CliRunner
from joindet.flows.cli import main

def walk(cmd, path):
    yield path
    if isinstance(cmd, click.Group):
        for name, sub in cmd.commands.items():
            yield from walk(sub, path + [name])

runner = CliRunner()
calls = [p + ["--help"] for p in walk(main, [])] + json.loads(sys.argv[1])
codes = {" ".join(args): runner.invoke(main, args).exit_code for args in calls}
print(json.dumps({"codes": codes, "loaded": [m for m in json.loads(sys.argv[2]) if m in sys.modules]}))
"""


def probe(calls: list[list[str]]) -> dict:
    """Run ``calls`` (plus every command's --help) in a fresh interpreter; exit codes and heavy modules."""
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(calls), json.dumps(HEAVY)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture()
def run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    write_images_table(
        run,
        pa.table(
            {
                "image_id": [1, 2],
                "file": ["1.png", "2.png"],
                "width": pa.array([40, 40], pa.int32()),
                "height": pa.array([30, 30], pa.int32()),
            }
        ),
    )
    rng = np.random.default_rng(0)
    xy = rng.random((6, 2)) * 0.5
    boxes = BoxSet.from_arrays(np.array([1, 1, 1, 2, 2, 2]), np.concatenate([xy, xy + 0.3], 1), rng.random(6))
    store = PriorStore(run)
    store.commit(0, {"smoothed": boxes})
    store.commit(2, {"smoothed": boxes}, parent=0)
    return run


def test_every_help_starts_without_heavy_imports() -> None:
    result = probe([])
    assert len(result["codes"]) > 20  # the root, the groups and every command
    assert set(result["codes"].values()) == {0}, result["codes"]
    assert result["loaded"] == []


def test_read_only_store_commands_start_without_heavy_imports(run: Path) -> None:
    calls = [
        ["priors", "ls", str(run)],
        ["priors", "show", str(run)],
        ["priors", "show", str(run), "--version", "v0000", "--image", "1"],
        ["priors", "diff", str(run), "0", "2"],
        ["priors", "verify", str(run)],
    ]
    result = probe(calls)
    assert all(code == 0 for code in result["codes"].values()), result["codes"]
    assert result["loaded"] == []


def test_runs_status_starts_without_torch(tiny_data: Path, tmp_path: Path) -> None:
    """A run with a (verified) checkpoint: status hashes it against its marker, without torch."""
    import torch

    from joindet.pipeline.checkpoints import save_checkpoint
    from joindet.pipeline.config import make_config
    from joindet.pipeline.run_dir import RunDir

    cfg = make_config("tiny", "synthetic", [f"data.root={tiny_data}", "schedule.epochs=3", "schedule.update_every=1"])
    run = RunDir.create(tmp_path / "run", cfg)
    save_checkpoint(run.checkpoint_path(0), model=torch.nn.Linear(2, 2), epoch=0, config_digest=cfg.digest())
    result = probe([["runs", "status", str(run.path)], ["runs", "status", str(run.path), "--json"]])
    assert all(code == 0 for code in result["codes"].values()), result["codes"]
    assert result["loaded"] == [m for m in result["loaded"] if m in ("cv2", "pycocotools")]  # dataset readers only
