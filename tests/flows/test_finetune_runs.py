"""Finetune runs are runs: `runs status` shows their schedule, `flow resume` continues them,
`eval proposals` and `report` work on them, and the finetune points to commands that do."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from joindet.flows.cli import main


@pytest.mark.slow
def test_a_finetune_run_has_status_resume_eval_and_report(tiny_data: Path, tmp_path: Path) -> None:
    ft = tmp_path / "ft"
    common = ["--set", "train.num_workers=0", "--no-prefect", "--quiet"]
    args = ["flow", "run", "finetune", "--data-root", str(tiny_data), "--run-dir", str(ft)]
    res = CliRunner().invoke(main, [*args, "--set", "finetune.epochs=2", "--set", "finetune.fraction=0.5", *common])
    assert res.exit_code == 0, res.output
    assert f"joindet runs status {ft}" in res.output

    status = CliRunner().invoke(main, ["runs", "status", str(ft), "--json"])
    assert status.exit_code == 0, status.output
    st = json.loads(status.output)
    assert st["kind"] == "finetune" and st["complete"] and st["next_command"] is None, st
    assert st["entries"][0]["detail"].startswith("2 of 2 epochs")

    # an interrupted run (its last epoch and the evaluation lost): status says so, resume redoes them
    for name in ("checkpoints/epoch-0001.pt", "checkpoints/epoch-0001.json", "metrics/finetune-epoch-0001.json"):
        (ft / name).unlink()
    st = json.loads(CliRunner().invoke(main, ["runs", "status", str(ft), "--json"]).output)
    assert not st["complete"] and st["next_command"] == f"joindet flow resume {ft}"
    assert st["entries"][0]["state"] == "pending" and "of 2 epochs" in st["entries"][0]["detail"]
    more = CliRunner().invoke(main, ["flow", "resume", str(ft), "--no-prefect", "--quiet"])
    assert more.exit_code == 0, more.output
    st = json.loads(CliRunner().invoke(main, ["runs", "status", str(ft), "--json"]).output)
    assert st["complete"] and st["last_checkpoint"] == 1

    evaluated = CliRunner().invoke(main, ["eval", "proposals", str(ft), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    report = CliRunner().invoke(main, ["report", str(ft), "--no-eval"])
    assert report.exit_code == 0 and "report:" in report.output, report.output
