"""Prefect: a flow run carries the run's main configuration fields as tags and parameter, artifact
keys are unique per run, and the UI link is printed only when a server is configured."""

from __future__ import annotations

from pathlib import Path

import pytest

from joindet.flows.prefect_steps import (
    artifact_key,
    finetune_labels,
    finetune_tags,
    flow_run_link,
    label_flow_run,
    run_labels,
    run_tags,
)


@pytest.fixture
def run(tiny_data: Path, tmp_path: Path):
    from joindet.pipeline.config import make_config
    from joindet.pipeline.run_dir import RunDir

    cfg = make_config("tiny", "synthetic", [f"data.root={tiny_data}", "priors.update=nms"])
    return RunDir.create(tmp_path / "a" / "run", cfg)


def test_artifact_keys_differ_for_runs_in_folders_of_the_same_name(run, tiny_data: Path, tmp_path: Path) -> None:
    from joindet.pipeline.run_dir import RunDir

    other = RunDir.create(tmp_path / "b" / "run", run.config)
    a, b = artifact_key(run, 2), artifact_key(other, 2)
    assert a != b and a.startswith("run-") and a.endswith("-v0002") and a == artifact_key(run, 2)
    assert all(c.islower() or c.isdigit() or c == "-" for c in a)


def test_labels_and_tags_name_the_main_fields(run) -> None:
    labels = run_labels(run)
    assert {k: labels[k] for k in ("dataset", "preset", "update")} == {
        "dataset": "synthetic",
        "preset": "tiny",
        "update": "nms",
    }
    assert run_tags(run) == ["dataset:synthetic", "preset:tiny", f"source:{labels['source']}", "update:nms"]


def test_link_only_with_a_configured_server(monkeypatch) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:4200/api"}):
        assert flow_run_link("abc") == "http://127.0.0.1:4200/runs/flow-run/abc"
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert flow_run_link("abc") is None


@pytest.mark.slow
def test_a_flow_run_gets_the_tags_and_config_parameter(run, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect-home"))
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext

    @flow(name="joindet-label-test")
    def labelled(run_path: str) -> str:
        label_flow_run(run)
        return str(FlowRunContext.get().flow_run.id)

    flow_run_id = labelled(str(run.path))
    with get_client(sync_client=True) as client:
        fr = client.read_flow_run(flow_run_id)
    assert set(run_tags(run)) <= set(fr.tags)
    assert fr.parameters["config"]["dataset"] == "synthetic" and fr.parameters["run_path"] == str(run.path)


def test_finetune_labels_and_tags_name_its_main_fields(tmp_path: Path) -> None:
    from joindet.pipeline.config import make_config

    cfg = make_config("tiny", "coco", ["finetune.fraction=0.1", "finetune.seed=3"])
    init = str(tmp_path / "pre" / "checkpoints" / "epoch-0005.pt")
    assert finetune_tags(cfg, init) == ["dataset:coco", "preset:tiny", "fraction:0.1", "init:pre"]
    assert finetune_tags(cfg, None)[-1] == "init:none"
    labels = finetune_labels(tmp_path / "ft", cfg, init)
    assert labels["init"] == init and labels["fraction"] == 0.1 and labels["seed"] == 3
    assert (labels["epochs"], labels["lr_drop"]) == (4, 4)  # DETReg's 10 % schedule x the tiny preset's 0.01


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:DetectorConfig.backbone_weights is not set")  # the baseline: no init
def test_a_finetune_flow_run_gets_tags_and_labels(tiny_data: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect-home"))
    from prefect.client.orchestration import get_client

    from joindet.flows.finetune import finetune_flow
    from joindet.pipeline.config import make_config

    cfg = make_config("tiny", "synthetic", [f"data.root={tiny_data}", "finetune.epochs=1", "train.num_workers=0"])
    state = finetune_flow(str(tmp_path / "ft"), None, cfg.to_dict(), quiet=True, return_state=True)
    assert state.is_completed()
    with get_client(sync_client=True) as client:
        fr = client.read_flow_run(state.state_details.flow_run_id)
    assert set(finetune_tags(cfg, None)) <= set(fr.tags)
    assert fr.parameters["labels"]["dataset"] == "synthetic" and fr.parameters["labels"]["epochs"] == 1
    assert fr.parameters["config"]["finetune"]["epochs"] == 1  # the whole config is kept


def test_report_timings_count_the_flow_start_apart_from_init() -> None:
    from joindet.pipeline.report.collect import VersionInfo, stage_timings

    v0 = VersionInfo(0, None, "2026-12-03T10:00:30+00:00", ["smoothed"], {}, None)
    rows = stage_timings("2026-12-03T10:00:00+00:00", [v0], [], flow_started="2026-12-03T10:00:20+00:00")
    assert [(t.stage, t.seconds) for t in rows] == [
        ("flow start (Prefect server, flow run)", 20.0),
        ("init_priors v0000", 10.0),
    ]
    rows = stage_timings("2026-12-03T10:00:00+00:00", [v0], [])  # --no-prefect: no record
    assert [(t.stage, t.seconds) for t in rows] == [("init_priors v0000", 30.0)]
