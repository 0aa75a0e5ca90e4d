"""build_report on a real tiny run: tables present, metrics evaluated, every embedded image decodes."""

from __future__ import annotations

import base64
import json
import re
import shutil
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from joindet.pipeline.report import build_report
from joindet.pipeline.report.build import AR_TOLERANCE, judge
from joindet.pipeline.run_dir import RunDir

from .report_fixtures import tiny_run

pytestmark = pytest.mark.filterwarnings("ignore:DetectorConfig.backbone_weights is not set")
_DATA_URI = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> RunDir:
    return tiny_run(tmp_path_factory.mktemp("report"))


@pytest.fixture(scope="module")
def built(run: RunDir, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("out") / "page.html"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return build_report(run, out, evaluate=True, proposals=True, num_images=2)


def _decode(png: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    assert img is not None, "an embedded image does not decode as PNG"
    return img


def test_every_embedded_image_decodes_and_matches_the_png_beside_it(built) -> None:
    page = built.html.read_text(encoding="utf-8")
    embedded = [base64.b64decode(m) for m in _DATA_URI.findall(page)]
    assert set(built.figures) == {"versions", "metrics", "training", "evolution"}
    assert len(embedded) == len(built.figures)
    for png in embedded:
        img = _decode(png)
        assert img.shape[0] > 50 and img.shape[1] > 50
    beside = {p.read_bytes() for p in built.figures.values()}
    assert beside == set(embedded)
    for p in built.figures.values():
        assert p.parent == built.html.parent and p.name.startswith("page-")
    assert "http://" not in page and "https://" not in page, "the page must open offline"


def test_tables_show_versions_metrics_training_and_run_identity(run: RunDir, built) -> None:
    page = built.html.read_text(encoding="utf-8")
    for section in ("run", "versions", "metrics", "training", "evolution", "timings", "quarantine", "config"):
        assert f"id='{section}'" in page
    assert run.info["dataset"]["fingerprint"] in page and run.info["config_digest"] in page
    assert page.count("<table") >= 6
    assert ">v0000<" in page and ">v0001<" in page
    # every loss the training log names has a column, and every epoch a row
    log = [json.loads(line) for line in (run.path / "logs" / "train.jsonl").read_text().splitlines()]
    assert len(log) == 2
    for name in log[0]["losses"]:
        assert f"<th>{name}</th>" in page
    assert "priors v0001" in page and "detector epoch 1" in page
    assert "train epoch 1" in page and "init_priors v0000" in page


def test_missing_metrics_are_evaluated_for_every_kind(run: RunDir, built) -> None:
    metrics = json.loads((run.path / "metrics" / "priors.json").read_text())
    for v in run.store.versions():
        assert set(metrics[f"v{v:04d}"]) == set(run.store.manifest(v).kinds)
    assert (run.path / "metrics" / "proposals-epoch-0001-val.json").exists()
    d = built.data
    assert [v.version for v in d.versions] == [0, 1]
    assert d.versions[1].churn is not None and set(d.versions[1].churn) >= {"matched", "added", "removed", "mean_iou"}
    questions = [q for q, *_ in built.verdict]
    assert "v0001" in questions[0] and "train split" in questions[0]
    assert "proposals" in questions[1] and "(val split)" in questions[1] and "100 random crops" in questions[1]
    scale = [row for row in built.verdict if row[0].startswith("for scale")]
    assert {q.split("(")[1].split(" split")[0] for q, *_ in scale} == {"train", "val"}
    for _, before, after, holds in scale:
        assert before is None and holds is None and 0.0 <= after <= 1.0
    for _, before, after, holds in built.verdict[:2]:
        assert isinstance(before, float) and isinstance(after, float)
        assert holds == judge(before, after, AR_TOLERANCE)
    flags = [row for row in built.verdict if row[0].startswith("flag:")]
    assert all(row[2] < row[1] and row[3] is False for row in flags)


def test_report_of_a_run_without_log_or_metrics_still_builds(run: RunDir, tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    shutil.copytree(run.path, bare, ignore=shutil.ignore_patterns("logs", "metrics", "checkpoints"))
    result = build_report(RunDir.open(bare), tmp_path / "r.html", evaluate=False, num_images=1)
    page = result.html.read_text(encoding="utf-8")
    assert "No training log" in page and "No metrics" in page
    assert "training" not in result.figures and "metrics" not in result.figures
    assert result.verdict == []
    assert not (bare / "metrics" / "priors.json").exists(), "evaluate=False must not write metrics"
