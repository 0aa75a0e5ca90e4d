"""``joindet flow resume`` on a finished run answers without starting Prefect, in the same format."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import joindet.flows.cli_flow as cli_flow
import joindet.flows.pretrain as flows_pretrain
from joindet.detector import build_model
from joindet.flows.cli import main
from joindet.pipeline.checkpoints import save_checkpoint
from joindet.pipeline.config import make_config
from joindet.pipeline.data import generate_synthetic, open_dataset
from joindet.pipeline.run_dir import RunDir
from joindet.pipeline.schedule import RunPlan
from joindet.priors import BoxSet


def _run(tmp_path: Path, finished: bool) -> RunDir:
    """One block of one epoch (versions: v0 only): finished once v0 and epoch 0's checkpoint exist."""
    data = generate_synthetic(tmp_path / "data", num_images=4, size=64, val_images=1)
    cfg = make_config(
        "tiny", "synthetic", [f"data.root={data}", "schedule.epochs=1", "schedule.update_every=1", "mine.shards=1"]
    )
    run = RunDir.create(tmp_path / "run", cfg, dataset=open_dataset("synthetic", root=data, split="train"))
    ids = run.image_ids()
    boxes = np.tile(np.array([[0.1, 0.1, 0.6, 0.7]], np.float32), (len(ids), 1))
    run.store.commit(0, {"smoothed": BoxSet.from_arrays(ids, boxes, np.full(len(ids), 0.9, np.float32))})
    if finished:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = build_model(cfg.model)
        save_checkpoint(run.checkpoint_path(0), model=model, epoch=0, config_digest=cfg.digest(), prior_version=0)
    assert RunPlan(run).status().complete is finished
    return run


def _resume(run: RunDir, *extra: str) -> dict:
    result = CliRunner().invoke(main, ["flow", "resume", str(run.path), "--quiet", "--json", "--threads", "1", *extra])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    report.pop("seconds", None)  # wall time of this call
    return report


class _Refused(AssertionError):
    pass


def _no_prefect(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make starting Prefect fail the test; returns the list of attempts."""
    attempts: list[str] = []

    def refuse(*_args, **_kwargs):
        attempts.append("prefect")
        raise _Refused("Prefect was started for a run with nothing left to do")

    monkeypatch.setattr(cli_flow, "prefect_environment", refuse)
    monkeypatch.setattr(flows_pretrain.pretrain_flow, "with_options", refuse)
    return attempts


def test_finished_run_resumes_without_prefect_with_the_plain_report(tmp_path: Path, monkeypatch) -> None:
    run = _run(tmp_path, finished=True)
    plain = _resume(run, "--no-prefect")
    attempts = _no_prefect(monkeypatch)
    assert _resume(run) == plain
    assert attempts == []
    assert plain["train_skipped"] == [1] and [v["version"] for v in plain["versions"]] == [0]


def test_unfinished_run_still_goes_to_prefect(tmp_path: Path, monkeypatch) -> None:
    run = _run(tmp_path, finished=False)
    attempts = _no_prefect(monkeypatch)
    result = CliRunner().invoke(main, ["flow", "resume", str(run.path), "--quiet", "--json", "--threads", "1"])
    assert result.exit_code != 0 and attempts == ["prefect"]
    assert not run.checkpoint_path(0).exists()


@pytest.mark.parametrize(
    "options, shards",
    [
        (["--threads", "3"], 3),  # tiny's 2 shards raised to one per thread
        (["--workers", "5"], 5),  # one per worker of a local Dask cluster (not started here)
        (["--threads", "3", "--set", "mine.shards=1"], 1),  # the user's count is kept
        (["--threads", "3", "--shards", "2"], 2),
        (["--threads", "1"], 2),  # never below the preset's
    ],
)
def test_run_json_records_the_resolved_shard_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, options: list[str], shards: int
) -> None:
    data = generate_synthetic(tmp_path / "data", num_images=4, size=64, val_images=1)
    seen: list[int] = []

    def pretrain_stub(run, choice, quiet=False, use_prefect=True):  # the stages are not what is tested
        seen.append(run.config.mine.shards)
        return {"run": str(run.path)}

    monkeypatch.setattr(cli_flow, "execute_pretrain", pretrain_stub)
    args = ["flow", "run", "pretrain", "--dataset", "synthetic", "--data-root", str(data), "--preset", "tiny"]
    result = CliRunner().invoke(main, [*args, "--run-dir", str(tmp_path / "run"), "--json", "--quiet", *options])
    assert result.exit_code == 0, result.output
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["config"]["mine"]["shards"] == shards and seen == [shards]
