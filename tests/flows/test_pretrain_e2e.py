"""End to end on synthetic data with the tiny preset: two rounds, kills and resumes, lock, Dask.

One uninterrupted pretrain through the Prefect flow (temporary server, mining on a local Dask
cluster of 2 processes) is the reference; interrupted runs (``--no-prefect``, threads, SIGKILL of
the whole process group) must end with priors identical to it, and mining its version 1 again
with threads from the same checkpoint must reproduce the Dask-mined one exactly.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from flow_helpers import TWO_ROUNDS, assert_same_priors, pretrain_args, run_cli

from joindet.flows.cli import main
from joindet.flows.reports import numeric_leaves

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reference_run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """An uninterrupted two-round pretrain through Prefect, mining on Dask; returns (run dir, --json report)."""
    d = tmp_path_factory.mktemp("reference")
    report = run_cli(pretrain_args(tiny_data, d / "run", "--workers", "2"), d / "prefect-home", timeout=400)
    return d / "run", report


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_two_round_pretrain_commits_versions_0_n_2n_and_checkpoints(reference_run: tuple[Path, dict]) -> None:
    from joindet.priors import PriorStore

    run, report = reference_run
    assert PriorStore(run).versions() == [0, 1, 2]
    assert [v["version"] for v in report["versions"]] == [0, 1, 2]
    assert all(v["committed_now"] for v in report["versions"])
    assert [v["mined"] for v in report["versions"][1:]] == [[0, 1, 2, 3]] * 2
    assert sorted(p.name for p in (run / "checkpoints").glob("epoch-*.pt")) == [
        "epoch-0000.pt",
        "epoch-0001.pt",
        "epoch-0002.pt",
    ]
    assert report["trained_to"] == 2
    # The synthetic dataset has ground truth: every version was evaluated.
    for v in report["versions"]:
        assert any(k.endswith("AR@100") for k in numeric_leaves(v["metrics"])), v
    status = CliRunner().invoke(main, ["runs", "status", str(run), "--json"])
    assert status.exit_code == 0, status.output
    assert '"complete": true' in status.output


def test_each_version_is_published_as_a_prefect_table_artifact(reference_run: tuple[Path, dict]) -> None:
    import sqlite3

    # The flow's temporary server is gone; its database (in the subprocess's PREFECT_HOME) stays.
    db = sqlite3.connect(reference_run[0].parent / "prefect-home" / "prefect.db")
    try:
        rows = db.execute("select key, type, data from artifact where key is not null").fetchall()
        flows = db.execute("select state_type from flow_run").fetchall()
    finally:
        db.close()
    assert flows == [("COMPLETED",)]
    from joindet.flows.prefect_steps import run_key

    prefix = run_key(reference_run[0])  # keys are unique per run: folder name + digest of its path
    assert sorted((k, t) for k, t, _ in rows) == [
        (f"{prefix}-v0000", "table"),
        (f"{prefix}-v0001", "table"),
        (f"{prefix}-v0002", "table"),
    ]
    assert all("AR@100" in data for _, _, data in rows)


def test_eval_commands_score_priors_and_proposals(reference_run: tuple[Path, dict]) -> None:
    import json

    run = reference_run[0]
    priors = CliRunner().invoke(
        main, ["eval", "priors", str(run), "--version", "2", "--kind", "smoothed", "--kind", "region", "--json"]
    )
    assert priors.exit_code == 0, priors.output
    assert set(json.loads(priors.output)["v0002"]) == {"smoothed", "region"}
    text = CliRunner().invoke(main, ["eval", "priors", str(run), "--version", "2"])
    assert "v0002.smoothed.AR@100: " in text.output
    proposals = CliRunner().invoke(main, ["eval", "proposals", str(run), "--epoch", "2", "--json"])
    assert proposals.exit_code == 0, proposals.output
    assert {"AP", "AR@100"} <= set(json.loads(proposals.output)["metrics"])
    assert (run / "metrics").is_dir()


def test_rerunning_a_finished_run_does_nothing(reference_run: tuple[Path, dict], tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(reference_run[0], run)
    before = {p.name: _sha(p) for p in (run / "checkpoints").glob("*.pt")}
    result = CliRunner().invoke(main, ["flow", "resume", str(run), "--no-prefect", "--quiet", "--json"])
    assert result.exit_code == 0, result.output
    assert '"committed_now": true' not in result.output
    assert {p.name: _sha(p) for p in (run / "checkpoints").glob("*.pt")} == before


def test_a_changed_config_is_refused_naming_the_field(reference_run: tuple[Path, dict], tiny_data: Path) -> None:
    run = reference_run[0]
    args = pretrain_args(tiny_data, run, "--no-prefect", overrides=TWO_ROUNDS + ["priors.momentum=0.3"])
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert "priors.momentum" in result.output and "--force" in result.output
    assert "Traceback" not in result.output


def test_killed_during_mining_resumes_only_missing_shards(
    reference_run: tuple[Path, dict], tiny_data: Path, tmp_path: Path, cli_process
) -> None:
    from joindet.priors import PriorStore

    run = tmp_path / "run"
    staging = run / "priors" / "_staging" / "v0001" / "mine"
    flow = cli_process(pretrain_args(tiny_data, run, "--no-prefect"))
    assert flow.wait_for(lambda: any(staging.glob("shard-*.json")), timeout=180), flow.finish(5)
    flow.kill_group()
    done = sorted(PriorStore(run).done_shards(1))
    assert 1 <= len(done) < 4 and not PriorStore(run).has_version(1), f"kill landed outside mining: {done}"

    report = run_cli(
        ["flow", "resume", str(run), "--no-prefect", "--quiet", "--json", "--threads", "1"], tmp_path / "home-resume"
    )
    v1 = report["versions"][1]
    assert v1["reused"] == done
    assert v1["mined"] == [s for s in range(4) if s not in done]
    assert assert_same_priors(run, reference_run[0]) == [0, 1, 2]


def test_killed_during_training_resumes_from_the_last_checkpoint(
    reference_run: tuple[Path, dict], tiny_data: Path, tmp_path: Path, cli_process
) -> None:
    run = tmp_path / "run"
    ckpt = run / "checkpoints"
    flow = cli_process(pretrain_args(tiny_data, run, "--no-prefect"))
    in_epoch_1 = lambda: (run / "priors" / "v0001" / "manifest.json").exists() and not (ckpt / "epoch-0001.pt").exists()  # noqa: E731
    assert flow.wait_for(in_epoch_1, timeout=180), flow.finish(5)
    flow.kill_group()
    assert (ckpt / "epoch-0000.pt").exists() and not (ckpt / "epoch-0001.pt").exists()
    first = _sha(ckpt / "epoch-0000.pt")

    report = run_cli(["flow", "resume", str(run), "--no-prefect", "--quiet", "--json"], tmp_path / "home-resume")
    assert report["train_skipped"] == [1]
    assert [v["committed_now"] for v in report["versions"]] == [False, False, True]
    assert _sha(ckpt / "epoch-0000.pt") == first  # epoch 0 was not trained again
    assert assert_same_priors(run, reference_run[0]) == [0, 1, 2]


def test_a_second_flow_on_the_same_run_is_refused(tiny_data: Path, tmp_path: Path, cli_process) -> None:
    import json

    run = tmp_path / "run"
    lock = run / "priors" / ".writer.lock"
    flow = cli_process(pretrain_args(tiny_data, run, "--no-prefect"))

    def held() -> bool:
        try:
            return json.loads(lock.read_text() or "{}").get("pid") == flow.proc.pid
        except (OSError, ValueError):
            return False

    assert flow.wait_for(held, timeout=120), flow.finish(5)
    second = CliRunner().invoke(main, pretrain_args(tiny_data, run, "--no-prefect"))
    flow.kill_group()
    assert second.exit_code == 1
    assert f"pid {flow.proc.pid}" in second.output and "host" in second.output


def test_a_corrupt_image_is_quarantined_and_reported(tiny_data: Path, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    (data / "train" / "000003.jpg").write_bytes(b"this is not a jpeg")
    args = pretrain_args(
        data, tmp_path / "run", "--no-prefect", overrides=TWO_ROUNDS[:1] + ["schedule.epochs=2"] + TWO_ROUNDS[1:]
    )
    args.remove("--json")
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    images = pq.read_table(tmp_path / "run" / "images.parquet").to_pylist()
    bad_id = next(r["image_id"] for r in images if r["file"].endswith("000003.jpg"))
    quarantine = pq.read_table(tmp_path / "run" / "quarantine.parquet").to_pylist()
    assert [q["image_id"] for q in quarantine] == [bad_id] and quarantine[0]["reason"]
    assert f"quarantined images (1): {bad_id}" in result.output
    assert "joindet runs status" in result.output


def test_dask_workers_mine_the_same_version_as_threads(reference_run: tuple[Path, dict], tmp_path: Path) -> None:
    from joindet.priors import PriorStore

    run = tmp_path / "run"
    shutil.copytree(reference_run[0], run)
    for v in ("v0001", "v0002"):
        shutil.rmtree(run / "priors" / v)
    shutil.rmtree(run / "priors" / "_staging", ignore_errors=True)
    # Same checkpoint (epoch 0), same parent (v0): only the runner differs.
    mined = CliRunner().invoke(main, ["stage", "run", "mine", "--run", str(run), "--version", "1", "--json"])
    assert mined.exit_code == 0, mined.output
    smooth = CliRunner().invoke(main, ["stage", "run", "smooth", "--run", str(run), "--version", "1", "--json"])
    assert smooth.exit_code == 0, smooth.output
    dask, threads = PriorStore(reference_run[0]), PriorStore(run)
    assert dask.manifest(1).kinds == threads.manifest(1).kinds
    for kind in dask.manifest(1).kinds:
        assert threads.read(1, kind).equals(dask.read(1, kind)), kind
