"""Scaling out, on this CPU: one JSON document on stdout, absolute paths, mining independent of the
runner, the GPU placement rule, cluster options, multi-node training on a loopback Dask cluster."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from flow_helpers import TWO_ROUNDS, CliProcess, pretrain_args

#: One update round (versions 0 and 1, checkpoints of epochs 0 and 1).
ONE_ROUND = ["schedule.epochs=2" if o.startswith("schedule.epochs") else o for o in TWO_ROUNDS]


def _finish_json(p: CliProcess, timeout: float) -> tuple[dict, str]:
    """The process's stdout parsed as exactly one JSON document (fails with its stderr)."""
    code, out, err = p.finish(timeout)
    assert code == 0, err[-4000:]
    try:
        return json.loads(out), err
    except json.JSONDecodeError as exc:
        raise AssertionError(f"stdout is not one JSON document ({exc}):\n{out[:2000]}") from None


@pytest.mark.slow
def test_json_with_torchrun_workers_prints_one_document(tiny_data: Path, tmp_path: Path) -> None:
    args = pretrain_args(tiny_data, tmp_path / "run", "--no-prefect", "--nproc-per-node", "2", overrides=ONE_ROUND)
    report, err = _finish_json(CliProcess(args, tmp_path / "home"), timeout=400)
    assert report["trained_to"] == 1
    # rank 0's stage summary went to stderr, not into the document
    assert '"stage": "train"' in err or "world_size" in err


def test_relative_run_dir_and_data_root_are_recorded_absolute(
    tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from joindet.flows.cli import main

    monkeypatch.chdir(tmp_path)
    rel_data = os.path.relpath(tiny_data, tmp_path)
    args = pretrain_args(Path(rel_data), Path("rel-run"), "--no-prefect", overrides=["schedule.epochs=1"])
    result = CliRunner().invoke(main, args + ["--set", "schedule.update_every=1"])
    assert result.exit_code == 0, result.output
    info = json.loads((tmp_path / "rel-run" / "run.json").read_text())
    assert os.path.isabs(info["config"]["data"]["root"])
    assert info["config"]["data"]["root"] == str(tiny_data)
    report = json.loads(result.stdout)
    assert report["run"] == str(tmp_path / "rel-run")
