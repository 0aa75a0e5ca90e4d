"""``joindet report``: writes the page and PNGs, --json output, clear one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from joindet.flows.cli_report import report_cmd
from joindet.pipeline.config import make_config
from joindet.pipeline.data import generate_synthetic, open_dataset
from joindet.pipeline.run_dir import RunDir
from joindet.priors import BoxSet


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> RunDir:
    """A run with two committed versions (random boxes) and no training: no model is needed."""
    base = tmp_path_factory.mktemp("cli-report")
    generate_synthetic(base / "data", 4, 64, 0, 2, "jpg")
    cfg = make_config("tiny", "synthetic", [f"data.root={base / 'data'}"])
    run = RunDir.create(base / "run", cfg, dataset=open_dataset("synthetic", root=base / "data"))
    rng = np.random.default_rng(0)
    ids = np.repeat(run.image_ids(), 3)
    for v in (0, 2):
        xy = rng.uniform(0, 0.5, (len(ids), 2))
        run.store.commit(
            v,
            {"smoothed": BoxSet.from_arrays(ids, np.hstack([xy, xy + 0.3]), rng.uniform(0.1, 1, len(ids)))},
            parent=None if v == 0 else 0,
        )
    return run


def test_report_writes_page_and_figures_with_json_output(run: RunDir, tmp_path: Path) -> None:
    out = tmp_path / "sub" / "rep.html"
    res = CliRunner().invoke(report_cmd, [str(run.path), "-o", str(out), "--json", "--images", "1"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert info["html"] == str(out) and out.is_file()
    assert set(info["figures"]) == {"versions", "metrics", "evolution"}  # no training log: no curves
    assert all(Path(p).is_file() for p in info["figures"].values())
    # "flag" rows name versions below the 100-random-crop reference (the 2-epoch run has some)
    verdict = [v for v in info["verdict"] if v["question"].split(":")[0] != "flag"]
    assert [v["question"].split(":")[0] for v in verdict] == [
        "AR@100 of smoothed priors",
        "for scale",
        "for scale",
    ]
    assert ["30 random" in verdict[1]["question"], "100 random" in verdict[2]["question"]] == [
        True,
        True,
    ]
    # the priors were scored against the synthetic ground truth on the way
    assert set(json.loads((run.path / "metrics" / "priors.json").read_text())) == {"v0000", "v0002", "sample"}


def test_report_default_location_and_plain_output(run: RunDir) -> None:
    res = CliRunner().invoke(report_cmd, [str(run.path), "--no-eval", "--images", "0"])
    assert res.exit_code == 0, res.output
    assert (run.path / "report" / "report.html").is_file()
    assert res.output.strip().splitlines()[-1].startswith(f"report: {run.path / 'report' / 'report.html'}")


def test_report_of_a_missing_run_is_one_clear_line(tmp_path: Path) -> None:
    res = CliRunner().invoke(report_cmd, [str(tmp_path / "nope")])
    assert res.exit_code == 1
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and "does not exist" in lines[0] and "Traceback" not in res.output
