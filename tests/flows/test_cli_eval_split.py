"""``joindet eval proposals`` on a coco-json run (one annotations file, no val split): it scores
the split the run has, and an explicit other --split is one line naming the split that exists."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner

from joindet.flows.cli import main


@pytest.fixture()
def coco_json_run(tiny_data: Path, tmp_path: Path):
    from joindet.detector import build_model
    from joindet.pipeline.checkpoints import save_checkpoint
    from joindet.pipeline.config import make_config
    from joindet.pipeline.run_dir import RunDir

    ann = tiny_data / "annotations" / "instances_train.json"
    cfg = make_config("tiny", "coco-json", [f"data.annotations={ann}", f"data.root={tiny_data / 'train'}"])
    run = RunDir.create(tmp_path / "run", cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(cfg.model)
    save_checkpoint(run.checkpoint_path(0), model=model, epoch=0, config_digest=cfg.digest())
    return run


def test_coco_json_run_evaluates_on_the_split_it_has(coco_json_run) -> None:
    res = CliRunner().invoke(main, ["eval", "proposals", str(coco_json_run.path), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output[res.output.index("{") :])
    assert out["split"] == "train" and out["images"] > 0 and "AR@100" in out["metrics"]


def test_coco_json_run_names_the_split_that_exists(coco_json_run) -> None:
    res = CliRunner().invoke(main, ["eval", "proposals", str(coco_json_run.path), "--split", "val"])
    assert res.exit_code == 1
    assert "one annotations file" in res.output and "--split train" in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_report_of_a_coco_json_run_scores_proposals_on_its_split(coco_json_run) -> None:
    res = CliRunner().invoke(main, ["report", str(coco_json_run.path), "--images", "0"])
    assert res.exit_code == 0, res.output
    assert "proposals not evaluated" not in res.output
    assert (coco_json_run.path / "metrics" / "proposals-epoch-0000-train.json").is_file()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:DetectorConfig.backbone_weights is not set")  # the baseline: no init
@pytest.mark.parametrize(
    "fraction, said",
    [
        ("1.0", "AP is scored on the images it trains on (no held-out set"),
        ("0.5", "AP is scored on the {n} images of it not drawn into the fraction (held out)"),
    ],
)
def test_finetune_on_coco_json_evaluates_on_the_split_it_has(
    tiny_data: Path, tmp_path: Path, fraction: str, said: str
) -> None:
    """One annotations file, no val split: the finetune trains and scores AP on that file (on the
    images a low-data fraction left out, when it leaves some), and says so before training,
    instead of failing after it for want of a val split."""
    ann = tiny_data / "annotations" / "instances_train.json"
    ft = tmp_path / "ft"
    args = ["flow", "run", "finetune", "--dataset", "coco-json", "--data-root", str(tiny_data / "train")]
    args += ["--annotations", str(ann), "--run-dir", str(ft), "--set", f"finetune.fraction={fraction}"]
    args += ["--set", "finetune.epochs=1", "--set", "train.num_workers=0", "--no-prefect"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    trained = json.loads((ft / "finetune.json").read_text())["num_train_images"]
    n = len(json.loads(ann.read_text())["images"]) - trained
    assert said.format(n=n) in " ".join(res.output.split())  # the log wraps long lines
    assert 0 < n < trained * 2 if fraction == "0.5" else n == 0
    record = json.loads((ft / "metrics" / "finetune-epoch-0000.json").read_text())
    assert record["eval_split"] == "train" and record["metrics"]["AP"] is not None
    assert record["eval_images"] == (n if fraction == "0.5" else trained)
