"""The joindet CLI without training: groups, option errors, clean one-line errors, status, defaults."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from joindet.flows.cli import main
from joindet.flows.cli_flow import default_run_dir
from joindet.flows.reports import format_report, numeric_leaves, version_table
from joindet.pipeline.schedule import RunPlan


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def test_every_group_hangs_off_the_root() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for group in ("flow", "stage", "runs", "eval", "priors", "data", "report"):
        assert f"  {group} " in result.output


@pytest.mark.parametrize(
    "args, words",
    [
        (["flow", "run", "pretrain", "--workers", "2", "--no-prefect"], "drop --no-prefect"),
        (["flow", "run", "pretrain", "--workers", "2", "--dask-address", "tcp://h:1"], "only one"),
        (["flow", "run", "pretrain", "--dask-address", "localhost"], "tcp://HOST:PORT"),
        (["flow", "run", "pretrain", "--preset", "huge"], "unknown preset"),
        (["flow", "run", "pretrain", "--set", "priors.momentum"], "section.key=value"),
        (["flow", "run", "pretrain", "--set", "priors.nope=1"], "unknown config key"),
    ],
)
def test_bad_options_fail_with_one_line_before_any_work(args: list[str], words: str, tmp_path: Path) -> None:
    result = invoke(*args, "--run-dir", str(tmp_path / "run"))
    assert result.exit_code != 0
    assert words in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["runs", "status", "{missing}"],
        ["flow", "resume", "{missing}"],
        ["stage", "run", "smooth", "--run", "{missing}"],
        ["eval", "priors", "{missing}"],
    ],
)
def test_a_missing_run_is_one_clear_line(args: list[str], tmp_path: Path) -> None:
    missing = str(tmp_path / "nope")
    result = invoke(*[a.replace("{missing}", missing) for a in args])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and missing in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.fixture
def fresh_run(tiny_data: Path, tmp_path: Path):
    from joindet.pipeline.config import make_config
    from joindet.pipeline.run_dir import RunDir

    cfg = make_config("tiny", "synthetic", [f"data.root={tiny_data}", "schedule.epochs=5", "schedule.update_every=2"])
    return RunDir.create(tmp_path / "run", cfg)


def test_status_of_a_new_run_is_all_pending_with_the_next_command(fresh_run) -> None:
    result = invoke("runs", "status", str(fresh_run.path), "--json")
    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    assert {e["state"] for e in status["entries"]} == {"pending"}
    assert status["next_command"] == f"joindet flow resume {fresh_run.path}"
    text = invoke("runs", "status", str(fresh_run.path))
    assert "latest version: none" in text.output and "next: joindet flow resume" in text.output


def test_stage_defaults_follow_the_schedule(fresh_run) -> None:
    assert RunPlan(fresh_run).next_version() == 2  # blocks [0,2) [2,4) [4,5): versions 0, 2, 4
    assert RunPlan(fresh_run).next_train_end() == 2
    import torch

    from joindet.pipeline.checkpoints import save_checkpoint

    ckpt = fresh_run.checkpoint_path(2)
    save_checkpoint(ckpt, model=torch.nn.Linear(1, 1), epoch=2, config_digest=fresh_run.config.digest())
    assert RunPlan(fresh_run).next_train_end() == 4
    ckpt.write_bytes(b"")  # a checkpoint that does not verify is not trained
    assert RunPlan(fresh_run).next_train_end() == 2


def test_default_run_dir_names_dataset_preset_and_time() -> None:
    when = dt.datetime(2026, 1, 2, 3, 4, 5)
    assert default_run_dir("synthetic", "tiny", when) == Path("runs/synthetic-tiny-20260102-030405")


def test_report_and_artifact_rows() -> None:
    metrics = {"v0002": {"smoothed": {"AP": 0.1, "AR@100": 0.25, "AP75": None}}}
    assert numeric_leaves(metrics) == {"v0002.smoothed.AP": 0.1, "v0002.smoothed.AR@100": 0.25}
    rows = version_table(2, {"boxes": {"smoothed": 9}, "seconds": 0.5}, metrics)
    assert {"version": 2, "field": "boxes.smoothed", "value": 9} in rows
    assert {"version": 2, "field": "v0002.smoothed.AR@100", "value": 0.25} in rows
    report = {
        "run": "runs/x",
        "seconds": 12.0,
        "trained_to": 3,
        "train_skipped": [],
        "quarantined": [{"image_id": 7, "file": "train/7.jpg", "reason": "truncated"}],
        "versions": [
            {"version": 0, "committed_now": False, "mined": [], "reused": [], "statistics": {}, "metrics": {}},
            {
                "version": 2,
                "committed_now": True,
                "mined": [1],
                "reused": [0],
                "statistics": {"boxes": {"smoothed": 9}},
                "metrics": metrics,
            },
        ],
    }
    text = "\n".join(format_report(report))
    assert "v0000: already committed" in text
    assert "v0002: committed now, shards mined [1] reused [0], 9 smoothed boxes, AR@100=0.250" in text
    assert "quarantined images (1): 7" in text
    assert "joindet runs status runs/x" in text and "joindet priors ls runs/x" in text


def test_a_failed_step_shows_in_status_until_a_flow_run_succeeds(fresh_run) -> None:
    from joindet.pipeline.flow_state import clear_failure, read_failure, step

    with pytest.raises(RuntimeError), step(fresh_run.path, "train epochs 0-1"):
        raise RuntimeError("out of memory")
    assert read_failure(fresh_run.path)["step"] == "train epochs 0-1"
    status = json.loads(invoke("runs", "status", str(fresh_run.path), "--json").output)
    failed = [e for e in status["entries"] if e["state"] == "failed"]
    assert [e["name"] for e in failed] == ["train epochs 0-1"] and "out of memory" in failed[0]["detail"]
    text = invoke("runs", "status", str(fresh_run.path)).output
    assert "last flow run failed at train epochs 0-1" in text
    clear_failure(fresh_run.path)
    assert read_failure(fresh_run.path) is None
    status = json.loads(invoke("runs", "status", str(fresh_run.path), "--json").output)
    assert "failed" not in {e["state"] for e in status["entries"]}
