"""Warnings once per run, only where they apply: the random-backbone warning is raised only when
nothing loads weights into the model afterwards, once per run in the process that drives it (not
in Dask workers or torchrun ranks), and the command line prints it once, as one line."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest

from joindet.detector import RandomBackboneWarning, build_model
from joindet.pipeline.config import make_config


def test_no_warning_when_a_checkpoint_gives_the_weights() -> None:
    cfg = make_config("tiny").model
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_model(cfg, warn_random_backbone=False)
        assert not [w for w in caught if issubclass(w.category, RandomBackboneWarning)]
        build_model(cfg)
        assert [w for w in caught if issubclass(w.category, RandomBackboneWarning)]


_SCRIPT = """
from joindet.flows.cli_errors import concise_warnings
concise_warnings()
from joindet.detector import build_model
from joindet.pipeline.config import make_config
def from_a():
    build_model(make_config("tiny").model)
def from_b():
    build_model(make_config("tiny").model)
for _ in range(2):
    from_a()
    from_b()
"""


def test_the_cli_prints_it_once_as_one_line() -> None:
    out = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=300, check=True)
    lines = [line for line in out.stderr.splitlines() if "backbone_weights" in line]
    assert len(lines) == 1 and lines[0].startswith("warning: DetectorConfig.backbone_weights is not set")
    assert "build_model(" not in out.stderr  # no source line echoed


def test_the_cli_prints_it_once_when_the_filters_are_reset_between() -> None:
    """Libraries reset Python's record of shown warnings (``catch_warnings`` on exit); the
    command line still prints the line once."""
    script = _SCRIPT.replace("    from_b()\n", "    from_b()\n    with warnings.catch_warnings():\n        pass\n")
    out = subprocess.run(
        [sys.executable, "-c", "import warnings\n" + script], capture_output=True, text=True, timeout=300, check=True
    )
    assert len([line for line in out.stderr.splitlines() if "backbone_weights" in line]) == 1, out.stderr


def test_models_built_in_workers_and_ranks_do_not_warn(tiny_data) -> None:
    """The initial model (built by each Dask worker's init shards) and the training model (built
    by each torchrun rank) leave the warning to init_priors, in the process that drives the run."""
    import torch

    from joindet.pipeline.distributed import DistInfo
    from joindet.pipeline.model_loading import clear_cache, initial_model
    from joindet.pipeline.stages.train_loop import build_train_parts

    cfg = make_config("tiny", "synthetic", [f"data.root={tiny_data}"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clear_cache()
        initial_model(cfg, torch.device("cpu"))
        build_train_parts(cfg, DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu")))
    assert not [w for w in caught if issubclass(w.category, RandomBackboneWarning)]


@pytest.mark.slow
def test_a_pretrain_on_dask_workers_prints_it_once(tiny_data, tmp_path) -> None:
    """A Prefect flow whose init and mining shards run on two Dask worker processes: one line."""
    from flow_helpers import pretrain_args

    overrides = ["schedule.epochs=2", "schedule.update_every=1", "mine.shards=2", "train.num_workers=0"]
    args = pretrain_args(tiny_data, tmp_path / "run", overrides=overrides)
    args = [a for a in args if a not in ("--threads", "1")] + ["--workers", "2"]
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home")}
    out = subprocess.run(
        [sys.executable, "-m", "joindet", *args], capture_output=True, text=True, timeout=900, env=env, check=False
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [line for line in out.stderr.splitlines() if "backbone_weights" in line]
    assert len(lines) == 1 and lines[0].startswith("warning: "), out.stderr[-3000:]
