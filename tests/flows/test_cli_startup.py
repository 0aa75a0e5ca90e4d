"""The command line starts without the heavy libraries: every ``--help``, the read-only store
commands (``priors ls|show|diff|verify``) and ``runs status`` never import torch, prefect,
scipy.optimize, zarr or pandas (which pyarrow imports on its first conversion unless
``flows.cli_light`` keeps it out).

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
HEAVY = ("torch", "torchvision", "prefect", "scipy.optimize", "zarr", "cv2", "matplotlib", "pycocotools", "pandas")

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
results = {" ".join(args): runner.invoke(main, args) for args in calls}
codes = {name: r.exit_code for name, r in results.items()}
stdout = results[" ".join(calls[-1])].output
print(json.dumps({"codes": codes, "loaded": [m for m in json.loads(sys.argv[2]) if m in sys.modules], "stdout": stdout}))
"""


def probe(calls: list[list[str]]) -> dict:
    """Run ``calls`` (plus every command's --help) in a fresh interpreter; exit codes, the modules of
    ``heavy`` loaded, and the output of the last call."""
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


def test_runs_status_of_a_finetune_run_starts_without_torch(tiny_data: Path, tmp_path: Path) -> None:
    """A finetune run (``finetune.json``, one checkpoint of 3 scheduled epochs): its schedule is
    read without torch."""
    import torch

    from joindet.pipeline.checkpoints import save_checkpoint
    from joindet.pipeline.config import make_config
    from joindet.pipeline.run_dir import RunDir

    cfg = make_config("tiny", "synthetic", [f"data.root={tiny_data}", "finetune.epochs=3"])
    run = RunDir.create(tmp_path / "ft", cfg)
    (run.path / "finetune.json").write_text(json.dumps({"init_checkpoint": None, "fraction": 1.0}))
    save_checkpoint(run.checkpoint_path(0), model=torch.nn.Linear(2, 2), epoch=0, config_digest=cfg.digest())
    result = probe([["runs", "status", str(run.path), "--json"]])
    assert set(result["codes"].values()) == {0}, result["codes"]
    assert result["loaded"] == [m for m in result["loaded"] if m in ("cv2", "pycocotools")]  # dataset readers only
    status = json.loads(result["stdout"][result["stdout"].index("{") :])
    assert status["kind"] == "finetune" and status["entries"][0]["detail"].startswith("1 of 3 epochs")


_NO_PANDAS = """
import sys
import numpy as np
import pyarrow as pa
from joindet.flows.cli_light import without_pandas
with without_pandas():
    pa.table({"a": np.arange(3)})
    assert "pandas" not in sys.modules
    try:
        import pandas
    except ImportError:
        pass
    else:
        raise AssertionError("pandas imported inside without_pandas")
import pandas as pd
assert pa.table(pd.DataFrame({"a": [1, 2]})).num_rows == 2
print("ok")
"""


def test_pandas_is_kept_out_only_while_a_light_command_runs() -> None:
    """After the block, pandas imports and pyarrow converts pandas objects as usual."""
    out = subprocess.run([sys.executable, "-c", _NO_PANDAS], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
